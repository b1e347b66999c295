"""A ``ude`` config or fitted run as a PEtab SciML problem (PEtab v2 + the ``sciml`` extension), which
:mod:`.convert` reads back to the same log-likelihood.

What is written, from the resolved problem and the model built from it (a config: its starting values and
the networks' initial weights from its seed; a run: the fitted values of its best start):

- ``model.xml``: SBML L3V2, one species per state (concentration in a compartment of size 1) changed by a
  rate rule with the state's right-hand side; parameters and constants as SBML parameters; initial values
  as numbers or initial assignments (a formula, a learned initial value's parameter);
- ``parameters.tsv``: every parameter with ``parameterScale`` (``log`` for a positive one), bounds, its value
  as ``nominalValue`` and ``estimate``; the networks' weights as one row per network (``array``), with rows
  for single frozen arrays;
- ``observables.tsv``: formula, noise formula (for proportional and combined normal error, ``sigma * abs(y)``
  and ``sigma + sigma_rel * abs(y)`` of the observable's formula ``y``), ``noiseDistribution`` (v2: ``normal``,
  ``laplace``, ``log-normal``, ``log-laplace``; v1: ``normal``, ``laplace`` and ``observableTransformation``
  ``log`` for the log ones; for counts in v2,
  ``poisson`` and ``negative-binomial`` of the v2 draft's pull request 654, not in a released PEtab);
- ``experiments.tsv``, ``conditions.tsv``: an experiment per ``ude`` experiment, starting at time 0 (``ude``'s
  ``t0`` is subtracted from every time; where ``t`` appears in a formula it becomes ``time + t0``);
  per-experiment numbers (initial values from the data or a column, constants read from columns) as
  condition targets;
- ``measurements.tsv``: every observed training cell (a validation window's cells go to
  ``measurements_validation.tsv``, outside the problem, as they are outside ``ude``'s likelihood);
- networks: ``network_NET.yaml`` (Linear layers, the forward graph), ``networks.hdf5`` (PyTorch layout; an input
  standardisation and output scaling (``normalize``) folded into the first and last layers),
  ``mapping.tsv`` and ``hybridization.tsv`` (inputs from states, parameters or constants; outputs into the
  equations through an SBML parameter each, in observable formulas by their mapping id);
- ``export.json``: the source, its log-likelihood, the re-imported one, and how the loss was translated.

A config without a noise model (``training.loss`` mse / scaled / log) has as its likelihood the normal
(log-normal for ``log``) one with the standard deviation at its maximum-likelihood value
(:mod:`ude_cli.likelihood.objective`): it is written as a normal noise model with one estimated ``sigma``
(times each observable's spread for ``scaled``) whose nominal value is that maximum, so the likelihood at
the nominal values is the same number and a fit of ``sigma`` reaches the same profile.

What PEtab cannot say is refused with one line naming the config field (exit code 3) before anything is
written. Everything is written into a temporary folder, re-imported and evaluated there, and moved into
place only then.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, RunDirError
from ..fitting.events import schedule
from .writer import formula, network_yaml, number, write_hdf5, write_sbml, write_tsv

#: activations PEtab SciML (and :mod:`.sciml`) has; ``rbf`` is written as mul/neg/exp
EXPORTABLE_ACTIVATIONS = ("tanh", "relu", "softplus", "sigmoid", "silu", "rbf")


@dataclass
class Exported:
    """What :func:`export` wrote and measured."""

    problem: Path  # the problem YAML
    source: str
    llh_source: float  # the source's log-likelihood (ude's own, at the evaluation tolerances)
    llh_exported: float | None  # the written problem's, re-imported by ude import / ude evaluate
    rtol: float = 0.0  # the tolerances both were computed at
    atol: float = 0.0
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def difference(self) -> float | None:
        return None if self.llh_exported is None else abs(self.llh_exported - self.llh_source)


def _identifier(text: str, taken: set[str]) -> str:
    """A PEtab / SBML id (letters, digits, underscores; not starting with a digit) not in ``taken``."""
    base = re.sub(r"\W", "_", str(text), flags=re.ASCII) or "x"
    if base[0].isdigit():
        base = f"e{base}"
    out = base
    while out in taken:
        out += "_"
    taken.add(out)
    return out


def _load(source: Path):
    """(label, config, problem, model, start) of a config file or a run directory, at evaluation tolerances."""
    import torch

    from ..config import load_config
    from ..fitting.model import UDEModel
    from ..problem import resolve
    from ..runs.load import read_json
    from ..runs.rundir import RUN_FILE
    from .evaluate import ATOL, MAX_STEPS, RTOL, is_petab

    state, n_starts, start = None, 1, 0
    if source.is_dir():
        if not (source / RUN_FILE).is_file():
            raise RunDirError("neither a config file nor a run directory (no run.json)", where=str(source))
        info = read_json(source / RUN_FILE, "run.json")
        if info.get("status") != "complete":
            raise RunDirError(f"the run is {info.get('status', 'incomplete')}, not complete", where=str(source))
        metrics = read_json(source / "metrics.json", "metrics.json")
        n_starts, start = int(metrics.get("starts", 1)), int(metrics.get("best_start", 0))
        cfg = load_config(source / "inputs" / "config.yaml")
        # the fitted weights are in model.pt: a network's starting weights file is not needed (and runs written
        # before inputs/ copied it have none)
        cfg = cfg.model_copy(update={"networks": {n: spec.model_copy(update={"weights": None})
                                                  for n, spec in cfg.networks.items()}})
        try:
            state = torch.load(source / "model.pt", weights_only=True)
        except FileNotFoundError:
            raise RunDirError("no model.pt in the run directory", where=str(source)) from None
    elif source.is_file():
        if is_petab(source):
            raise ConfigError("this is a PEtab problem already; export takes a ude config or a run directory",
                              where=str(source))
        cfg = load_config(source)
    else:
        raise ConfigError("file not found", where=str(source))
    solver = cfg.solver.model_copy(update={"rtol": min(RTOL, cfg.solver.rtol), "atol": min(ATOL, cfg.solver.atol),
                                           "max_steps": max(MAX_STEPS, cfg.solver.max_steps)})
    cfg = cfg.model_copy(update={"solver": solver})
    problem = resolve(cfg)
    torch.set_num_threads(cfg.training.threads or 1)
    model = UDEModel(problem, n_starts=n_starts)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise RunDirError(f"model.pt does not match the run's config: {str(exc).splitlines()[0]}",
                              where=str(source)) from None
    model.eval()
    return cfg.label, cfg, problem, model, start


#: ude's count noise models, and their names in PEtab v2's draft (pull request 654, not in a released PEtab)
COUNTS = {"poisson": "poisson", "negative_binomial": "negative-binomial"}

#: words with a meaning of their own in SBML's L3 formulas (case-insensitive for inf, nan) and PEtab's
RESERVED = ("time", "inf", "infinity", "nan", "notanumber", "true", "false", "avogadro", "exponentiale")


def _refusals(problem, label: str, version: int) -> None:
    """One line for the first feature PEtab cannot express (or :mod:`.convert` cannot read back)."""
    for kind, names in (("model.states", problem.states), ("model.parameters", problem.parameters),
                        ("model.constants", problem.constants), ("observables", problem.observables)):
        for name in names:
            if name.lower() in RESERVED:
                raise ConfigError(f"the name {name!r} means something else in SBML's and PEtab's formulas; rename it "
                                  f"to export", where=f"{label}: {kind}.{name}")
    for name, o in problem.observables.items():
        if o.noise is None:
            continue
        if o.noise.distribution in COUNTS and version == 1:
            raise ConfigError(f"noise distribution {o.noise.distribution}: PEtab v1's noise models are normal and "
                              f"Laplace; v2's draft has count distributions: export it with --petab-version 2",
                              where=f"{label}: observables.{name}.noise.distribution")
        if o.noise.distribution not in ("normal", "lognormal", "laplace", "loglaplace", *COUNTS):
            raise ConfigError(f"noise distribution {o.noise.distribution}: PEtab has no such noise model",
                              where=f"{label}: observables.{name}.noise.distribution")
    for state, init in problem.initial.items():
        if init.expression is not None and (init.expression.network_refs
                                            or set(init.expression.names) & set(problem.networks)):
            raise ConfigError("an initial value set by a network is not exported yet",
                              where=f"{label}: model.initial.{state}")
    if problem.preequilibration is not None:
        for s in problem.preequilibration.reset:
            init = problem.initial[s]
            if init.learn or init.source in ("formula", "observed"):
                why = {"formula": "a formula", "observed": "the first observation"}.get(init.source, "learned")
                raise ConfigError(f"state {s}: PEtab resets a state after pre-equilibration to a number of the "
                                  f"condition table; its initial value is {why}: not exported yet",
                                  where=f"{label}: model.preequilibration.reset")
    for i, event in enumerate(problem.events):
        if version == 1:
            raise ConfigError("jumps of states at given times are PEtab v2's periods, which v1 does not have: export "
                              "with --petab-version 2", where=f"{label}: model.events")
        if event.trigger is not None:
            raise ConfigError("a jump when a condition becomes true is not exported yet (it would be an SBML event "
                              "with a trigger)", where=f"{label}: model.events[{i}].when")
        if any("t" in e.names for e in event.assignments.values()):
            raise ConfigError("a jump's formula that uses t is not exported yet", where=f"{label}: model.events[{i}].set")
        for e in problem.dataset.experiments:
            start = problem.t0 if problem.t0 is not None else float(e.t[0])
            times = event.times_in(e)
            seen = sorted(set(times) & {float(t) for t in e.t[e.observed]}) if event.before else []
            if seen:
                raise ConfigError(f"an observation at t = {seen[0]:g} (experiment {e.name!r}) sees the states before "
                                  f"the jump there (observed: before), and PEtab's measurement at a period's start "
                                  f"sees its condition: not exported", where=f"{label}: model.events[{i}].observed")
            if times and times[0] == start:
                # the first period's condition sets the states after it, with the states read written as their
                # initial numbers (a dose at t0 into a compartment that starts empty): numbers only
                unfit = sorted(s for x in event.assignments.values() for s in x.names & set(problem.states)
                               if problem.initial[s].learn or problem.initial[s].source == "formula")
                if problem.preequilibration is not None or unfit:
                    why = ("the experiments settle first (model.preequilibration)" if problem.preequilibration
                           is not None else f"it reads {unfit[0]}, whose initial value is "
                           + ("learned" if problem.initial[unfit[0]].learn else "a formula"))
                    raise ConfigError(f"a jump at the start time ({start:g}, experiment {e.name!r}): PEtab v2's "
                                      f"first period is applied before the model's initial values and may not read a "
                                      f"state, and {why}; give the initial value after the jump instead "
                                      f"(model.initial)", where=f"{label}: model.events[{i}].{event.field}")
    for name, p in problem.parameters.items():
        if p.prior is not None:
            raise ConfigError("a prior is not exported yet (PEtab's priorDistribution columns are not written): the "
                              "exported problem would be the likelihood alone", where=f"{label}: model.parameters.{name}.prior")
    for name, spec in problem.networks.items():
        if spec.priors:
            raise ConfigError("network priors are not exported yet", where=f"{label}: networks.{name}.priors")
        if getattr(spec, "file", None) is not None:
            raise ConfigError("a network given by a PEtab SciML YAML file (a graph network) is not exported yet: "
                              "only ude's own networks (hidden, activation)", where=f"{label}: networks.{name}.file")
        if spec.activation not in EXPORTABLE_ACTIVATIONS:
            why = ("PEtab SciML's gelu is the tanh approximation, ude's is exact" if spec.activation == "gelu"
                   else "PEtab SciML has no such activation")
            raise ConfigError(f"activation {spec.activation}: {why}", where=f"{label}: networks.{name}.activation")
        if "t" in spec.inputs:
            raise ConfigError("time as a network input is an expression input in PEtab SciML, which ude import "
                              "cannot read back yet", where=f"{label}: networks.{name}.inputs")


def export(source: str | Path, out: str | Path, *, overwrite: bool = False, check: bool = True,
           version: int = 2) -> Exported:
    """Write the config or run directory ``source`` as a PEtab SciML problem into the folder ``out``
    (``out/problem.yaml`` and the files it names); ``version`` 1: a PEtab v1 problem (no networks). With
    ``check``, the written problem is re-imported and evaluated before it is moved into place. Nothing is
    written when the source cannot be exported."""
    import torch

    from ..likelihood.objective import Objective

    source = Path(source)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise RunDirError("exists and is not empty (give --overwrite to replace it)", where=str(target))
    if version not in (1, 2):
        raise ConfigError(f"PEtab version {version}: expected 1 or 2", where="--petab-version")
    label, cfg, problem, model, start = _load(source)
    _refusals(problem, label, version)
    if version == 1 and problem.networks:
        raise ConfigError("PEtab v1 has no networks (the SciML extension is PEtab v2's): export it as v2",
                          where=f"{label}: networks.{next(iter(problem.networks))}")
    # the likelihood as `ude evaluate` computes it: every value held (no profiled noise parameter)
    declared = problem.noise_parameters
    problem.noise_parameters = {n: dataclasses.replace(p, fixed=True) for n, p in declared.items()}
    objective = Objective(model)  # reads which noise parameters are profiled here, once
    problem.noise_parameters = declared
    with torch.no_grad():
        sols = model()
        llh_source = -float(objective.nll(sols, "train")[start])
        y0 = model.initial.unsettled()[start].cpu().numpy()  # (B, n): before any pre-equilibration
        values = {n: np.asarray(v)[start] for n, v in model.parameter_values().items()}
        noise_values = {n: float(v[start]) for n, v in model.noise.numpy().items()}
        ml_sigma = None if objective.likelihood else objective.noise_estimates(sols, start)["sigma"]
    if not source.is_dir():  # a config: its starting values exactly (not through the bounds' transform and back)
        values = {n: np.full(np.shape(values[n]), p.init) for n, p in problem.parameters.items()}
        noise_values.update({n: float(p.init) for n, p in declared.items()})
        for j in model.initial.learned:
            y0[:, j] = model.initial.base[:, j].cpu().numpy()
    if not math.isfinite(llh_source):
        raise ConfigError(f"the log-likelihood of the source is {llh_source}: nothing to export", where=label)
    with tempfile.TemporaryDirectory(prefix=".ude-export-",
                                     dir=target.parent if target.parent.exists() else None) as tmp:
        staging = Path(tmp) / "out"
        staging.mkdir()
        result = _write(staging, label, cfg, problem, model, objective, start, y0, values, noise_values, ml_sigma,
                        version)
        result.source, result.llh_source = str(source), llh_source
        result.rtol, result.atol = cfg.solver.rtol, cfg.solver.atol
        if check:
            from .evaluate import evaluate

            try:
                # at the source's tolerances (PEtab has no solver settings: robertson's atol 1e-16 matters)
                result.llh_exported = evaluate(staging / "problem.yaml", rtol=cfg.solver.rtol,
                                               atol=cfg.solver.atol).llh
            except ConfigError as exc:
                raise ConfigError(f"the exported problem does not import back: {exc.lines()[0]}", where=label) from None
        (staging / "export.json").write_text(json.dumps({
            "source": str(source), "llh_source": llh_source, "llh_reimported": result.llh_exported,
            "method": "log-likelihood with every normalising constant at the nominal values: the source's by "
                      "ude's own objective, the export's by `ude evaluate problem.yaml --rtol RTOL --atol ATOL` "
                      "(re-imported), both with the ODE solved at these tolerances",
            "rtol": cfg.solver.rtol, "atol": cfg.solver.atol,
            "notes": result.notes}, indent=1) + "\n")
        result.files.append("export.json")
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
    result.problem = target / "problem.yaml"
    return result


def _write(folder: Path, label: str, cfg, problem, model, objective, start: int, y0: np.ndarray,
           values: dict, noise_values: dict, ml_sigma: float | None, version: int = 2) -> Exported:
    import yaml

    ds = problem.dataset
    experiments = ds.experiments
    notes: list[str] = []
    taken: set[str] = {*problem.states, *problem.parameters, *problem.constants, *problem.networks,
                       *problem.noise_parameters, "time", "pi"}
    compartment = _identifier("compartment", taken)

    # -- time: PEtab experiments start at 0; ude's start at t0 ------------------------------------------------
    t0 = [problem.t0 if problem.t0 is not None else float(e.t[0]) for e in experiments]
    uses_time = any("t" in e.names for e in problem.equations.values()) or any(
        "t" in o.expression.names for o in problem.observables.values()) or any(
        "t" in e.names for e in problem.noise_formulas.values())
    uses_t0 = any(i.expression is not None and "t0" in i.expression.names for i in problem.initial.values())
    t0_id = None
    if (uses_time and any(t != 0 for t in t0)) or uses_t0:
        t0_id = _identifier("t_offset", taken)  # not `t0`: ude's initial formulas read that as the start time
    time_text = f"(time + {t0_id})" if (uses_time and t0_id is not None) else "time"
    if any(t != 0 for t in t0):
        notes.append(f"times shifted by t0 (PEtab experiments start at 0): {', '.join(sorted({number(t) for t in t0}))}")

    # -- networks: inputs, outputs, weights ---------------------------------------------------------------------
    out_param: dict[tuple[str, int], str] = {}  # (net, i) -> SBML parameter set by the output (equations)
    out_id: dict[tuple[str, int], str] = {}  # (net, i) -> mapping id of the output (observable formulas)
    mapping_rows: list[list] = []
    hybrid_rows: list[list] = []
    network_rows: list[list] = []
    arrays: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    net_files: dict[str, dict] = {}
    used_in_rhs = {ref for e in problem.equations.values() for ref in _refs(e, problem.networks)}
    for name, spec in problem.networks.items():
        net = model.rhs.networks[name]
        layers = [(net.weights[k][start].detach().cpu().numpy().T.copy(),
                   net.biases[k][start, 0].detach().cpu().numpy().copy()) for k in range(len(net.weights))]
        if not net.identity_in:  # (x - shift)/scale into the first layer
            shift, scale = net.in_shift.cpu().numpy(), net.in_scale.cpu().numpy()
            w, b = layers[0]
            layers[0] = (w / scale[None, :], b - (w / scale[None, :]) @ shift)
            notes.append(f"network {name}: the input standardisation folded into the first layer's weights")
        if not net.identity_out:  # outputs * out_scale into the last layer
            c = net.out_scale.cpu().numpy()
            w, b = layers[-1]
            layers[-1] = (w * c[:, None], b * c)
            notes.append(f"network {name}: the output scaling folded into the last layer's weights")
        arrays[name] = layers
        sizes = [layers[0][0].shape[1], *(w.shape[0] for w, _ in layers)]
        net_files[name] = network_yaml(name, sizes, spec.activation)
        for i, inp in enumerate(spec.inputs):
            pid = _identifier(f"{name}_input{i + 1}", taken)
            mapping_rows.append([pid, f"{name}.inputs[0][{i}]"])
            hybrid_rows.append([pid, inp])
        for i in range(spec.outputs):
            oid = _identifier(f"{name}_output{i + 1}", taken)
            out_id[(name, i)] = oid
            mapping_rows.append([oid, f"{name}.outputs[0][{i}]"])
            if (name, i) in used_in_rhs:
                param = _identifier(f"{name}_out{i + 1}", taken)
                out_param[(name, i)] = param
                hybrid_rows.append([param, oid])
        ps = _identifier(f"{name}_ps", taken)
        mapping_rows.append([ps, f"{name}.parameters"])
        network_rows.append([ps, "lin", -math.inf, math.inf, "array", not spec.fixed])
        if not spec.fixed:
            for array in spec.frozen:  # weight0, bias1, ...: single arrays kept as given
                part, k = ("weight", int(array[6:])) if array.startswith("weight") else ("bias", int(array[4:]))
                fid = _identifier(f"{name}_layer{k + 1}_{part}", taken)
                mapping_rows.append([fid, f"{name}.parameters[layer{k + 1}].{part}"])
                network_rows.append([fid, "lin", -math.inf, math.inf, "array", False])

    nets = {n: s.outputs for n, s in problem.networks.items()}

    def sbml(expr) -> str:
        return formula(expr.tree, style="sbml", name=lambda n: n, output=lambda n, i: out_param[(n, i)],
                       time=time_text, networks=nets)

    def petab(expr, values: dict[str, str] | None = None) -> str:
        """``expr`` in PEtab's formula language; ``values``: names written as these numbers instead."""
        given = values or {}
        return formula(expr.tree, style="petab", name=lambda n: given.get(n, n), output=lambda n, i: out_id[(n, i)],
                       time=time_text, networks=nets)

    # -- experiments and their conditions -----------------------------------------------------------------------
    exp_ids: list[str] = []
    for e in experiments:
        exp_ids.append(_identifier(e.name if len(experiments) > 1 else "experiment", taken))
    targets: dict[int, list[tuple[str, float]]] = {b: [] for b in range(len(experiments))}

    def per_experiment(sid: str, per: list[float]) -> float:
        """The SBML value of ``sid``; when it differs between experiments, a condition target each."""
        if len(set(per)) > 1:
            for b, v in enumerate(per):
                targets[b].append((sid, float(v)))
        return float(per[0])

    # -- parameters ---------------------------------------------------------------------------------------------
    sbml_parameters: dict[str, float] = {}
    parameter_rows: list[list] = []
    assignment_rules: dict[str, str] = {}
    indicators: list[str] = []  # per experiment: a constant 1 in its own experiment, 0 in the others

    def one_per_experiment(name: str, per: list[float], scale: str, lower: float, upper: float) -> str:
        """An estimated value per experiment: a parameter each, and the formula that picks the experiment's
        (``NAME_E1*in_E1 + ...``, exact: a product with 1 or 0 and a sum with zeros lose no digit)."""
        if not indicators:
            for b in range(len(experiments)):
                ind = _identifier(f"in_{exp_ids[b]}", taken)
                indicators.append(ind)
                sbml_parameters[ind] = per_experiment(ind, [1.0 if k == b else 0.0 for k in range(len(experiments))])
        terms = []
        for b, v in enumerate(per):
            pid = _identifier(f"{name}_{exp_ids[b]}", taken)
            sbml_parameters[pid] = float(v)
            parameter_rows.append([pid, scale, float(lower), float(upper), float(v), True])
            terms.append(f"({pid} * {indicators[b]})")
        return " + ".join(terms)

    for name, p in problem.parameters.items():
        v = np.asarray(values[name], dtype=float)
        lower = p.lower if p.lower is not None else (0.0 if p.positive else -math.inf)
        upper = p.upper if p.upper is not None else math.inf
        scale = "log" if p.positive else "lin"
        if p.per_experiment and (p.fixed or len(experiments) == 1):
            sbml_parameters[name] = per_experiment(name, [float(x) for x in np.ravel(v)])
            if not p.fixed:
                parameter_rows.append([name, scale, float(lower), float(upper), float(np.ravel(v)[0]), True])
            continue
        if p.per_experiment:
            assignment_rules[name] = one_per_experiment(name, [float(x) for x in np.ravel(v)], scale, lower, upper)
            continue
        value = float(v)
        sbml_parameters[name] = value
        parameter_rows.append([name, scale, float(lower), float(upper), value, not p.fixed])
    if assignment_rules:
        notes.append(f"learned per experiment: {', '.join(assignment_rules)}: a parameter per experiment "
                     f"(NAME_EXPERIMENT) and the SBML assignment rule NAME = sum of NAME_EXPERIMENT * in_EXPERIMENT, "
                     f"constants that each experiment's condition sets to 1 (its own) or 0")
    for name, c in problem.constants.items():
        if isinstance(c, str):  # read from a column: a number per experiment
            sbml_parameters[name] = per_experiment(name, [float(e.covariates[c]) for e in experiments])
        else:
            sbml_parameters[name] = float(c)
    if t0_id is not None:
        sbml_parameters[t0_id] = per_experiment(t0_id, t0)
    for param in out_param.values():
        sbml_parameters[param] = 0.0  # set by the network's output (hybridization table)

    # -- states: initial values and right-hand sides ------------------------------------------------------------
    species: dict[str, float] = {}
    initial_assignments: dict[str, str] = {}
    t0_name = t0_id or "t0"  # (t0_id is set whenever an initial formula uses t0)

    def initial_name(n: str) -> str:
        return t0_name if n == "t0" else n

    for j, s in enumerate(problem.states):
        spec = problem.initial[s]
        if spec.learn:  # a parameter of its own (one per experiment)
            scale, lower = ("log", 0.0) if spec.positive else ("lin", -math.inf)
            if len(experiments) == 1:
                pid = _identifier(f"{s}_0", taken)
                sbml_parameters[pid] = float(y0[0, j])
                parameter_rows.append([pid, scale, lower, math.inf, float(y0[0, j]), True])
                initial_assignments[s] = pid
            else:
                initial_assignments[s] = one_per_experiment(f"{s}_0", [float(x) for x in y0[:, j]], scale, lower,
                                                            math.inf)
                notes.append(f"the initial value of {s} (learned per experiment): a parameter per experiment, "
                             f"{s}_0_EXPERIMENT, picked as the per-experiment parameters are")
            species[s] = float(y0[0, j])
        elif spec.source == "formula":
            assert spec.expression is not None
            text = formula(spec.expression.tree, style="sbml", name=initial_name,
                           output=lambda n, i: out_param[(n, i)], time=time_text, networks=nets)
            initial_assignments[s] = text
            species[s] = float(y0[0, j])
        else:
            species[s] = per_experiment(s, [float(x) for x in y0[:, j]])
    rate_rules = {s: sbml(problem.equations[s]) for s in problem.states}
    write_sbml(folder / "model.xml", model_id=_identifier(cfg.run_name, set()), compartment=compartment,
               species=species, rate_rules=rate_rules, parameters=sbml_parameters,
               initial_assignments=initial_assignments, where=label, assignment_rules=assignment_rules)

    # -- observables and their noise ----------------------------------------------------------------------------
    observable_rows: list[list] = []
    obs_ids: dict[str, str] = {}
    counts: list[str] = []
    spec_loss = objective.spec
    if ml_sigma is not None:
        sigma_id = _identifier("sigma", taken)
        parameter_rows.append([sigma_id, "log", 0.0, math.inf, float(ml_sigma), True])
        what = {(False, "none"): "mse", (False, "std"): "scaled", (True, "none"): "log", (True, "std"): "log, scaled"}
        notes.append(f"training.loss {what[(bool(spec_loss.log), spec_loss.scale)]} (no noise model): "
                     f"{'log-normal' if spec_loss.log else 'normal'} noise with one estimated sigma"
                     f"{' times each observable' + chr(39) + 's spread' if spec_loss.scale == 'std' else ''}, nominal "
                     f"{number(ml_sigma)} (its maximum-likelihood value at the exported values)")
    for name, o in problem.observables.items():
        oid = _identifier(f"{name}_obs" if name in taken else name, taken)
        obs_ids[name] = oid
        if o.noise is None:
            assert ml_sigma is not None
            transformation = "log" if spec_loss.log else "lin"
            # sigma_j = c * spread_j (scaled), in the objective's layout (states or observables)
            spread = float(objective.spread[objective.columns[objective.names.index(name)]])
            noise = sigma_id if spec_loss.scale != "std" else f"({sigma_id} * {number(spread)})"
        else:
            transformation = "log" if o.noise.distribution in ("lognormal", "loglaplace") else "lin"
            parts = {}
            for role, pname in o.noise_parameters.items():
                if pname in problem.noise_formulas:
                    parts[role] = f"({petab(problem.noise_formulas[pname])})"
                    continue
                p = problem.noise_parameters[pname]
                if p.fixed:
                    parts[role] = number(noise_values[pname])
                else:
                    parts[role] = pname
                    parameter_rows.append([pname, "log", float(p.lower if p.lower is not None else 0.0),
                                           float(p.upper if p.upper is not None else math.inf),
                                           noise_values[pname], True])
            # the standard deviation sigma * |y_hat| (proportional), sigma + sigma_rel * |y_hat| (combined): a noise
            # formula of the observable's own formula, which ude import reads back as the same error model
            prediction = f"abs({petab(o.expression)})"
            if o.noise.distribution in COUNTS:
                counts.append(name)
            if o.noise.distribution == "poisson":  # the rate is the observable formula; no noise formula
                noise = ""
            elif o.noise.distribution == "negative_binomial":
                # the draft's NB(r, p) of m failures with r = the dispersion (observable formula) and
                # p = r / (r + mean) (noise formula): ude's NB of that mean and dispersion, term by term
                r = parts["dispersion"]
                observable_rows.append([oid, o.label or name, r, f"{r} / ({r} + {petab(o.expression)})", "lin",
                                        COUNTS["negative_binomial"]])
                continue
            else:
                noise = {"constant": parts["sigma"], "proportional": f"{parts['sigma']} * {prediction}",
                         "combined": f"{parts['sigma']} + {parts.get('sigma_rel')} * {prediction}"}[
                    o.noise.error if o.noise.distribution == "normal" else "constant"]
        distribution = "normal" if o.noise is None else \
            {"laplace": "laplace", "loglaplace": "laplace", **COUNTS}.get(o.noise.distribution, "normal")
        observable_rows.append([oid, o.label or name, petab(o.expression), noise, transformation, distribution])
    if counts:
        notes.append(f"observable {', '.join(counts)}: count noise written as PEtab v2's draft noiseDistribution "
                     f"({', '.join(sorted({COUNTS[problem.observables[n].noise.distribution] for n in counts}))}; "
                     f"PEtab pull request 654, not in a released PEtab: ude reads it, PEtab.jl and AMICI may not)"
                     + ("; a negative-binomial observable's formula is its dispersion r and its noise formula "
                        "p = r / (r + the prediction), as the draft defines them"
                        if any(problem.observables[n].noise.distribution == "negative_binomial" for n in counts)
                        else ""))
    head = ["observableId", "observableName", "observableFormula", "noiseFormula", "observableTransformation",
            "noiseDistribution"]
    if version == 2:  # PEtab v2 has the transformation in the distribution: log-normal, log-laplace
        head.remove("observableTransformation")
        observable_rows = [[*row[:4], f"log-{row[5]}" if row[4] == "log" else row[5]] for row in observable_rows]
    write_tsv(folder / "observables.tsv", head, observable_rows)

    # -- measurements -----------------------------------------------------------------------------------------
    rows: list[list] = []
    held_out: list[list] = []
    columns = list(ds.observable_columns)
    for b, e in enumerate(experiments):
        for i, t in enumerate(e.t):
            for name in problem.observables:
                y = e.observations[i, columns.index(name)]
                if np.isfinite(y):
                    (rows if e.train[i] else held_out).append([obs_ids[name], exp_ids[b], float(y),
                                                               float(t) - t0[b]])
    head = ["observableId", "experimentId" if version == 2 else "simulationConditionId", "measurement", "time"]
    wide = [(exp_ids[b], dict(targets[b])) for b in range(len(experiments))]  # v1's condition table, row by row
    settle_of: dict[str, str] = {}  # experiment -> its settling condition
    if problem.preequilibration is not None:
        wide, settle_of = _settling_conditions(problem, exp_ids, targets, y0, taken)
        if version == 1:  # v2: a period at -inf in the experiments table instead
            for table in (rows, held_out):
                for row in table:
                    row.append(settle_of.get(row[1], ""))
            head.append("preequilibrationConditionId")
    write_tsv(folder / "measurements.tsv", head, rows)
    files = ["problem.yaml", "model.xml", "observables.tsv", "measurements.tsv"]
    if held_out:
        write_tsv(folder / "measurements_validation.tsv", head, held_out)
        files.append("measurements_validation.tsv")
        notes.append(f"the validation window's {len(held_out)} measurements are in measurements_validation.tsv, "
                     f"outside the problem (ude's likelihood is the training data's)")

    # -- conditions, experiments, parameters ----------------------------------------------------------------------
    cond_ids: dict[int, str] = {}
    condition_rows = []
    own: dict[str, dict[str, float | str]] = {k: dict(v) for k, v in wide}  # each experiment's own values (with pre-equilibration: the states it resets, not the others)

    def jump_values(b: int, t: float, which: tuple[int, ...], at_start: bool = False) -> list[tuple[str, str]]:
        """(state, its value after) of the jumps (model.events) at ``t`` in experiment ``b``: PEtab formulas of the
        values before, a dosing record's value (``column``) as the number of its row; ``at_start`` (the first
        period, which may not read a state): the states read as their initial numbers in ``b``."""
        out = []
        start = {s: number(y0[b, j]) for j, s in enumerate(problem.states)} if at_start else {}
        for i in which:
            event = problem.events[i]
            record = {} if event.column is None else {event.column: number(event.value(experiments[b], t))}
            out += [(state, petab(expr, {**start, **record})) for state, expr in event.assignments.items()]
        return out

    jumps_of = [schedule(problem.events, e) for e in experiments]
    if version == 2:
        for b in range(len(experiments)):
            for t, which in jumps_of[b]:
                if t == t0[b]:  # a jump at the start: the first period's condition sets the states after it
                    own[exp_ids[b]] = {**own[exp_ids[b]], **dict(jump_values(b, t, which, at_start=True))}

    for b in range(len(experiments)):
        if own[exp_ids[b]]:
            cond_ids[b] = _identifier(f"{exp_ids[b]}_condition", taken)
            condition_rows += [[cond_ids[b], sid, v] for sid, v in own[exp_ids[b]].items()]
    settled = {cid for cid in settle_of.values()}
    for cid, values in wide:
        if cid in settled:
            condition_rows += [[cid, sid, v] for sid, v in values.items()]
    head_parameters = ["parameterId", "parameterScale", "lowerBound", "upperBound", "nominalValue", "estimate"]
    doc: dict
    if version == 1:  # the experiments are the conditions; a wide condition table, estimate 1/0
        targeted = list(dict.fromkeys(sid for _, row in wide for sid in row))
        write_tsv(folder / "conditions.tsv", ["conditionId", *targeted],
                  [[cid, *(row.get(sid, "NaN") for sid in targeted)] for cid, row in wide])
        write_tsv(folder / "parameters.tsv", head_parameters,
                  [[*row[:5], int(row[5])] for row in parameter_rows])
        files += ["conditions.tsv", "parameters.tsv"]
        doc = {"format_version": 1, "parameter_file": "parameters.tsv",
               "problems": [{"sbml_files": ["model.xml"], "condition_files": ["conditions.tsv"],
                             "measurement_files": ["measurements.tsv"], "observable_files": ["observables.tsv"]}]}
    else:
        periods = []
        for b in range(len(experiments)):  # a pre-equilibration period first, from -inf (PEtab v2)
            if exp_ids[b] in settle_of:
                periods.append([exp_ids[b], -math.inf, settle_of[exp_ids[b]]])
            periods.append([exp_ids[b], 0.0, cond_ids.get(b, "")])
            for k, (t, which) in enumerate([jump for jump in jumps_of[b] if jump[0] != t0[b]], start=1):
                # a later period whose condition sets the states that jump (model.events), from their values
                # just before it
                cid = _identifier(f"{exp_ids[b]}_jump{k}", taken)
                condition_rows += [[cid, state, value] for state, value in jump_values(b, t, which)]
                periods.append([exp_ids[b], t - t0[b], cid])
        write_tsv(folder / "experiments.tsv", ["experimentId", "time", "conditionId"], periods)
        if condition_rows:
            write_tsv(folder / "conditions.tsv", ["conditionId", "targetId", "targetValue"], condition_rows)
        write_tsv(folder / "parameters.tsv", head_parameters, parameter_rows + network_rows)
        files += ["experiments.tsv", *(["conditions.tsv"] if condition_rows else []), "parameters.tsv"]
        doc = {"format_version": "2.0.0",
               "model_files": {"model": {"location": "model.xml", "language": "sbml"}},
               "parameter_files": ["parameters.tsv"], "observable_files": ["observables.tsv"],
               "measurement_files": ["measurements.tsv"], "experiment_files": ["experiments.tsv"]}
        if condition_rows:
            doc["condition_files"] = ["conditions.tsv"]
    if problem.networks:
        write_tsv(folder / "mapping.tsv", ["petabEntityId", "modelEntityId"], mapping_rows)
        write_tsv(folder / "hybridization.tsv", ["targetId", "targetValue"], hybrid_rows)
        write_hdf5(folder / "networks.hdf5", arrays)
        for name, net_doc in net_files.items():
            (folder / f"network_{name}.yaml").write_text(yaml.safe_dump(net_doc, sort_keys=False))
        doc["mapping_files"] = ["mapping.tsv"]
        doc["extensions"] = {"sciml": {"version": "0.1.0", "required": True, "array_files": ["networks.hdf5"],
                                       "hybridization_files": ["hybridization.tsv"],
                                       "neural_networks": {n: {"location": f"network_{n}.yaml", "pre_initialization": False,
                                                               "format": "YAML"} for n in problem.networks}}}
        files += ["mapping.tsv", "hybridization.tsv", "networks.hdf5", *(f"network_{n}.yaml" for n in problem.networks)]
    head_comment = (f"# PEtab {'v1' if version == 1 else 'SciML'} problem exported by `ude export` from {label}.\n"
                    f"# `ude evaluate problem.yaml` gives its log-likelihood; export.json says how it was made.\n")
    (folder / "problem.yaml").write_text(head_comment + yaml.safe_dump(doc, sort_keys=False))
    return Exported(problem=folder / "problem.yaml", source="", llh_source=math.nan, llh_exported=None,
                    files=files, notes=notes)


