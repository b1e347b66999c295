"""`ude export`: a config or run as a PEtab SciML problem that imports back to the same log-likelihood.

The round trip of every bundled config is checked against `ude evaluate CONFIG` (the original's llh, computed
by ude's own objective from the config) and `ude evaluate problem.yaml` (the exported files, read back by the
importer: an SBML model, PEtab tables, network YAML and HDF5 weights); the pieces are checked independently
too: the exported networks against torch.nn layers built from the HDF5 file, the translated squared-error
likelihood against its closed form, formulas against sympy from the SBML math.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from ude_cli.errors import ConfigError
from ude_cli.petab import evaluate, export, import_problem

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

#: bundled config -> the field its refusal names (PEtab, or ude import, has no counterpart); none today
REFUSED: dict[str, str] = {}
#: a stiff UDE (BDF at atol 1e-16) and two networks with 8x8 hidden layers: 2 to 6 s each (shared 2-core machine)
SLOW = {"robertson_ude", "lynx_hare_ude"}
#: the ODE's tolerance of the comparison: at rtol 1e-10 two BDF solves of the same problem written in two ways
#: (the network's standardisation folded into its weights) differ by 3.4e-8 in robertson_ude's llh (2.4e-11
#: at 1e-12), which is the solver's error, not the translation's
RTOL = {"robertson_ude": 1e-12}


def _params():
    out = []
    for path in CONFIGS:
        marks = [pytest.mark.slow] if path.stem in SLOW else []
        out.append(pytest.param(path, id=path.stem, marks=marks))
    return out


@pytest.mark.parametrize("config", _params())
def test_round_trip_of_every_bundled_config(config: Path, tmp_path: Path):
    out = tmp_path / "petab"
    if config.stem in REFUSED:
        with pytest.raises(ConfigError) as info:
            export(config, out, check=False)
        assert REFUSED[config.stem] in str(info.value.where)
        assert not out.exists()  # nothing written
        assert list(tmp_path.iterdir()) == []  # not even the staging folder
        return
    rtol = RTOL.get(config.stem, 1e-10)
    result = export(config, out, check=False)
    _nominal_values_are_the_configs(config, out)
    assert result.problem == out / "problem.yaml" and result.problem.is_file()
    original = evaluate(config, rtol=rtol, atol=min(1e-12, _atol(config)))
    again = evaluate(result.problem, rtol=rtol, atol=min(1e-12, _atol(config)))
    assert math.isfinite(original.llh)
    assert abs(again.llh - original.llh) <= 1e-8, (original.llh, again.llh)
    assert len(again.simulations) == len(original.simulations) - _validation_cells(out)
    shared = set(original.gradient) & set(again.gradient)  # the same parameters under the same names
    for name in shared:
        scale = max(abs(original.gradient[name]), 1e-6 * max(1.0, abs(original.llh)))
        assert abs(again.gradient[name] - original.gradient[name]) <= 1e-5 * scale, name


def _nominal_values_are_the_configs(config: Path, out: Path) -> None:
    """Every parameter's nominalValue is the config's init, digit for digit (not through a transform and back)."""
    import pandas as pd

    from ude_cli.config import load_config
    from ude_cli.problem import resolve

    table = pd.read_csv(out / "parameters.tsv", sep="\t", dtype=str).set_index("parameterId")
    for name, p in resolve(load_config(config)).parameters.items():
        ids = [name] if name in table.index else [i for i in table.index if i.startswith(f"{name}_")]
        assert ids, name
        for i in ids:
            assert float(table.loc[i, "nominalValue"]) == p.init, (i, table.loc[i, "nominalValue"], p.init)


def _atol(config: Path) -> float:
    from ude_cli.config import load_config

    return load_config(config).solver.atol


def _validation_cells(out: Path) -> int:
    held = out / "measurements_validation.tsv"
    return 0 if not held.is_file() else len(held.read_text().splitlines()) - 1


def test_the_export_checks_itself_and_writes_what_the_problem_names(tmp_path: Path):
    import yaml

    result = export(REPO / "configs" / "lotka_volterra.yaml", tmp_path / "lv")
    assert result.llh_exported is not None and result.difference is not None and result.difference <= 1e-8
    doc = yaml.safe_load((tmp_path / "lv" / "problem.yaml").read_text())
    named = [doc["model_files"]["model"]["location"], *doc["parameter_files"], *doc["observable_files"],
             *doc["measurement_files"], *doc["experiment_files"], *doc["mapping_files"],
             *doc["extensions"]["sciml"]["array_files"], *doc["extensions"]["sciml"]["hybridization_files"],
             *(n["location"] for n in doc["extensions"]["sciml"]["neural_networks"].values())]
    for name in named:
        assert (tmp_path / "lv" / name).is_file(), name
    assert sorted(result.files) == sorted({*named, "problem.yaml", "export.json"})
    # the config's values are the nominal ones; alpha and gamma are fixed there
    import pandas as pd

    table = pd.read_csv(tmp_path / "lv" / "parameters.tsv", sep="\t", dtype=str).set_index("parameterId")
    assert table.loc["alpha", "nominalValue"] == "1.3" and table.loc["alpha", "estimate"] == "false"
    assert table.loc["U_ps", "nominalValue"] == "array" and table.loc["U_ps", "estimate"] == "true"


def test_squared_error_loss_becomes_normal_noise_at_the_ml_sigma(tmp_path: Path):
    """The exported likelihood of an mse config equals the closed form -n/2 (log(2 pi RSS/n) + 1), with RSS
    from the re-imported problem's own simulations (not from the objective's profiled code)."""
    result = export(REPO / "configs" / "theophylline_pk.yaml", tmp_path / "pk", check=False)
    ev = evaluate(result.problem)
    r = ev.simulations["measurement"].to_numpy() - ev.simulations["simulation"].to_numpy()
    n = len(r)
    closed = -0.5 * n * (math.log(2 * math.pi * float(r @ r) / n) + 1.0)
    assert ev.llh == pytest.approx(closed, abs=1e-9)
    assert abs(ev.gradient["sigma"]) < 1e-8  # sigma is at its maximum


def test_log_loss_becomes_log_normal_noise(tmp_path: Path):
    """lynx_hare_lv (training.loss log, t from 1900): the density of y, so the Jacobian -sum(log y) is in."""
    result = export(REPO / "configs" / "lynx_hare_lv.yaml", tmp_path / "lh", check=False)
    ev = evaluate(result.problem)
    y, mu = ev.simulations["measurement"].to_numpy(), ev.simulations["simulation"].to_numpy()
    r = np.log(y) - np.log(mu)
    n = len(r)
    closed = -0.5 * n * (math.log(2 * math.pi * float(r @ r) / n) + 1.0) - float(np.log(y).sum())
    assert ev.llh == pytest.approx(closed, abs=1e-9)
    times = ev.simulations["time"].to_numpy()
    assert times.min() == 0.0 and times.max() == 20.0  # 1900 ... 1920, shifted to start at 0


@pytest.mark.parametrize("name", ["logistic_imitable", "lotka_volterra"])
def test_exported_networks_are_the_configs(name: str, tmp_path: Path):
    """torch.nn.Linear layers from the HDF5 file (PyTorch layout) and the YAML's activation give the ude
    network's output, standardisation and output scaling (folded into the weights) included."""
    import h5py
    import torch
    import yaml

    from ude_cli.config import load_config
    from ude_cli.fitting.model import UDEModel
    from ude_cli.problem import resolve

    config = REPO / "configs" / f"{name}.yaml"
    export(config, tmp_path / "x", check=False)
    problem = resolve(load_config(config))
    model = UDEModel(problem)
    (net_name, mlp), = model.rhs.networks.items()
    spec = yaml.safe_load((tmp_path / "x" / f"network_{net_name}.yaml").read_text())
    targets = [n["target"] for n in spec["forward"] if n["op"] == "call_function"]
    with h5py.File(tmp_path / "x" / "networks.hdf5") as f:
        assert int(f["metadata"]["pytorch_format"][()]) == 1  # as the suite's array files say it
        layers = []
        for layer in spec["layers"]:
            g = f["parameters"][net_name][layer["layer_id"]]
            lin = torch.nn.Linear(layer["args"]["in_features"], layer["args"]["out_features"], dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(np.asarray(g["weight"])))
                lin.bias.copy_(torch.tensor(np.asarray(g["bias"])))
            layers.append(lin)
    rbf = targets[:3] == ["mul", "mul", "exp"]
    assert rbf == (problem.networks[net_name].activation == "rbf")
    act = (lambda z: torch.exp(-z * z)) if rbf else getattr(torch, targets[0])
    x = torch.tensor(np.random.default_rng(1).uniform(0.5, 5.0, (7, len(problem.networks[net_name].inputs))))
    h = x
    for lin in layers[:-1]:
        h = act(lin(h))
    ours = layers[-1](h)
    with torch.no_grad():
        theirs = mlp(x[None])[0]
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    if name == "logistic_imitable":
        assert not mlp.identity_in  # the case with a standardisation to fold
    # read back as ude's own network (an MLP the compiled engine compiles), rbf included, not as a graph
    from ude_cli.petab import import_problem

    imported = yaml.safe_load(import_problem(tmp_path / "x" / "problem.yaml", tmp_path / "i").read_text())
    net = imported["networks"][net_name]
    assert net["activation"] == problem.networks[net_name].activation and "file" not in net


