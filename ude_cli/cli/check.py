"""``ude check CONFIG...``: validate configs and data, simulate the initial guess; no fitting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .common import Command, error_record, fail, json_option, print_json, warn


def register(app: typer.Typer) -> None:
    app.command("check", cls=Command, short_help="Validate configs and their data; simulate the initial guess.", help=(
        "Validate each CONFIG and its data in one pass (every problem on its own line) and simulate the "
        "initial guess once, without fitting; say for each learned parameter whether a network can imitate it "
        "(docs/identifiability.md). --print shows the resolved config with every default."))(check_command)


def check_command(
    configs: list[Path] = typer.Argument(..., metavar="CONFIG", help="YAML config file(s).", show_default=False),
    print_config: bool = typer.Option(False, "--print", help="Print the resolved config (YAML) with all defaults."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    json_out: bool = json_option("per config: status, counts, warnings, structural check, error; with --print the "
                                       "resolved config"),
) -> None:
    from ..api import check
    from ..errors import UdeError

    first_failure = None
    records = []
    import contextlib

    from ..sources import load_any

    for path in configs:  # every config is checked; the exit code is that of the first failure
        try:
            with contextlib.ExitStack() as stack:  # a PEtab problem is translated into a temporary folder
                cfg, _ = load_any(path, stack)
                problem = check(cfg)
            if cfg.sweep:
                from ..batch.sweep import expand

                expand(cfg)  # every point of the grid is a valid config
        except UdeError as exc:
            records.append({"config": str(path), "status": "failed", "error": error_record(exc)})
            try:
                fail(exc)
            except typer.Exit as code:
                first_failure = first_failure or code
            continue
        ds = problem.dataset
        n_obs = sum(int((e.train & e.observed).sum()) for e in ds.experiments)
        n_val = sum(int((~e.train & e.observed).sum()) for e in ds.experiments)
        if not quiet:
            for w in problem.warnings:
                warn(w)
            if not json_out:
                typer.echo(f"{path}: ok ({_count(len(problem.states), 'state')}, "
                           f"{_count(len(problem.parameters), 'parameter')}, "
                           f"{_count(len(problem.networks), 'network')}; "
                           f"{_count(len(ds.experiments), 'experiment')}, {_count(n_obs, 'training time point')}"
                           + (f", {_count(n_val, 'validation time point')})" if n_val else ")"))
                if problem.events:
                    from ..fitting.events import summary

                    typer.echo(f"  {summary(problem)}")
                if problem.settled is not None:
                    from .fit import preequilibration_line

                    typer.echo(f"  {preequilibration_line(problem.settled, len(ds.experiments), ' at the initial guess')}")
                for finding in problem.structural or []:  # the flagged ones are among the warnings above
                    if not finding.flagged:
                        typer.echo(f"  structural check: {finding.line}")
        record: dict[str, Any] = {"config": str(path), "status": "ok", "states": list(problem.states),
                        "parameters": list(problem.parameters), "networks": list(problem.networks),
                        "experiments": len(ds.experiments), "training_time_points": n_obs,
                        "validation_time_points": n_val, "warnings": list(problem.warnings),
                        "structural": [f.to_json() for f in problem.structural or []],
                        **({"preequilibration": problem.settled} if problem.settled is not None else {}),
                        **({"events": [{"at": list(e.times), "set": {s: x.text for s, x in e.assignments.items()},
                                        "experiments": None if e.experiments is None else list(e.experiments)}
                                       for e in problem.events]} if problem.events else {}),
                        **({"resolved": cfg.resolved()} if print_config else {})}
        records.append(record)
        if print_config and not json_out:
            import yaml

            from ..likelihood.noise import describe_observation_model

            typer.echo(yaml.safe_dump(cfg.resolved(), sort_keys=False)
                       + "".join(f"# {line}\n" for line in ["the observation and noise model, as resolved:",
                                                              *describe_observation_model(problem)]))
    if json_out:
        print_json({"status": "ok" if first_failure is None else "failed", "configs": records})
    if first_failure is not None:
        raise first_failure


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
