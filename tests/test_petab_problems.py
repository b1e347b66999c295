"""PEtab SciML problems: the suite's cases with network inputs set per condition, from formulas and from array
files, with priors, the initialization cases, Dandekar_Patterns2020, and `ude fit PROBLEM.yaml`.

References: the suite's solutions.yaml (llh or log-posterior, simulations, gradients; PEtab-dev/petab_sciml_testsuite,
commit 366a3da), its net1_ref.hdf5 (initialization), the benchmark collection's expected log-likelihoods
(sebapersson/Benchmark-Models-PEtab-SciML, commit 09634e1), scipy.stats' densities for the priors.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ude_cli.errors import ConfigError
from ude_cli.petab import evaluate, import_problem

from .test_petab import _with_event

DATA = Path(__file__).parent / "data" / "petab"
SCIML = DATA / "sciml"
INIT = DATA / "sciml_init"
DANDEKAR = DATA / "sciml_benchmark" / "Dandekar_Patterns2020"
#: the suite's cases are compared at these tolerances (bench/petab_sciml_suite.py): ReLU networks in the
#: right-hand side (036, 038) make the gradient converge slowly with the solver's tolerance
RTOL, ATOL = 1e-13, 1e-14


def run(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return evaluate(path, **kw)


def cli(*args: str):
    from typer.testing import CliRunner

    from ude_cli.cli import app

    return CliRunner().invoke(app, list(args))


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# -- the suite's cases ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["003", "007", "014", "015", "032", "033", "034", "035", "036", "037", "038", "039"])
def test_sciml_case_matches_the_suite(case):
    import h5py

    folder = SCIML / case
    solutions = yaml.safe_load((folder / "solutions.yaml").read_text())
    tight = case in ("036", "038")  # ReLU kinks in the right-hand side (the others pass at the default too)
    result = run(folder / "petab" / "problem.yaml", **({"rtol": RTOL, "atol": ATOL} if tight else {}))
    if "llh" in solutions:
        assert result.log_prior is None
        assert result.llh == pytest.approx(solutions["llh"], abs=solutions["tol_llh"])
    else:  # priors: the suite gives the log-posterior, and its gradients are of it
        assert result.log_prior is not None and result.log_prior < 0
        assert result.log_posterior == pytest.approx(solutions["log_posterior"], abs=solutions["tol_log_posterior"])
    sims = pd.read_csv(folder / solutions["simulation_files"][0], sep="\t")
    ours = {(r.observableId, r.simulationConditionId, r.time): r.simulation for r in result.simulations.itertuples()}
    assert len(ours) == len(sims)
    for r in sims.itertuples():
        assert ours[(r.observableId, r.experimentId, r.time)] == pytest.approx(r.simulation,
                                                                               abs=solutions["tol_simulations"])
    tol = solutions["tol_grad"]
    for name, file in solutions["grad_files"].items():
        if name == "mech":
            for r in pd.read_csv(folder / file, sep="\t").itertuples():
                assert result.gradient[r.parameterId] == pytest.approx(r.value, abs=tol), r.parameterId
            continue
        with h5py.File(folder / file, "r") as f:
            for layer, group in f["parameters"][name].items():
                for part in ("weight", "bias"):
                    got = np.asarray(result.gradient_networks[name][layer][part])
                    expected = np.asarray(group[part])
                    assert got.size == expected.size, (layer, part)
                    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=tol, rtol=0)


def test_inputs_from_conditions_and_array_files_become_per_experiment_constants(tmp_path):
    config = import_problem(SCIML / "038" / "petab" / "problem.yaml", tmp_path / "c038")
    cfg = yaml.safe_load(config.read_text())
    assert cfg["networks"]["net6"]["inputs"] == ["prey", "net6_input2_0", "net6_input2_1", "net6_input2_2"]
    # the array file: inputs/net6_input2/cond1 = [1, 2, 3], cond2 = [3, 2, 1]; e1 runs cond1, e2 cond2: the
    # middle value is the same in both (a constant), the others are read per experiment from data columns
    constants = cfg["model"]["constants"]
    assert constants["net6_input2_0"] == {"column": "net6_input2_0"} and constants["net6_input2_1"] == 2.0
    data = pd.read_csv(config.parent / "data.csv").groupby("experiment").first()
    assert data.loc["e1", ["net6_input2_0", "net6_input2_2"]].tolist() == [1.0, 3.0]
    assert data.loc["e2", ["net6_input2_0", "net6_input2_2"]].tolist() == [3.0, 1.0]
    config = import_problem(SCIML / "003" / "petab" / "problem.yaml", tmp_path / "c003")
    data = pd.read_csv(config.parent / "data.csv").groupby("experiment").first()
    # cond1: 10.0 and 20.0; cond2: the fixed parameters net1_input_pre1, net1_input_pre2 (nominal 1.0)
    assert data.loc["e1", ["net1_input1", "net1_input2"]].tolist() == [10.0, 20.0]
    assert data.loc["e2", ["net1_input1", "net1_input2"]].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("case", ["035", "003", "007"])
def test_formula_and_per_experiment_inputs_agree_between_the_engines(case, tmp_path):
    config = import_problem(SCIML / case / "petab" / "problem.yaml", tmp_path / "c")
    compiled = run(config)
    assert compiled.solver["engine"] == "compiled"
    cfg = yaml.safe_load(config.read_text())
    if case == "035":
        assert cfg["networks"]["net1"]["inputs"] == ["alpha + prey - 1.3", "predator"]
    cfg["solver"].update({"method": "dopri5", "engine": "torchdiffeq"})
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    torch_run = run(config)
    assert torch_run.solver["engine"] == "torchdiffeq"
    assert torch_run.llh == pytest.approx(compiled.llh, abs=1e-5)
    for pid, g in compiled.gradient.items():
        assert torch_run.gradient[pid] == pytest.approx(g, rel=1e-3), pid


def test_a_formula_input_against_finite_differences_of_its_parameter():
    # 035: net1_input1 <- prey + (alpha - 1.3): alpha reaches the llh through the network input too
    path = SCIML / "035" / "petab" / "problem.yaml"
    g = run(path).gradient["alpha"]
    h = 1e-5
    fd = (run(path, values={"alpha": 1.3 + h}).llh - run(path, values={"alpha": 1.3 - h}).llh) / (2 * h)
    assert g == pytest.approx(fd, rel=1e-5)
    # the same case with the network fed prey alone (001) differs in d llh / d alpha by the input path only
    assert abs(g - run(SCIML / "001" / "petab" / "problem.yaml").gradient["alpha"]) > 10


# -- priors -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, parameters, x, on_scale, scale, reference", [
    ("normal", (0.5, 2.0), [0.1, -1.3, 4.0], False, "lin", lambda s, x: s.norm(0.5, 2.0).logpdf(x)),
    ("laplace", (1.0, 0.5), [0.2, 1.7], False, "lin", lambda s, x: s.laplace(1.0, 0.5).logpdf(x)),
    ("log-normal", (0.3, 0.7), [0.5, 2.5], False, "lin", lambda s, x: s.lognorm(0.7, scale=math.exp(0.3)).logpdf(x)),
    ("log-laplace", (0.2, 0.4), [0.9, 3.0], False, "lin",
     lambda s, x: s.laplace(0.2, 0.4).logpdf(np.log(x)) - np.log(x)),
    ("uniform", (-1.0, 3.0), [0.0, 2.9], False, "lin", lambda s, x: s.uniform(-1.0, 4.0).logpdf(x)),
    ("cauchy", (0.0, 1.5), [0.3, -4.0], False, "lin", lambda s, x: s.cauchy(0.0, 1.5).logpdf(x)),
    ("normal", (-1.0, 0.5), [0.01, 0.3], True, "log10", lambda s, x: s.norm(-1.0, 0.5).logpdf(np.log10(x))),
    ("chisquare", (4.0,), [0.5, 3.0], False, "lin", lambda s, x: s.chi2(4.0).logpdf(x)),
    ("exponential", (3.0,), [0.5, 7.0], False, "lin", lambda s, x: s.expon(scale=3.0).logpdf(x)),
    ("gamma", (3.0, 5.0), [0.5, 12.0], False, "lin", lambda s, x: s.gamma(3.0, scale=5.0).logpdf(x)),
    ("log-uniform", (3.0, 5.0), [3.5, 4.9], False, "lin", lambda s, x: s.loguniform(3.0, 5.0).logpdf(x)),
    ("rayleigh", (3.0,), [0.5, 6.0], False, "lin", lambda s, x: s.rayleigh(scale=3.0).logpdf(x)),
    # at 0, the edge of the support: finite for these (a lower bound of 0 is the usual choice)
    ("exponential", (3.0,), [0.0], False, "lin", lambda s, x: s.expon(scale=3.0).logpdf(x)),
    ("chisquare", (2.0,), [0.0], False, "lin", lambda s, x: s.chi2(2.0).logpdf(x)),
    ("gamma", (1.0, 2.0), [0.0, 1.0], False, "lin", lambda s, x: s.gamma(1.0, scale=2.0).logpdf(x)),
])
def test_prior_log_densities_equal_scipys(kind, parameters, x, on_scale, scale, reference):
    import scipy.stats
    import torch

    from ude_cli.petab.priors import Prior, log_density

    got = float(log_density(Prior(kind, parameters, on_scale), torch.tensor(x, dtype=torch.float64), scale))
    assert got == pytest.approx(float(np.sum(reference(scipy.stats, np.asarray(x)))), rel=1e-12)


@pytest.mark.parametrize("kind, parameters, frozen", [
    ("normal", (4.0, 2.0), lambda s: s.norm(4.0, 2.0)), ("gamma", (3.0, 5.0), lambda s: s.gamma(3.0, scale=5.0)),
    ("log-normal", (0.3, 0.7), lambda s: s.lognorm(0.7, scale=math.exp(0.3))),
    ("cauchy", (3.0, 5.0), lambda s: s.cauchy(3.0, 5.0)),
])
def test_a_truncated_prior_is_scipys_truncated_density(kind, parameters, frozen):
    """Truncated to [0.5, 10]: the density divided by CDF(10) - CDF(0.5) inside, -inf outside."""
    import scipy.stats
    import torch

    from ude_cli.petab.priors import Prior, log_density

    prior = Prior(kind, parameters, truncated=(0.5, 10.0))
    d = frozen(scipy.stats)
    for x in (0.7, 5.0, 9.9):
        expected = d.logpdf(x) - math.log(d.cdf(10.0) - d.cdf(0.5))
        assert float(log_density(prior, torch.tensor([x], dtype=torch.float64))) == pytest.approx(expected, rel=1e-12)
    assert float(log_density(prior, torch.tensor([0.2], dtype=torch.float64))) == -math.inf


def test_a_value_outside_a_uniform_prior_has_log_prior_minus_infinity():
    import torch

    from ude_cli.petab.priors import Prior, log_density

    assert float(log_density(Prior("uniform", (0.0, 1.0)), torch.tensor([0.5, 1.5], dtype=torch.float64))) == -math.inf


def test_the_most_specific_network_prior_wins(tmp_path):
    # 034: net1.parameters ~ normal(0, 1), net1.parameters[layer1].weight ~ normal(0, 2)
    import scipy.stats

    config = import_problem(SCIML / "034" / "petab" / "problem.yaml", tmp_path / "c034")
    cfg = yaml.safe_load(config.read_text())
    priors = cfg["networks"]["net1"]["priors"]
    assert priors["weight0"] == {"distribution": "normal", "parameters": [0.0, 2.0], "scale": "lin"}
    assert priors["bias0"]["parameters"] == [0.0, 1.0] and priors["weight2"]["parameters"] == [0.0, 1.0]
    assert cfg["model"]["parameters"]["alpha"]["prior"] == {"distribution": "uniform", "parameters": [0.0, 15.0],
                                                            "scale": "lin"}
    # the log-prior: the three uniform(0, 15) priors plus the network's, summed here with scipy from the weights
    with np.load(config.parent / "net1.npz") as w:
        net = sum(float(scipy.stats.norm(*priors[k]["parameters"]).logpdf(w[k]).sum()) for k in priors)
    assert run(config).log_prior == pytest.approx(3 * -math.log(15.0) + net, rel=1e-12)


def test_a_prior_that_petab_does_not_define_is_refused_in_one_line(tmp_path):
    shutil.copytree(SCIML / "032", tmp_path / "c")
    table = tmp_path / "c" / "petab" / "parameters.tsv"
    text = table.read_text().replace("uniform\t0.0;15.0", "banana\t0.0;15.0", 1)
    table.write_text(text)
    result = cli("evaluate", str(tmp_path / "c" / "petab" / "problem.yaml"))
    assert result.exit_code == 3
    (line,) = error_lines(result)
    assert "parameters.tsv" in line and "prior 'banana' is not supported" in line


# -- initialization -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, arrays", [("001", ("weight0", "bias0")), ("002", ("weight0",)), ("003", ("bias0",))])
def test_initialization_numbers_in_the_parameter_table_override_the_array_file(case, arrays, tmp_path):
    import h5py

    folder = INIT / case
    tol = yaml.safe_load((folder / "solutions.yaml").read_text())["tol"]
    config = import_problem(folder / "petab" / "problem.yaml", tmp_path / "c")
    layers = json.loads((config.parent / "petab.json").read_text())["networks"]["net1"]["layers"]
    with np.load(config.parent / "net1.npz") as ours, h5py.File(folder / "net1_ref.hdf5", "r") as ref, \
            h5py.File(folder / "petab" / "net1_ps.hdf5", "r") as given:
        for k, layer in enumerate(layers):
            for part in ("weight", "bias"):
                expected = np.asarray(ref["parameters/net1"][layer][part])
                np.testing.assert_allclose(ours[f"{part}{k}"], expected, atol=tol, rtol=0)
                file_value = np.asarray(given["parameters/net1"][layer][part])
                # what the table overrides differs from the array file's values: the override is real
                assert (f"{part}{k}" in arrays) == bool(np.abs(file_value - expected).max() > tol)
    assert run(config).llh == pytest.approx(run(folder / "petab" / "problem.yaml").llh, abs=1e-9)


# -- Dandekar_Patterns2020 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("problem, key", [("train", "training"), ("validation", "validation")])
def test_dandekar_llh_matches_the_collection(problem, key, tmp_path):
    expected = yaml.safe_load((DANDEKAR / "expected_Dandekar_Patterns2020.yaml").read_text())["llh"][key]
    path = DANDEKAR / f"{problem}_Dandekar_Patterns2020.yaml"
    result = run(path)
    assert result.llh == pytest.approx(expected, abs=1e-3)
    notes: list[str] = []
    config = import_problem(path, tmp_path / "d", notes=notes)
    assert any("array file's weights are used, not the nominalValue 0 of net1_ps" in n for n in notes)
    cfg = yaml.safe_load(config.read_text())
    assert cfg["networks"]["net1"]["inputs"] == ["S/N", "I/N", "R/N"]
    assert run(config).llh == pytest.approx(result.llh, abs=1e-9)


# -- ude fit / ude check PROBLEM.yaml -----------------------------------------------------------------------------

def test_fit_and_check_take_a_petab_problem(tmp_path):
    problem = SCIML / "003" / "petab" / "problem.yaml"
    result = cli("check", str(problem))
    assert result.exit_code == 0, result.output
    assert "ok (2 states, 3 parameters, 1 network; 2 experiments" in result.output
    out = tmp_path / "run"
    result = cli("fit", str(problem), "--out", str(out), "--no-plots")
    assert result.exit_code == 0, result.output
    kept = out / "petab"
    assert {p.name for p in kept.iterdir()} == {"config.yaml", "data.csv", "petab.json", "net1.npz"}
    start = run(problem).llh
    assert run(kept / "config.yaml").llh == pytest.approx(start, abs=1e-9)  # the kept translation: the start
    # the run's inputs/ (the resolved config, the data and the starting weights copied): the same start
    assert len(list((out / "inputs").glob("net1*.npz"))) == 1
    assert run(out / "inputs" / "config.yaml").llh == pytest.approx(start, abs=1e-9)
    fitted = {p["name"]: p for p in json.loads((out / "params.json").read_text())}
    assert {"alpha", "beta", "delta"} <= set(fitted) and all(fitted[n]["init"] != fitted[n]["value"]
                                                             for n in ("alpha", "beta", "delta"))
    # the fit's log-likelihood (ude's, with the normalising constants: PEtab's) is no worse than the start's
    assert -json.loads((out / "metrics.json").read_text())["likelihood"]["nll"] >= start - 1e-6


def _with_delay(path: Path) -> None:
    import libsbml

    document = libsbml.readSBMLFromFile(str(path))
    law = document.getModel().getReaction(0).getKineticLaw()
    law.setMath(libsbml.parseL3Formula("alpha * delay(prey, 1)"))
    libsbml.writeSBMLToFile(document, str(path))


@pytest.mark.parametrize("damage, expected", [
    ("ragged", "measurements.tsv: not a readable tab-separated measurement table"),
    ("missing", "file not found"),
    ("event", "SBML event dose: a trigger other than one comparison"),
    ("delay", "delay() is not supported"),
    ("array", "condition 'cond2' is neither in a condition table nor a dataset of an array file's inputs"),
])
def test_bad_problems_fail_fit_and_check_in_one_line(damage, expected, tmp_path):
    shutil.copytree(SCIML / ("038" if damage == "array" else "003"), tmp_path / "c")
    folder = tmp_path / "c" / "petab"
    if damage == "ragged":
        with (folder / "measurements.tsv").open("a") as f:
            f.write("prey_o\te1\t0.5\t8.0\textra\tcells\n")
    elif damage == "missing":
        (folder / "observables.tsv").unlink()
    elif damage == "event":
        _with_event(folder / "lv.xml")
    elif damage == "delay":
        _with_delay(folder / "lv.xml")
    else:  # the array file loses the datasets of cond2
        import h5py

        with h5py.File(folder / "net6_input2.hdf5", "a") as f:
            del f["inputs/net6_input2/cond2"]
    out = tmp_path / "run"
    for command in (["fit", str(folder / "problem.yaml"), "--out", str(out)], ["check", str(folder / "problem.yaml")],
                    ["evaluate", str(folder / "problem.yaml")]):
        result = cli(*command)
        assert result.exit_code == 3, result.output
        lines = error_lines(result)
        assert len(lines) == 1 and expected in lines[0], result.output
        assert "Traceback" not in result.output
    assert not out.exists()


# -- Laplace noise --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transformation", ["lin", "log", "log10"])
def test_laplace_noise_equals_petabs_density_of_the_simulations(transformation, tmp_path):
    # Rahman_MBS2016 (one observable, noise parameter 1 in every row) with noiseDistribution laplace: its llh
    # computed here with numpy from the simulations (which the noise model does not change) and PEtab's density
    # of the measurement: Laplace of the transformed value, with the Jacobian of the transformation
    source = DATA / "benchmark" / "Rahman_MBS2016"
    shutil.copytree(source, tmp_path / "r")
    observables = tmp_path / "r" / "observables_Rahman_MBS2016.tsv"
    table = pd.read_csv(observables, sep="\t")
    table["noiseDistribution"] = "laplace"
    table["observableTransformation"] = transformation
    table["noiseFormula"] = "0.7"
    table.to_csv(observables, sep="\t", index=False)
    path = tmp_path / "r" / "Rahman_MBS2016.yaml"
    result = run(path)
    cfg = yaml.safe_load(import_problem(path, tmp_path / "c").read_text())
    (obs,) = cfg["observables"].values()
    assert obs["noise"]["distribution"] == ("laplace" if transformation == "lin" else "loglaplace")
    y = result.simulations["measurement"].to_numpy()
    sim = result.simulations["simulation"].to_numpy()
    b = 0.7
    if transformation == "lin":
        expected = np.sum(-np.log(2 * b) - np.abs(y - sim) / b)
    else:
        f = np.log if transformation == "log" else np.log10
        jacobian = np.log(y) + (np.log(np.log(10)) if transformation == "log10" else 0.0)  # d f(y)/dy = 1/(y ln10)
        expected = np.sum(-np.log(2 * b) - np.abs(f(y) - f(sim)) / b - jacobian)
    assert result.llh == pytest.approx(expected, abs=1e-8)


# -- the core hooks in a plain ude config: what is wrong says so ----------------------------------------------------

@pytest.mark.parametrize("change, expected", [
    (lambda c: c["networks"]["net1"]["inputs"].__setitem__(0, "alpha + prey - zeta"),
     "networks.net1.inputs[0]: unknown name 'zeta' in 'alpha + prey - zeta'"),
    (lambda c: c["networks"]["net1"]["inputs"].__setitem__(0, "alpha + prey - ("),
     "networks.net1.inputs[0]: cannot parse 'alpha + prey - ('"),
    (lambda c: c["model"]["initial"].__setitem__("prey", {"formula": "net1[0]"}),
     "model.initial.prey.formula: network 'net1' is fed states or t: an initial value may use a network whose "
     "inputs are parameters and constants only"),
])
def test_bad_formula_inputs_and_initial_networks_give_one_line(change, expected, tmp_path):
    config = import_problem(SCIML / "035" / "petab" / "problem.yaml", tmp_path / "c")
    cfg = yaml.safe_load(config.read_text())
    change(cfg)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = cli("check", str(config))
    assert result.exit_code == 3
    (line,) = error_lines(result)
    assert expected in line


def test_a_fit_with_priors_maximises_the_log_posterior_and_reports_it(tmp_path):
    problem = SCIML / "032" / "petab" / "problem.yaml"
    out = tmp_path / "run"
    result = cli("fit", str(problem), "--out", str(out), "--no-plots")
    assert result.exit_code == 0, result.output
    assert "the fit maximised the log-posterior" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    reported = metrics["log_prior"]
    assert reported["log_posterior"] == pytest.approx(-metrics["likelihood"]["nll"] + reported["log_prior"], rel=1e-12)
    start = run(problem)
    assert reported["log_posterior"] >= start.log_posterior - 1e-6  # no worse than the start
    # ude evaluate of the run's kept translation at the fitted values and weights gives the same log-prior
    fitted = {p["name"]: p["value"] for p in json.loads((out / "params.json").read_text()) if p["kind"] == "parameter"}
    kept = out / "petab"
    model = torch_load_weights(out)
    np.savez(kept / "net1.npz", **model)
    again = run(kept / "config.yaml", values=fitted)
    assert again.log_prior == pytest.approx(reported["log_prior"], rel=1e-9)
    assert again.llh == pytest.approx(-metrics["likelihood"]["nll"], abs=1e-4)


def torch_load_weights(run_dir: Path) -> dict[str, np.ndarray]:
    """The best start's network weights of a run (PyTorch layout), as ude_cli.runs.load rebuilds them."""
    from ude_cli.runs.load import load_run

    net = load_run(run_dir).model.rhs.networks["net1"]
    out = {}
    for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        out[f"weight{k}"], out[f"bias{k}"] = w[0].detach().numpy().T, b[0, 0].detach().numpy()
    return out