def test_formulas_print_with_sbml_and_petab_spelling():
    """ude's `**`, natural `log`, `sigmoid`, `log2`, min/max and `t` as SBML math (read back through sbmlmath)
    and as a PEtab formula (read back by the importer's whitelisted parser) equal ude's own value."""
    import libsbml
    import sbmlmath
    import sympy as sp

    from ude_cli.expressions import parse_expression
    from ude_cli.petab.language import parse_formula
    from ude_cli.petab.writer import formula

    text = "x**2 - 3*log(y) + log10(y)/log2(x) + sigmoid(-x) + min(x, y) * max(x, 2) + exp(-t/2) + sqrt(y) - 1.5e-05"
    expr = parse_expression(text)
    at = {"x": 1.7, "y": 0.3, "t": 2.5}
    want = float(expr.compile("numpy")(at))
    sbml = formula(expr.tree, style="sbml", name=lambda n: n, output=lambda n, i: "", time="time", networks={})
    assert "^" in sbml and "**" not in sbml and "ln(" in sbml
    node = libsbml.parseL3Formula(sbml)
    assert node is not None
    doc = libsbml.SBMLDocument(3, 2)
    rule = doc.createModel().createAssignmentRule()
    rule.setVariable("z")
    rule.setMath(node)
    got = sbmlmath.sbml_math_to_sympy(rule, floats_as_rationals=False, evaluate=True, ignore_units=True)
    subs = {s: (at["t"] if isinstance(s, sbmlmath.TimeSymbol) else at[s.name]) for s in got.free_symbols}
    assert float(got.subs(subs)) == pytest.approx(want, rel=1e-14)
    petab = formula(expr.tree, style="petab", name=lambda n: n, output=lambda n, i: "", time="time", networks={})
    back = parse_formula(petab)
    assert float(back.subs({sp.Symbol(k if k != "t" else "time"): v for k, v in at.items()})) == pytest.approx(
        want, rel=1e-14)