def _settling_conditions(problem, exp_ids: list[str], targets: dict, y0: np.ndarray, taken: set[str]
                         ) -> tuple[list, dict[str, str]]:
    """Pre-equilibration: per experiment a settling condition (the experiment's own values with the settling
    constants; experiments that settle alike share one); the experiment's own condition sets the reset states,
    and leaves the others out (NaN: PEtab continues them from the steady state), and sets the settling constants
    back to its values (in PEtab v2 a condition's changes last into the next period). The conditions, row by row
    (the experiments' own first), and each experiment's settling condition."""
    pre = problem.preequilibration
    experiments = problem.dataset.experiments
    states = list(problem.states)
    out, settling, settle_of = [], [], {}
    seen: dict[tuple, str] = {}
    for b, e in enumerate(experiments):
        own = dict(targets[b])
        if pre.experiments is not None and e.name not in pre.experiments:  # starts at its initial values
            for name in pre.constants:  # written out, as in the others (not NaN)
                c = problem.constants[name]
                own[name] = float(e.covariates[c]) if isinstance(c, str) else float(c)
            out.append((exp_ids[b], own))
            continue
        settle = dict(own)
        for name, v in pre.constants.items():
            settle[name] = float(e.covariates[v]) if isinstance(v, str) else float(v)
        sim = {sid: v for sid, v in own.items() if sid not in states}
        for name in pre.constants:  # the experiment's own value, written out (the settling one differs)
            c = problem.constants[name]
            sim[name] = float(e.covariates[c]) if isinstance(c, str) else float(c)
        for s in pre.reset:
            settle[s] = sim[s] = float(y0[b, states.index(s)])
        key = tuple(sorted(settle.items()))
        if key not in seen:
            seen[key] = exp_ids[b]
            settling.append((exp_ids[b], settle))
        settle_of[exp_ids[b]] = seen[key]
        out.append((exp_ids[b], sim))
    # named after the first experiment that settles so; "settle" when every experiment does alike
    names = {first: _identifier("settle" if len(settling) == 1 else f"{first}_settle", taken) for first, _ in settling}
    settle_of = {e: names[first] for e, first in settle_of.items()}
    settling = [(names[first], row) for first, row in settling]
    return out + settling, settle_of


def _refs(expr, networks) -> set[tuple[str, int]]:
    """The network outputs ``(net, i)`` an expression uses (a bare one-output ``NET`` is output 0)."""
    out = set(expr.network_refs)
    out |= {(n, 0) for n in expr.names if n in networks}
    return out