def test_a_normal_prior_gives_the_closed_form_map_estimate(tmp_path):
    # y_i ~ N(theta, s^2) (a constant state started at theta), theta ~ N(m, tau^2): the posterior's maximum is
    # (sum(y)/s^2 + m/tau^2) / (n/s^2 + 1/tau^2), the likelihood's the mean of y
    y = np.array([1.3, 0.7, 1.9, 1.1, 1.6, 0.4])
    s, m, tau = 0.5, 0.0, 0.3
    pd.DataFrame({"t": np.arange(len(y), dtype=float), "y": y}).to_csv(tmp_path / "d.csv", index=False)
    config = {"data": {"file": "d.csv", "time": "t"},
              "model": {"states": ["x"], "equations": {"x": "0*x"}, "initial": {"x": {"formula": "theta"}},
                        "parameters": {"theta": {"init": 0.5, "prior": {"distribution": "normal",
                                                                         "parameters": [m, tau]}}}},
              "observables": {"y": {"formula": "x", "noise": {"distribution": "normal", "sigma": s}}},
              "training": {"stages": [{"optimizer": "lbfgs", "iterations": 200}]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = cli("fit", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--no-plots")
    assert result.exit_code == 0, result.output
    fitted = {p["name"]: p["value"] for p in json.loads((tmp_path / "run" / "params.json").read_text())}
    n = len(y)
    expected = (y.sum() / s**2 + m / tau**2) / (n / s**2 + 1 / tau**2)
    assert fitted["theta"] == pytest.approx(expected, abs=1e-6)
    assert abs(expected - y.mean()) > 0.3  # the prior matters here


def test_petab_v1_objective_priors_on_the_linear_and_the_parameter_scale(tmp_path):
    # Rahman_MBS2016 (PEtab v1, log10-scaled parameters) with objectivePriorType on two rows: the log-prior is
    # scipy's normal log-density of the value, and of log10 of the value (parameterScaleNormal); the gradient
    # of the log-posterior differs from the llh's by the prior's derivative
    import scipy.stats

    shutil.copytree(DATA / "benchmark" / "Rahman_MBS2016", tmp_path / "r")
    table_path = tmp_path / "r" / "parameters_Rahman_MBS2016.tsv"
    table = pd.read_csv(table_path, sep="\t", dtype=str, keep_default_na=False)
    table["objectivePriorType"] = ""
    table["objectivePriorParameters"] = ""
    table.loc[0, ["objectivePriorType", "objectivePriorParameters"]] = ["normal", "400;50"]
    table.loc[1, ["objectivePriorType", "objectivePriorParameters"]] = ["parameterScaleNormal", "-2.5;0.5"]
    table.to_csv(table_path, sep="\t", index=False)
    without = run(DATA / "benchmark" / "Rahman_MBS2016" / "Rahman_MBS2016.yaml")
    result = run(tmp_path / "r" / "Rahman_MBS2016.yaml")
    a, b = table.loc[0, "parameterId"], table.loc[1, "parameterId"]
    xa, xb = float(table.loc[0, "nominalValue"]), float(table.loc[1, "nominalValue"])
    expected = scipy.stats.norm(400, 50).logpdf(xa) + scipy.stats.norm(-2.5, 0.5).logpdf(np.log10(xb))
    assert result.llh == pytest.approx(without.llh, abs=1e-9)
    assert result.log_prior == pytest.approx(expected, rel=1e-12)
    assert result.gradient[a] - without.gradient[a] == pytest.approx(-(xa - 400) / 50**2, rel=1e-6)
    # d/dx of log N(log10 x; m, s) = -(log10 x - m) / s^2 / (x ln 10)
    assert result.gradient[b] - without.gradient[b] == pytest.approx(
        -(np.log10(xb) + 2.5) / 0.25 / (xb * np.log(10)), rel=1e-6)


def test_check_of_a_problem_with_formula_inputs_runs_the_structural_check():
    # the structural check treats a formula input (S/N) as the names it uses (it crashed with KeyError 'S/N')
    result = cli("check", str(DANDEKAR / "train_Dandekar_Patterns2020.yaml"))
    assert result.exit_code == 0, result.output
    assert "ok (4 states, 3 parameters, 1 network; 1 experiment, 64 training time points)" in result.output
    assert "structural check: beta" in result.output


def test_a_prior_truncated_far_in_its_upper_tail():
    """normal(0, 1) on [9, 10]: the mass by the survival function, sf(9) - sf(10) (1 - CDF loses it all)."""
    import scipy.stats

    from ude_cli.likelihood.prior import log_mass

    assert log_mass("normal", (0.0, 1.0), (9.0, 10.0)) == pytest.approx(
        math.log(scipy.stats.norm.sf(9.0) - scipy.stats.norm.sf(10.0)), rel=1e-12)


def test_an_init_outside_its_priors_support_is_one_line(tmp_path):
    from ude_cli.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("data: {file: d.csv, time: t}\nmodel: {states: [x], parameters: {k: {init: 1.0, prior: "
                    "{distribution: gamma, parameters: [3, 5], truncated: [2, 10]}}}, equations: {x: -k*x}, "
                    "initial: {x: 1}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "init 1 has probability 0 under its prior gamma [3.0, 5.0] truncated to [2.0, 10.0]" in str(info.value)


def test_the_run_keeps_its_priors_so_that_its_inputs_repeat_it(tmp_path):
    """inputs/config.yaml of a fit with a prior has the prior: `ude fit inputs/config.yaml` maximises the same
    log-posterior (it dropped them), and `ude export RUN` refuses it as it refuses the config."""
    from ude_cli.api import fit
    from ude_cli.config import load_config
    from ude_cli.petab import export

    t = np.linspace(0, 3, 8)
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{math.exp(-0.7 * a) * (1 + 0.03 * (-1) ** i):.9g}\n"
                                                      for i, a in enumerate(t)))
    (tmp_path / "c.yaml").write_text(
        "data: {file: d.csv, time: t, columns: {x: x}}\nmodel: {states: [x], parameters: {k: {init: 0.5, positive: true, prior: "
        "{distribution: gamma, parameters: [2, 0.5], truncated: [0, 5]}}}, equations: {x: -k*x}, initial: {x: 1}}\n"
        "noise: {distribution: normal, sigma: 0.05}\ntraining: {stages: [{optimizer: lbfgs, iterations: 100}]}\n")
    result = fit(load_config(tmp_path / "c.yaml"))
    result.save(tmp_path / "run")
    again = fit(load_config(tmp_path / "run" / "inputs" / "config.yaml"))
    assert again.metrics["log_prior"]["log_prior"] == pytest.approx(result.metrics["log_prior"]["log_prior"],
                                                                    rel=1e-9)
    with pytest.raises(ConfigError) as info:
        export(tmp_path / "run", tmp_path / "out")
    assert "prior" in str(info.value)