def test_time_offset_per_experiment_column_constants_and_condition_targets(write, tmp_path: Path):
    """Two experiments starting at different times, a constant read from a column, `t` in the equation and a
    formula initial value of t0: the conditions carry the per-experiment numbers, t becomes time + t_offset."""
    rng = np.random.default_rng(3)
    rows = ["run,t,k_col,y"]
    for run, start, k in (("a", 2.0, 0.5), ("b", 5.0, 0.8)):
        for t in start + np.linspace(0, 4, 9):
            rows.append(f"{run},{t},{k},{math.exp(-k * (t - start)) * (1 + 0.1 * math.sin(t)) + 0.01 * rng.normal()}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    config = write("c.yaml", """
        data: {file: d.csv, time: t, experiment: run, columns: {y: y}}
        model:
          states: [y]
          parameters: {a: {init: 0.1, bounds: [0, 1]}, y0: {init: 1.0, positive: true}}
          constants: {k: {column: k_col}}
          equations: {y: -k*y + a*cos(t)}
          initial: {y: {formula: "y0 + 0*t0"}}
        noise: {distribution: normal, sigma: 0.02}
        """)
    result = export(config, tmp_path / "out", check=False)
    folder = tmp_path / "out"
    conditions = (folder / "conditions.tsv").read_text().splitlines()
    assert any("\tk\t0.5" in line for line in conditions) and any("\tt_offset\t5.0" in line for line in conditions)
    assert "<ci> t_offset </ci>" in (folder / "model.xml").read_text()
    # at rtol 1e-12: the two solve cos(t) and cos(time + t_offset) on different floating-point times, and at
    # sigma 0.02 the llh amplifies the solver's error (1.4e-8 apart at rtol 1e-10)
    original, again = evaluate(config, rtol=1e-12), evaluate(result.problem, rtol=1e-12)
    assert again.llh == pytest.approx(original.llh, abs=1e-8)
    assert again.gradient["a"] == pytest.approx(original.gradient["a"], rel=1e-6)


def test_a_fitted_run_exports_its_fitted_values(write, lv_csv, tmp_path: Path):
    """From a run directory the fitted parameters, noise and weights are the nominal values: the exported
    llh equals the run's own (recomputed at the evaluation tolerances) and the nominal value is the fit's."""
    import json

    import pandas as pd

    from ude_cli import api
    from ude_cli.config import load_config

    config = write("lv.yaml", f"""
        data: {{file: {lv_csv.name}, time: t, columns: {{x: prey, y: predator}}}}
        model:
          states: [x, y]
          parameters: {{alpha: {{init: 1.0, positive: true}}, gamma: {{init: 0.8, fixed: true}}}}
          equations: {{x: "alpha*x + U[0]", y: "-gamma*y + U[1]"}}
          initial: {{x: 0.44249296, y: 4.6280594}}
        networks: {{U: {{inputs: [x, y], outputs: 2, hidden: [4], activation: tanh}}}}
        noise: normal
        training: {{warm_start: none, stages: [{{optimizer: lbfgs, iterations: 15}}]}}
        output: {{plots: false}}
        """)
    run = api.fit(load_config(config)).save(tmp_path / "run")
    result = export(run, tmp_path / "out")
    params = pd.read_csv(tmp_path / "run" / "params.csv")
    fitted = float(params.loc[params["name"] == "alpha", "value"].iloc[0])
    table = pd.read_csv(tmp_path / "out" / "parameters.tsv", sep="\t", dtype=str).set_index("parameterId")
    assert float(table.loc["alpha", "nominalValue"]) == pytest.approx(fitted, rel=1e-12)
    assert fitted != pytest.approx(1.0, abs=1e-6)  # it moved: the fitted value, not the config's start
    assert result.difference is not None and result.difference <= 1e-8
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert info["llh_source"] == pytest.approx(info["llh_reimported"], abs=1e-8)


def test_cli_refuses_with_one_line_and_exit_3(tmp_path: Path):
    from typer.testing import CliRunner

    from ude_cli.cli import app

    out = tmp_path / "x"
    res = CliRunner().invoke(app, ["export", str(REPO / "configs" / "flu_sir_negbin.yaml"), "--out", str(out),
                                   "--petab-version", "1"])  # v1 has no count distributions
    assert res.exit_code == 3
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "negative_binomial" in lines[0] and "observables.I.noise.distribution" in lines[0]
    assert "--petab-version 2" in lines[0]
    assert not out.exists()


def _flu_llh_by_scipy(out: Path, logpmf) -> float:
    """The exported flu problem's llh, independently: SIR by scipy's LSODA, the draft's pmf by scipy.stats, with
    the parameters' nominal values from parameters.tsv."""
    import pandas as pd
    from scipy.integrate import solve_ivp

    pars = pd.read_csv(out / "parameters.tsv", sep="\t").set_index("parameterId")["nominalValue"]
    meas = pd.read_csv(out / "measurements.tsv", sep="\t")
    beta, gamma, n = pars["beta"], pars["gamma"], 763.0

    def rhs(_t, x):
        s, i, _r = x
        return [-beta * s * i / n, beta * s * i / n - gamma * i, gamma * i]

    sol = solve_ivp(rhs, (0.0, float(meas["time"].max())), [762.0, 1.0, 0.0], method="LSODA",
                    t_eval=meas["time"].to_numpy(float), rtol=1e-12, atol=1e-12)
    return float(np.sum(logpmf(meas["measurement"].to_numpy(float), sol.y[1], pars)))


def test_negative_binomial_noise_exports_as_the_v2_drafts_and_matches_scipy(tmp_path: Path):
    """PEtab v2's draft (pull request 654): NB(r, p) of m failures, r the observable formula (the dispersion),
    p the noise formula (r / (r + I)): its pmf by scipy.stats.nbinom is the llh both ways round."""
    from scipy import stats

    out = tmp_path / "nb"
    result = export(REPO / "configs" / "flu_sir_negbin.yaml", out)
    observables = (out / "observables.tsv").read_text().splitlines()
    assert observables[1].split("\t")[2:] == ["dispersion_in_bed", "dispersion_in_bed / (dispersion_in_bed + I)",
                                                "negative-binomial"]
    assert any("pull request 654" in n for n in result.notes)

    def nb(m, i, pars):
        r = pars["dispersion_in_bed"]
        return stats.nbinom.logpmf(m, r, r / (r + i))

    expected = _flu_llh_by_scipy(out, nb)
    assert result.llh_source == pytest.approx(expected, abs=1e-6)
    assert evaluate(out / "problem.yaml", rtol=1e-11, atol=1e-11).llh == pytest.approx(expected, abs=1e-6)
    config = yaml.safe_load(import_problem(out / "problem.yaml", tmp_path / "back").read_text())
    [obs] = config["observables"].values()
    assert obs["formula"] == "I"  # the mean r (1 - p) / p, cancelled
    assert obs["noise"]["distribution"] == "negative_binomial" and obs["noise"]["dispersion"]["init"] == 10.0


def test_poisson_noise_exports_with_an_empty_noise_formula_and_matches_scipy(tmp_path: Path):
    from scipy import stats

    config = yaml.safe_load((REPO / "configs" / "flu_sir_negbin.yaml").read_text())
    config["data"]["file"] = str(REPO / "data" / "flu_boarding_school_1978.csv")
    config["observables"]["in_bed"]["noise"] = "poisson"
    path = tmp_path / "flu_poisson.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "pois"
    result = export(path, out)
    row = (out / "observables.tsv").read_text().splitlines()[1].split("\t")
    assert row[2:] == ["I", "", "poisson"]
    expected = _flu_llh_by_scipy(out, lambda m, i, _p: stats.poisson.logpmf(m, i))
    assert result.llh_source == pytest.approx(expected, abs=1e-6)
    assert result.llh_exported == pytest.approx(result.llh_source, abs=1e-8)


def test_cli_prints_both_log_likelihoods(tmp_path: Path):
    from typer.testing import CliRunner

    from ude_cli.cli import app

    out = tmp_path / "x"
    res = CliRunner().invoke(app, ["export", str(REPO / "configs" / "flu_sir.yaml"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "log-likelihood of the exported problem, re-imported" in res.output
    assert (out / "problem.yaml").is_file()
    again = CliRunner().invoke(app, ["export", str(REPO / "configs" / "flu_sir.yaml"), "--out", str(out)])
    assert again.exit_code == 6  # not over an existing export without --overwrite


def test_per_experiment_parameters_are_one_parameter_per_experiment(tmp_path: Path):
    """orange_trees_per_tree: Asym per tree becomes Asym_e1 ... Asym_e5, each moving its own tree; the
    re-imported gradient matches central differences of the re-imported llh."""
    result = export(REPO / "configs" / "orange_trees_per_tree.yaml", tmp_path / "o", check=False)
    base = evaluate(result.problem)
    assert {f"Asym_e{k}" for k in range(1, 6)} <= set(base.gradient)
    h = 1e-4 * base.values["Asym_e2"]
    up = evaluate(result.problem, values={"Asym_e2": base.values["Asym_e2"] + h})
    down = evaluate(result.problem, values={"Asym_e2": base.values["Asym_e2"] - h})
    sims = {k: ev.simulations.set_index(["simulationConditionId", "time"])["simulation"] for k, ev in
            (("base", base), ("up", up))}
    # another tree moves only by the solver's error (the experiments are solved as one batch, one step size)
    a, b = sims["up"].loc["e1"].to_numpy(), sims["base"].loc["e1"].to_numpy()
    assert np.max(np.abs(a - b) / np.abs(b)) < 1e-9
    a, b = sims["up"].loc["e2"].to_numpy(), sims["base"].loc["e2"].to_numpy()
    assert np.max(np.abs(a - b) / np.abs(b)) > 1e-6
    assert base.gradient["Asym_e2"] == pytest.approx((up.llh - down.llh) / (2 * h), rel=1e-5)


BENCHMARK = REPO / "tests" / "data" / "petab" / "benchmark"


@pytest.mark.parametrize("name", [
    "Perelson_Science1996", "Rahman_MBS2016", "Crauste_CellSystems2017", "Bertozzi_PNAS2020",
    pytest.param("Boehm_JProteomeRes2014", marks=pytest.mark.slow),
    pytest.param("Borghans_BiophysChem1997", marks=pytest.mark.slow),
    pytest.param("Fiedler_BMCSystBiol2016", marks=pytest.mark.slow),
    pytest.param("Armistead_CellDeathDis2024", marks=pytest.mark.slow),  # proportional error
    pytest.param("Raia_CancerResearch2011", marks=pytest.mark.slow)])  # combined error, nominal noise on a bound
def test_petab_benchmarks_import_export_and_import_again_to_the_same_llh(name: str, tmp_path: Path):
    """Benchmark-Models-PEtab problems (per-condition constants, conditions mapped to parameters, noise formulas of
    several parameters, two observables of one state, replicates) through `ude import`, `ude export` and the importer again: the
    log-likelihood of the original PEtab problem (AMICI's reference for Boehm, Borghans and Fiedler)."""
    from ude_cli.petab import import_problem

    original = evaluate(BENCHMARK / name / f"{name}.yaml")
    config = import_problem(BENCHMARK / name / f"{name}.yaml", tmp_path / "imported")
    if name == "Bertozzi_PNAS2020":
        # its nominal R0_NY is on its lower bound (1.5): the imported config starts just inside it (1.5000018), and
        # the export of the config has that start as its nominal value: compared with the problem at the config's
        # starting values (2.6e-8 from its llh at 1.5)
        import yaml

        starts = {n: p["init"] for n, p in yaml.safe_load(config.read_text())["model"]["parameters"].items()}
        original = evaluate(BENCHMARK / name / f"{name}.yaml", values=starts)
    result = export(config, tmp_path / "exported", check=False)
    again = evaluate(result.problem)
    assert again.llh == pytest.approx(original.llh, abs=1e-8)
    assert len(again.simulations) == len(original.simulations)


SCIML = REPO / "tests" / "data" / "petab" / "sciml"
_FAST_SCIML = {"001", "004", "010", "022", "023"}  # in the ODE, in an observable, two networks, two outputs, frozen


#: cases export refuses (in one line, each tested below): a network setting an initial value (007), graph networks
#: (Conv2d: 014, 015), priors (032-034)
_NOT_EXPORTED = {"007": "model.initial.prey", "014": "networks.net3.file", "015": "networks.net3.file",
                 "032": ".prior", "033": ".prior", "034": ".prior"}


@pytest.mark.parametrize("case", [
    pytest.param(c.name, marks=[] if c.name in _FAST_SCIML else [pytest.mark.slow])
    for c in sorted(SCIML.iterdir()) if (c / "petab" / "problem.yaml").is_file() and c.name not in _NOT_EXPORTED])
def test_sciml_suite_cases_import_export_and_import_again(case: str, tmp_path: Path):
    """The vendored PEtab SciML suite cases (networks in the right-hand side and in observables, fixed and
    frozen layers, pre-initialization networks) after ude import and ude export: the suite's log-likelihood
    (its tolerance, 1e-3) and the directly imported problem's (1e-8). Case 007 is one the importer refuses."""
    import yaml

    from ude_cli.petab import import_problem

    problem = SCIML / case / "petab" / "problem.yaml"
    expected = yaml.safe_load((SCIML / case / "solutions.yaml").read_text())["llh"]
    original = evaluate(problem)
    config = import_problem(problem, tmp_path / "imported")
    again = evaluate(export(config, tmp_path / "exported", check=False).problem)
    assert again.llh == pytest.approx(original.llh, abs=1e-8)
    assert again.llh == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("case", ["007", "014", "032"])
def test_sciml_cases_export_refuses_name_the_field_and_write_nothing(case: str, tmp_path: Path):
    """A network setting an initial value (007), a graph network (014) and a prior (032) are not exported: one
    line naming the config field, nothing written."""
    from ude_cli.errors import ConfigError
    from ude_cli.petab import import_problem

    config = import_problem(SCIML / case / "petab" / "problem.yaml", tmp_path / "imported")
    with pytest.raises(ConfigError) as info:
        export(config, tmp_path / "exported", check=False)
    assert _NOT_EXPORTED[case] in info.value.lines()[0]
    assert not (tmp_path / "exported").exists()


def test_evaluate_a_squared_error_config_and_its_gradient():
    """`ude evaluate CONFIG` without a noise model: the profiled likelihood (sigma at its maximum) and its
    gradient, against central differences of the same number."""
    config = REPO / "configs" / "flu_sir.yaml"
    base = evaluate(config)
    for name in ("beta", "gamma"):
        h = 1e-5 * base.values[name]
        up = evaluate(config, values={name: base.values[name] + h}).llh
        down = evaluate(config, values={name: base.values[name] - h}).llh
        assert base.gradient[name] == pytest.approx((up - down) / (2 * h), rel=1e-6)


@pytest.mark.parametrize("distribution", ["laplace", "loglaplace"])
def test_laplace_noise_is_petabs_laplace(distribution: str, write, tmp_path: Path):
    """Laplace noise (and on log scale) is PEtab's `laplace` (`log-laplace`) with the scale b as the noise
    formula: PEtab's density, -sum(log(2b) + |h(y) - h(m)|/b) (- sum log y on log scale), computed here from the
    exported table's b and ude's simulations, is ude's log-likelihood."""
    import pandas as pd

    t = np.linspace(0, 4, 15)
    y = 2.0 * np.exp(-0.6 * t) * np.exp(0.05 * np.sin(7 * t))
    (tmp_path / "d.csv").write_text("t,y\n" + "".join(f"{a},{b}\n" for a, b in zip(t, y, strict=True)))
    config = write("c.yaml", f"""
        data: {{file: d.csv, time: t, columns: {{y: y}}}}
        model:
          states: [y]
          parameters: {{k: {{init: 0.5, positive: true}}}}
          equations: {{y: -k*y}}
          initial: {{y: 2.0}}
        noise: {{distribution: {distribution}, sigma: {{init: 0.07}}}}
        """)
    export(config, tmp_path / "out", check=False)
    obs = pd.read_csv(tmp_path / "out" / "observables.tsv", sep="\t", dtype=str).iloc[0]
    assert obs["noiseDistribution"] == ("log-laplace" if distribution == "loglaplace" else "laplace")  # (v2)
    table = pd.read_csv(tmp_path / "out" / "parameters.tsv", sep="\t", dtype=str).set_index("parameterId")
    b = float(table.loc[obs["noiseFormula"], "nominalValue"])
    assert b == 0.07
    ev = evaluate(config)
    m, data = ev.simulations["simulation"].to_numpy(), ev.simulations["measurement"].to_numpy()
    measured = pd.read_csv(tmp_path / "out" / "measurements.tsv", sep="\t")["measurement"].to_numpy()
    assert np.array_equal(np.sort(measured), np.sort(data))
    if distribution == "laplace":
        closed = -np.sum(np.log(2 * b) + np.abs(data - m) / b)
    else:
        closed = -np.sum(np.log(2 * b) + np.abs(np.log(data) - np.log(m)) / b + np.log(data))
    assert ev.llh == pytest.approx(float(closed), abs=1e-9)


@pytest.mark.parametrize("formula", ["y", "2*y"])  # abs(2*y) is 2*abs(y) to sympy: the importer must see it
@pytest.mark.parametrize("error, sigma", [("proportional", "sigma: {init: 0.1}"),
                                          ("combined", "sigma: {init: 0.05}, sigma_rel: {init: 0.1}"),
                                          ("combined2", "sigma: {init: 0.05}, sigma_rel: {init: 0.1}")])
def test_an_error_model_of_the_prediction_round_trips(error: str, sigma: str, formula: str, write, tmp_path: Path):
    """Proportional and combined normal errors are written as PEtab noise formulas of the observable's formula
    (``sigma * abs(y)``, ``sigma + sigma_rel * abs(y)``, ``sqrt(sigma^2 + (sigma_rel * abs(y))^2)``), which ude
    import reads back as the same error model: the llh and its gradient again, and the closed form of ude's
    simulations with sd = sigma + sigma_rel |m| (or sqrt(sigma^2 + sigma_rel^2 m^2))."""
    import pandas as pd

    t = np.linspace(0, 4, 15)
    y = 2.0 * np.exp(-0.6 * t) * (1 + 0.1 * np.sin(7 * t))
    scale = 2.0 if formula == "2*y" else 1.0
    (tmp_path / "d.csv").write_text("t,m\n" + "".join(f"{a},{scale * b}\n" for a, b in zip(t, y, strict=True)))
    config = write("c.yaml", f"""
        data: {{file: d.csv, time: t}}
        model:
          states: [y]
          parameters: {{k: {{init: 0.5, positive: true}}}}
          equations: {{y: -k*y}}
          initial: {{y: 2.0}}
        observables: {{obs: {{formula: "{formula}", column: m}}}}
        noise: {{distribution: normal, error: {error}, {sigma}}}
        """)
    result = export(config, tmp_path / "out", check=False)
    obs = pd.read_csv(tmp_path / "out" / "observables.tsv", sep="\t", dtype=str).iloc[0]
    assert "abs(" in obs["noiseFormula"]
    original, again = evaluate(config), evaluate(result.problem)
    assert again.llh == pytest.approx(original.llh, abs=1e-8)
    for name in ("k",):
        assert again.gradient[name] == pytest.approx(original.gradient[name], rel=1e-6)
    m, data = original.simulations["simulation"].to_numpy(), original.simulations["measurement"].to_numpy()
    sd = {"proportional": 0.1 * np.abs(m), "combined": 0.05 + 0.1 * np.abs(m),
          "combined2": np.sqrt(0.05**2 + (0.1 * m) ** 2)}[error]
    closed = np.sum(-0.5 * np.log(2 * np.pi * sd**2) - 0.5 * ((data - m) / sd) ** 2)
    assert original.llh == pytest.approx(float(closed), abs=1e-9)  # m: the observable's prediction
    imported = yaml.safe_load(import_problem(result.problem, tmp_path / "again").read_text())
    assert next(iter(imported["observables"].values()))["noise"]["error"] == error


def test_a_run_of_an_imported_problem_with_a_fixed_network_exports(tmp_path: Path):
    """A run whose config starts its network from a weights file and keeps it fixed: exported from model.pt (the
    file is not read: runs written before inputs/ copied it have none), the network's row not estimated, the
    same llh."""
    import pandas as pd
    import yaml

    from ude_cli import api
    from ude_cli.config import load_config
    from ude_cli.petab import import_problem

    config = import_problem(SCIML / "016" / "petab" / "problem.yaml", tmp_path / "imported")
    raw = yaml.safe_load(config.read_text())
    assert any(n.get("fixed") for n in raw["networks"].values())
    raw["training"] = {"warm_start": "none", "stages": [{"optimizer": "lbfgs", "iterations": 3}]}
    raw["output"] = {"plots": False}
    config.write_text(yaml.safe_dump(raw))
    run = api.fit(load_config(config)).save(tmp_path / "run")
    for old in (run / "inputs").glob("*.npz"):
        old.unlink()  # as a run written before inputs/ copied the weights file
    result = export(run, tmp_path / "out")
    assert result.difference is not None and result.difference <= 1e-8
    table = pd.read_csv(tmp_path / "out" / "parameters.tsv", sep="\t", dtype=str).set_index("parameterId")
    assert table.loc["net1_ps", "estimate"] == "false"


def test_a_name_that_sbml_reads_as_a_constant_is_refused(write, lv_csv, tmp_path: Path):
    config = write("c.yaml", f"""
        data: {{file: {lv_csv.name}, time: t, columns: {{x: prey}}}}
        model:
          states: [x]
          parameters: {{inf: {{init: 0.5}}}}
          equations: {{x: -inf*x}}
          initial: {{x: 0.44}}
        """)
    with pytest.raises(ConfigError) as info:
        export(config, tmp_path / "out")
    assert "model.parameters.inf" in str(info.value.where) and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fitting_the_exported_squared_error_problem_gives_the_least_squares_fit(tmp_path: Path):
    """theophylline_pk (mse) fitted by ude fit, and its export imported and fitted (normal noise, sigma estimated):
    the maximum-likelihood values are the least-squares ones (measured: 2e-7 apart), and sigma^2 is the fit's
    mean squared error."""
    from ude_cli import api
    from ude_cli.config import load_config
    from ude_cli.petab import import_problem

    config = REPO / "configs" / "theophylline_pk.yaml"
    original = api.fit(load_config(config))
    exported = export(config, tmp_path / "e", check=False)
    again = api.fit(load_config(import_problem(exported.problem, tmp_path / "i")))
    for name in ("ka", "ke", "V"):
        assert again.values[name] == pytest.approx(original.values[name], rel=1e-5), name
    sigma = next(v for k, v in again.values.items() if k.startswith("sigma"))
    mse = original.metrics["train_mse"]["C"]
    assert sigma**2 == pytest.approx(mse, rel=1e-4)


@pytest.mark.parametrize(("loss", "columns"), [("scaled", "{x: prey, y: predator}"),
                                               ("{scale: std, log: true}", "{x: prey, y: predator}"),
                                               ("scaled", "{y: predator}")])  # the spread of y, the second state
def test_scaled_losses_become_a_sigma_per_observable_spread(loss: str, columns: str, write, tmp_path: Path):
    """training.loss scaled (errors divided by each observable's spread): sigma_j = c * spread_j with c at its
    maximum; the exported problem (a noise formula sigma * spread per observable) has ude's likelihood."""
    rows = ["t,prey,predator"]
    for t in np.linspace(0, 3, 13):
        rows.append(f"{t},{1 + 0.5 * math.sin(t) + 0.01 * math.cos(9 * t)},{40 + 10 * math.cos(t) + 0.3 * math.sin(7 * t)}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    config = write("c.yaml", f"""
        data: {{file: d.csv, time: t, columns: {columns}}}
        model:
          states: [x, y]
          parameters: {{a: {{init: 0.5}}, b: {{init: 10.0}}}}
          equations: {{x: a*cos(t), y: -b*sin(t)}}
          initial: {{x: 1.0, y: 50.0}}
        training: {{loss: {loss}}}
        """)
    result = export(config, tmp_path / "out", check=False)
    noise = (tmp_path / "out" / "observables.tsv").read_text()
    assert noise.count("sigma * ") == columns.count(":")  # one spread per observable
    original, again = evaluate(config), evaluate(result.problem)
    assert again.llh == pytest.approx(original.llh, abs=1e-8)
    assert abs(again.gradient["sigma"]) < 1e-6 * abs(again.llh)  # sigma at its maximum


def test_a_graph_network_is_refused_with_its_field(write, lv_csv, tmp_path: Path):
    write("net.yaml", """
        nn_model_id: U
        inputs: [{input_id: input0}]
        layers:
        - {layer_id: layer1, layer_type: Linear, args: {in_features: 2, out_features: 2, bias: false}}
        forward:
        - {name: net_input, op: placeholder, target: net_input, args: [], kwargs: {}}
        - {name: layer1, op: call_module, target: layer1, args: [net_input], kwargs: {}}
        - {name: output, op: output, target: output, args: [layer1], kwargs: {}}
        """)
    config = write("c.yaml", f"""
        data: {{file: {lv_csv.name}, time: t, columns: {{x: prey, y: predator}}}}
        model:
          states: [x, y]
          equations: {{x: "U[0]", y: "U[1]"}}
          initial: {{x: 0.44, y: 4.6}}
        networks: {{U: {{inputs: [x, y], outputs: 2, file: net.yaml, normalize: false}}}}
        """)
    with pytest.raises(ConfigError) as info:
        export(config, tmp_path / "out")
    assert "networks.U.file" in str(info.value.where) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["theophylline_pk", "orange_trees_per_tree", "lynx_hare_lv", "flu_sir"])
def test_petab_v1_export_round_trips(name: str, tmp_path: Path):
    """--petab-version 1 (for tools that read only PEtab v1): conditions are the experiments (a wide table),
    estimate 1/0, the v1 problem YAML; the same log-likelihood when read back."""
    import yaml

    config = REPO / "configs" / f"{name}.yaml"
    result = export(config, tmp_path / "v1", check=False, version=1)
    doc = yaml.safe_load(result.problem.read_text())
    assert doc["format_version"] == 1 and doc["problems"][0]["condition_files"] == ["conditions.tsv"]
    head = (tmp_path / "v1" / "measurements.tsv").read_text().splitlines()[0].split("\t")
    assert head[1] == "simulationConditionId"
    assert evaluate(result.problem).llh == pytest.approx(evaluate(config).llh, abs=1e-8)


def test_petab_v1_has_no_networks(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        export(REPO / "configs" / "lotka_volterra.yaml", tmp_path / "v1", version=1)
    assert "networks.U" in str(info.value.where) and not (tmp_path / "v1").exists()


def _rewrite_observables(out: Path, edit) -> None:
    import pandas as pd

    table = pd.read_csv(out / "observables.tsv", sep="\t", dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(out / "observables.tsv", sep="\t", index=False)


def test_v2s_merged_log_normal_reads_as_the_transformation_column(tmp_path: Path):
    """PEtab v2 has noiseDistribution log-normal (what the export writes) where v1 and the PEtab SciML suite's
    dialect have observableTransformation log: the same problem either way."""
    out = tmp_path / "ln"
    result = export(REPO / "configs" / "lynx_hare_lognormal.yaml", out)

    def split(table):
        assert set(table["noiseDistribution"]) == {"log-normal"} and "observableTransformation" not in table
        table["noiseDistribution"] = "normal"
        table["observableTransformation"] = "log"

    _rewrite_observables(out, split)
    assert evaluate(out / "problem.yaml", rtol=result.rtol, atol=result.atol).llh == pytest.approx(
        result.llh_exported, abs=1e-9)


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.__setitem__("noiseDistribution", "binomial"), "binomial noise is not supported"),
    (lambda t: t.__setitem__("noiseDistribution", "poisson"), "a poisson observable's noise formula must be empty"),
    (lambda t: t.__setitem__("observableTransformation", "log"), "observableTransformation: 'log' with noiseDistribution"),
])
def test_bad_draft_distributions_are_one_line(tmp_path: Path, edit, expected):
    out = tmp_path / "p"
    export(REPO / "configs" / "lynx_hare_lognormal.yaml", out)
    _rewrite_observables(out, edit)
    with pytest.raises(ConfigError) as info:
        evaluate(out / "problem.yaml")
    assert expected in info.value.lines()[0] and "observables.tsv" in str(info.value.where)


def test_a_negative_binomial_mean_of_several_hill_terms_imports_back_as_itself(tmp_path: Path):
    """The imported mean is r / p - r, which sympy's own arithmetic gives back term by term for p = r / (r + M); a
    cancel over the common denominator took minutes on five Hill terms and expanded them into thousands of
    characters."""
    config = yaml.safe_load((REPO / "configs" / "flu_sir_negbin.yaml").read_text())
    config["data"]["file"] = str(REPO / "data" / "flu_boarding_school_1978.csv")
    formula = ("0.5*I + 100*I**2/(40**2 + I**2) + 80*I**3/(60**3 + I**3) + 20*I*S/(1000 + I*S) + 30*R/(100 + R)"
               " + 10*S*R/(500 + S*R + I)")
    config["observables"]["in_bed"]["formula"] = formula
    path = tmp_path / "hill.yaml"
    path.write_text(yaml.safe_dump(config))
    result = export(path, tmp_path / "out")
    assert result.llh_exported == pytest.approx(result.llh_source, abs=1e-8)
    back = yaml.safe_load(import_problem(tmp_path / "out" / "problem.yaml", tmp_path / "back").read_text())
    [obs] = back["observables"].values()
    assert len(obs["formula"]) < 1.2 * len(formula)  # the six terms, reordered at most
    assert obs["formula"].count("/") == formula.count("/")


def test_a_negative_binomial_noise_formula_of_the_observable_itself(tmp_path: Path):
    """PEtab v2: an observable's id in a noise formula is its value, the observable formula (the test suite's 0021),
    which for the draft's NB is r itself: p = r / (r + I_obs) is r / (r + r) = 1/2, whatever the model does."""
    import pandas as pd
    from scipy import stats

    out = tmp_path / "nb"
    result = export(REPO / "configs" / "flu_sir_negbin.yaml", out)

    def own(table):
        table["noiseFormula"] = "dispersion_in_bed / (dispersion_in_bed + I_obs)"

    _rewrite_observables(out, own)
    m = pd.read_csv(out / "measurements.tsv", sep="\t")["measurement"].to_numpy()
    expected = float(np.sum(stats.nbinom.logpmf(m, 10.0, 0.5)))  # r's nominal value is 10
    assert evaluate(out / "problem.yaml", rtol=result.rtol, atol=result.atol).llh == pytest.approx(expected, abs=1e-9)
