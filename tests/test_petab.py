"""PEtab import and evaluation against known answers.

References: AMICI's log-likelihoods at the nominal values (tests/data/petab/benchmark/references.yaml), the
collection's own simulations (simulatedData_*.tsv) and the log-likelihood computed here from those
simulations with PEtab's normal density (an independent calculation: numpy on the tables), and central
finite differences of the log-likelihood for the gradient.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sympy as sp
import yaml

from ude_cli.errors import ConfigError, UdeError
from ude_cli.petab import evaluate, import_problem

BENCH = Path(__file__).parent / "data" / "petab" / "benchmark"
REFERENCES = yaml.safe_load((BENCH / "references.yaml").read_text())


def problem(name: str) -> Path:
    return BENCH / name / f"{name}.yaml"


def run(name_or_path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return evaluate(problem(name_or_path) if isinstance(name_or_path, str) else name_or_path, **kw)


def llh_from_simulations(name: str) -> float:
    """PEtab's normal log-likelihood of a problem with lin observables and numeric noise parameters, from the
    collection's simulations (numpy only)."""
    meas = pd.read_csv(BENCH / name / f"measurementData_{name}.tsv", sep="\t")
    sim = pd.read_csv(BENCH / name / f"simulatedData_{name}.tsv", sep="\t")["simulation"].to_numpy()
    sigma = meas["noiseParameters"].astype(float).to_numpy()
    r = (meas["measurement"].to_numpy() - sim) / sigma
    return float(np.sum(-0.5 * np.log(2 * np.pi * sigma**2) - 0.5 * r * r))


# -- log-likelihood at the nominal values ----------------------------------------------------------------------

def test_rahman_llh_and_simulations_match_the_collection():
    result = run("Rahman_MBS2016")
    sim = pd.read_csv(BENCH / "Rahman_MBS2016" / "simulatedData_Rahman_MBS2016.tsv", sep="\t")
    np.testing.assert_allclose(result.simulations["simulation"], sim["simulation"], rtol=1e-6, atol=1e-9)
    assert result.llh == pytest.approx(llh_from_simulations("Rahman_MBS2016"), abs=1e-4)


def test_perelson_llh_and_gradient_against_finite_differences():
    result = run("Perelson_Science1996")
    assert set(result.gradient) == {"c", "delta", "sd_task0_model0_perelson1_V"}
    for pid, value in result.values.items():
        h = 1e-5 * value
        up = run("Perelson_Science1996", values={pid: value + h}).llh
        down = run("Perelson_Science1996", values={pid: value - h}).llh
        fd = (up - down) / (2 * h)
        assert result.gradient[pid] == pytest.approx(fd, rel=1e-4, abs=1e-6), pid
        # on log10 scale: d llh / d log10(x) = x ln(10) d llh / dx
        assert result.gradient_scaled[pid] == pytest.approx(value * math.log(10) * fd, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_borghans_llh_matches_amici():
    result = run("Borghans_BiophysChem1997")
    assert result.llh == pytest.approx(REFERENCES["Borghans_BiophysChem1997"]["llh"], abs=1e-3)
    sim = pd.read_csv(BENCH / "Borghans_BiophysChem1997" / "simulatedData_Borghans_BiophysChem1997.tsv", sep="\t")
    np.testing.assert_allclose(result.simulations["simulation"], sim["simulation"], rtol=1e-4)


@pytest.mark.slow
def test_boehm_stiff_llh_matches_amici_with_bdf():
    result = run("Boehm_JProteomeRes2014")
    assert result.solver["method"] == "bdf"  # solver.method auto switches to the stiff method
    assert result.llh == pytest.approx(REFERENCES["Boehm_JProteomeRes2014"]["llh"], abs=1e-3)
    sim = pd.read_csv(BENCH / "Boehm_JProteomeRes2014" / "simulatedData_Boehm_JProteomeRes2014.tsv", sep="\t")
    np.testing.assert_allclose(result.simulations["simulation"], sim["simulation"], rtol=1e-6)


@pytest.mark.slow
def test_crauste_llh_matches_the_collections_simulations():
    # AMICI's reference (-190.96522) is 1.2e-3 from the llh of the collection's own simulations (-190.96398),
    # which this matches; per-measurement noise numbers become one observable per value.
    result = run("Crauste_CellSystems2017")
    assert result.llh == pytest.approx(llh_from_simulations("Crauste_CellSystems2017"), abs=1e-4)
    assert result.llh == pytest.approx(REFERENCES["Crauste_CellSystems2017"]["llh"], abs=2e-3)


@pytest.mark.slow
def test_crauste_two_solvers_converge_and_the_reference_is_a_loose_bdf_solve(tmp_path):
    """dopri5 and BDF agree on Crauste's llh at tight tolerances; BDF at AMICI's rtol = atol = 1e-8 (how its stored
    reference was computed) is more than 1e-3 from that value, as the reference is (bench/petab_tolerances.py)."""
    config = import_problem(problem("Crauste_CellSystems2017"), tmp_path / "imported")

    def llh(method, rtol, atol):
        cfg = yaml.safe_load(config.read_text())
        cfg["solver"].update({"method": method, "rtol": rtol, "atol": atol})
        variant = config.with_name(f"{method}_{rtol:g}_{atol:g}.yaml")
        variant.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return run(variant, rtol=rtol, atol=atol).llh

    converged = llh("dopri5", 1e-12, 1e-14)
    assert llh("bdf", 1e-12, 1e-14) == pytest.approx(converged, abs=1e-7)
    loose = llh("bdf", 1e-8, 1e-8) - converged
    reference = REFERENCES["Crauste_CellSystems2017"]["llh"] - converged
    assert loose < -1e-3 and reference < -1e-3  # both below the converged value, by more than the 1e-3
    assert abs(reference) < 3 * abs(loose)


# -- import: files, and the config as ude reads it ---------------------------------------------------------------

def test_bertozzi_conditions_mapped_to_their_own_parameters(tmp_path):
    """Bertozzi_PNAS2020's condition table maps I0_, R0_ and gamma_ to a parameter per condition (I0_CA in u_CA,
    I0_NY in u_NY): imported as each value times an indicator constant the conditions set. The simulations equal
    the collection's to 1e-6 relative, the llh the one computed from them (no AMICI reference for it)."""
    folder = BENCH / "Bertozzi_PNAS2020"
    result = run("Bertozzi_PNAS2020")
    sim = pd.read_csv(folder / "simulatedData_Bertozzi_PNAS2020.tsv", sep="\t")["simulation"].to_numpy()
    np.testing.assert_allclose(result.simulations["simulation"], sim, rtol=1e-6)
    # the noise formula of each observable is one parameter (sd_I_CA, sd_I_NY) at its nominal value
    meas = pd.read_csv(folder / "measurementData_Bertozzi_PNAS2020.tsv", sep="\t")
    nominal = pd.read_csv(folder / "parameters.tsv", sep="\t").set_index("parameterId")["nominalValue"]
    noise = pd.read_csv(folder / "observables.tsv", sep="\t").set_index("observableId")["noiseFormula"]
    sigma = meas["observableId"].map(noise).map(nominal).to_numpy(dtype=float)
    r = (meas["measurement"].to_numpy() - sim) / sigma
    assert result.llh == pytest.approx(float(np.sum(-0.5 * np.log(2 * np.pi * sigma**2) - 0.5 * r * r)), abs=1e-5)
    config = yaml.safe_load(import_problem(problem("Bertozzi_PNAS2020"), tmp_path / "bz").read_text())
    assert {"I0_CA", "I0_NY", "R0_CA", "R0_NY"} <= set(config["model"]["parameters"])
    assert "I0___is1" in config["model"]["constants"]


def test_import_writes_a_config_that_evaluates_to_the_same_llh(tmp_path):
    config = import_problem(problem("Rahman_MBS2016"), tmp_path / "rahman")
    assert {p.name for p in config.parent.iterdir()} == {"config.yaml", "data.csv", "petab.json"}
    cfg = yaml.safe_load(config.read_text())
    assert cfg["model"]["t0"] == 0.0
    assert cfg["observables"]["observable_prevalence"]["noise"] == {"distribution": "normal", "sigma": 1.0}
    mapping = json.loads((config.parent / "petab.json").read_text())
    assert len(mapping["measurements"]["rows"]) == 23
    direct, via_config = run("Rahman_MBS2016"), run(config)
    assert via_config.llh == pytest.approx(direct.llh, abs=1e-9)
    assert via_config.gradient == pytest.approx(direct.gradient, rel=1e-9)


def test_log10_observable_becomes_lognormal_with_sigma_times_ln10(tmp_path):
    config = import_problem(problem("Perelson_Science1996"), tmp_path / "p")
    obs = yaml.safe_load(config.read_text())["observables"]["task0_model0_perelson1_V"]
    assert obs["noise"]["distribution"] == "lognormal"
    assert obs["noise"]["sigma"]["init"] == pytest.approx(100000 * math.log(10))


def test_import_refuses_a_non_empty_folder_and_writes_nothing_on_bad_input(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    from ude_cli.errors import RunDirError

    with pytest.raises(RunDirError):
        import_problem(problem("Rahman_MBS2016"), tmp_path / "full")
    yaml_path = copy_problem(tmp_path)
    observables = yaml_path.parent / "observables_Rahman_MBS2016.tsv"
    table = pd.read_csv(observables, sep="\t")
    table["noiseDistribution"] = "cauchy"
    table.to_csv(observables, sep="\t", index=False)
    with pytest.raises(ConfigError):
        import_problem(yaml_path, tmp_path / "cauchy")
    assert not (tmp_path / "cauchy").exists()


# -- what is not supported, or wrong: one line naming the file, exit code 3 ----------------------------------------

def copy_problem(tmp_path: Path, name: str = "Rahman_MBS2016") -> Path:
    import shutil

    target = tmp_path / name
    shutil.copytree(BENCH / name, target)
    return target / f"{name}.yaml"


def cli(*args: str):
    from typer.testing import CliRunner

    from ude_cli.cli import app

    return CliRunner().invoke(app, list(args))


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_cli_import_and_evaluate(tmp_path):
    out = tmp_path / "imported"
    result = cli("import", str(problem("Rahman_MBS2016")), "--out", str(out))
    assert result.exit_code == 0, result.output
    result = cli("evaluate", str(out / "config.yaml"), "--json", str(tmp_path / "e.json"))
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["llh"] == pytest.approx(llh_from_simulations_rahman(), abs=1e-4)
    assert len(doc["simulations"]) == 23 and set(doc["gradient"]) == set(doc["gradient_scaled"])
    assert f"log-likelihood {doc['llh']:.10g}" in result.output


def llh_from_simulations_rahman() -> float:
    meas = pd.read_csv(BENCH / "Rahman_MBS2016" / "measurementData_Rahman_MBS2016.tsv", sep="\t")
    sim = pd.read_csv(BENCH / "Rahman_MBS2016" / "simulatedData_Rahman_MBS2016.tsv", sep="\t")["simulation"]
    r = meas["measurement"].to_numpy() - sim.to_numpy()  # sigma = 1 (noiseParameters)
    return float(np.sum(-0.5 * np.log(2 * np.pi) - 0.5 * r * r))


def _with_event(path: Path) -> None:
    import libsbml

    document = libsbml.readSBMLFromFile(str(path))
    model = document.getModel()
    event = model.createEvent()
    event.setId("dose")
    event.setUseValuesFromTriggerTime(True)
    trigger = event.createTrigger()
    # triggered by two comparisons of a state's value (one at a time, or one comparison, is read:
    # tests/test_petab_test_suite.py)
    species = model.getSpecies(0).getId()
    trigger.setMath(libsbml.parseL3Formula(f"{species} > 1 && {species} < 5"))
    trigger.setInitialValue(False)
    trigger.setPersistent(True)
    libsbml.writeSBMLToFile(document, str(path))


@pytest.mark.parametrize("damage, expected", [
    ("event", "SBML event dose: a trigger other than one comparison"),
    ("missing", "file not found"),
    ("column", "lacks the column(s) noiseFormula"),
    ("cauchy", "noiseDistribution: 'cauchy' is not supported; expected one of normal, laplace"),
    ("number", "'abc' is not a number"),
    ("observable", "'nowhere' is not in the observable table"),
])
def test_bad_problems_give_one_line_and_exit_3(tmp_path, damage, expected):
    yaml_path = copy_problem(tmp_path)
    folder = yaml_path.parent
    observables = folder / "observables_Rahman_MBS2016.tsv"
    measurements = folder / "measurementData_Rahman_MBS2016.tsv"
    if damage == "event":
        _with_event(folder / "model_Rahman_MBS2016.xml")
    elif damage == "missing":
        (folder / "parameters_Rahman_MBS2016.tsv").unlink()
    elif damage == "column":
        table = pd.read_csv(observables, sep="\t").drop(columns=["noiseFormula"])
        table.to_csv(observables, sep="\t", index=False)
    elif damage == "cauchy":
        table = pd.read_csv(observables, sep="\t")
        table["noiseDistribution"] = "cauchy"
        table.to_csv(observables, sep="\t", index=False)
    elif damage in ("number", "observable"):
        table = pd.read_csv(measurements, sep="\t", dtype=str, keep_default_na=False)
        if damage == "number":
            table.loc[3, "measurement"] = "abc"
        else:
            table.loc[3, "observableId"] = "nowhere"
        table.to_csv(measurements, sep="\t", index=False)
    out = tmp_path / "out"
    for command in (["import", str(yaml_path), "--out", str(out)], ["evaluate", str(yaml_path)]):
        result = cli(*command)
        assert result.exit_code == 3, result.output
        lines = error_lines(result)
        assert len(lines) == 1 and expected in lines[0], result.output
        assert "Traceback" not in result.output
    assert not out.exists()


def test_noise_formula_of_a_state_is_refused_naming_the_observable_file(tmp_path):
    yaml_path = copy_problem(tmp_path)
    observables = yaml_path.parent / "observables_Rahman_MBS2016.tsv"
    table = pd.read_csv(observables, sep="\t")
    table["noiseFormula"] = "0.1*infected_moderate"  # a state, not the observable (0.1*prevalence is proportional)
    table.to_csv(observables, sep="\t", index=False)
    result = cli("evaluate", str(yaml_path))
    assert result.exit_code == 3
    (line,) = error_lines(result)
    assert "observables_Rahman_MBS2016.tsv: line 2: observable observable_prevalence" in line
    assert ("noiseFormula '0.1*infected_moderate' depends on infected_moderate (a state or time), other than as "
            "a + b * (the observable formula) or sqrt(a^2 + (b * (the observable formula))^2): not supported") in line


@pytest.mark.slow
def test_fiedler_noise_formulas_of_two_parameters_match_amici():
    # noiseFormula s_gel*sigma (both estimated): `sigma: {formula: ...}`; 4 scalings per observable: 8 observables
    result = run("Fiedler_BMCSystBiol2016")
    assert result.llh == pytest.approx(REFERENCES["Fiedler_BMCSystBiol2016"]["llh"], abs=1e-3)
    for pid in ("s_pErk_20140430_gel1", "sigma_pMek", "tau1"):
        v = result.values[pid]
        h = 1e-5 * v
        fd = (run("Fiedler_BMCSystBiol2016", values={pid: v + h}).llh
              - run("Fiedler_BMCSystBiol2016", values={pid: v - h}).llh) / (2 * h)
        assert result.gradient[pid] == pytest.approx(fd, rel=1e-3, abs=1e-5), pid


# -- the noise formula in a plain config: against the closed form of exponential decay ---------------------------

def test_noise_sigma_formula_against_the_closed_form(tmp_path):
    t = np.linspace(0.5, 5, 10)
    y = 2.0 * np.exp(-0.7 * t) + 0.05 * np.sin(7 * t)
    pd.DataFrame({"t": t, "y": y}).to_csv(tmp_path / "d.csv", index=False)
    config = {"data": {"file": "d.csv"}, "model": {
        "states": ["x"], "equations": {"x": "-k*x"}, "initial": {"x": 2.0}, "t0": 0.0,
        "parameters": {"k": 0.6, "a": 0.2, "b": {"init": 0.5, "positive": True}}},
        "observables": {"y": {"formula": "x", "noise": {"sigma": {"formula": "a*b"}}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run(tmp_path / "c.yaml")
    k, a, b = 0.6, 0.2, 0.5
    sigma = a * b
    r = y - 2.0 * np.exp(-k * t)
    assert result.llh == pytest.approx(np.sum(-0.5 * np.log(2 * np.pi * sigma**2) - 0.5 * (r / sigma) ** 2), abs=1e-8)
    dsigma = np.sum(-1 / sigma + r**2 / sigma**3)
    assert result.gradient["a"] == pytest.approx(dsigma * b, rel=1e-7)
    assert result.gradient["b"] == pytest.approx(dsigma * a, rel=1e-7)
    dk = np.sum(r / sigma**2 * (-t) * 2.0 * np.exp(-k * t))
    assert result.gradient["k"] == pytest.approx(dk, rel=1e-6)


# -- PEtab SciML: the suite's cases with a network in the right-hand side ------------------------------------------

SCIML = Path(__file__).parent / "data" / "petab" / "sciml"


@pytest.mark.parametrize("case", ["001", "002", "004", "005", "006", "009", "010", "012", "016", "019", "020", "021",
                                  "022", "023", "026", "029"])
def test_sciml_case_llh_simulations_and_gradient_match_the_suite(case):
    import h5py

    folder = SCIML / case
    solutions = yaml.safe_load((folder / "solutions.yaml").read_text())
    result = run(folder / "petab" / "problem.yaml")
    assert result.llh == pytest.approx(solutions["llh"], abs=solutions["tol_llh"])
    sims = pd.read_csv(folder / solutions["simulation_files"][0], sep="\t")
    ours = {(r.observableId, r.simulationConditionId, r.time): r.simulation for r in result.simulations.itertuples()}
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
                for part in ("weight", "bias"):  # a frozen array: an empty one in both
                    got = np.asarray(result.gradient_networks[name][layer][part])
                    expected = np.asarray(group[part])
                    assert got.size == expected.size, (layer, part)
                    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=tol, rtol=0)


def test_sciml_import_writes_a_network_with_the_suites_weights(tmp_path):
    import h5py

    config = import_problem(SCIML / "001" / "petab" / "problem.yaml", tmp_path / "c001")
    cfg = yaml.safe_load(config.read_text())
    assert cfg["networks"]["net1"] == {"inputs": ["prey", "predator"], "outputs": 1, "hidden": [5, 5],
                                       "activation": "tanh", "normalize": False, "weights": "net1.npz"}
    assert "net1[0]" in cfg["model"]["equations"]["predator"]  # gamma, replaced by the network's output
    with np.load(config.parent / "net1.npz") as stored, \
            h5py.File(SCIML / "001" / "petab" / "net1_ps.hdf5", "r") as f:
        np.testing.assert_array_equal(stored["weight1"], f["parameters/net1/layer2/weight"][()])
    assert run(config).llh == pytest.approx(run(SCIML / "001" / "petab" / "problem.yaml").llh, abs=1e-9)


# -- fitting an imported problem ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_boehm_fit_from_a_perturbed_start_reaches_the_reference(tmp_path):
    # the stiff benchmark (issue 15): solver.method auto -> bdf; every estimated value moved by a factor in [0.5, 2]
    from ude_cli.api import fit
    from ude_cli.config import load_config

    config = import_problem(problem("Boehm_JProteomeRes2014"), tmp_path / "boehm")
    cfg = yaml.safe_load(config.read_text())
    rng = np.random.default_rng(1)
    for spec in [*cfg["model"]["parameters"].values(), *(o["noise"]["sigma"] for o in cfg["observables"].values())]:
        spec["init"] *= rng.uniform(0.5, 2.0)
    cfg["training"] = {"warm_start": "none", "stages": [{"optimizer": "lbfgs", "iterations": 300}]}
    config.write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = fit(load_config(config))
    assert result.metrics["solver_method"] == "bdf"
    assert -result.metrics["likelihood"]["nll"] == pytest.approx(REFERENCES["Boehm_JProteomeRes2014"]["llh"], abs=1.0)


@pytest.mark.parametrize("case", ["001", "023", "033", "034", "035", "053", "054"])
def test_sciml_network_yaml_builds_the_suites_network(case):
    # ml_model_import: the network YAML and weights as ude's MLP; outputs against the suite's (atol 1e-3)
    import h5py
    import torch

    from ude_cli.petab.sciml import read_network, read_weights, to_mlp

    folder = Path(__file__).parent / "data" / "petab" / "sciml_ml" / case
    solutions = yaml.safe_load((folder / "solutions.yaml").read_text())
    chain = read_network(folder / solutions["net_file"], "net0")
    inputs = [solutions[k] for k in sorted(k for k in solutions if k.startswith("net_input"))]
    for k, (ps, out) in enumerate(zip(solutions["net_ps"], solutions["net_output"], strict=True)):
        net = to_mlp(chain, read_weights([folder / ps], chain))
        x = np.concatenate([np.asarray(h5py.File(folder / files[k], "r")["inputs/input0/data"], dtype=float).ravel()
                            for files in inputs])
        y = np.asarray(h5py.File(folder / out, "r")["outputs/output0/data"], dtype=float).ravel()
        with torch.no_grad():
            got = net(torch.tensor(x).reshape(1, 1, -1))[0, 0].numpy()
        np.testing.assert_allclose(got, y, atol=1e-3, rtol=0)


def test_sciml_network_with_another_layer_is_refused_naming_it(tmp_path):
    text = (Path(__file__).parent / "data" / "petab" / "sciml_ml" / "001" / "net.yaml").read_text()
    (tmp_path / "net.yaml").write_text(text.replace("layer_type: Linear", "layer_type: Conv1d", 1))
    from ude_cli.petab.sciml import read_network

    with pytest.raises(ConfigError, match="layer 'layer1': layer type 'Conv1d' is not supported yet"):
        read_network(tmp_path / "net.yaml", "net0")


def test_a_fixed_network_keeps_its_weights_in_a_fit(tmp_path):
    # case 016: the network's weights are not estimated (networks.net1.fixed); beta is
    from ude_cli.api import fit
    from ude_cli.config import load_config

    config = import_problem(SCIML / "016" / "petab" / "problem.yaml", tmp_path / "c016")
    cfg = yaml.safe_load(config.read_text())
    assert cfg["networks"]["net1"]["fixed"] is True
    cfg["training"] = {"warm_start": "none", "stages": [{"optimizer": "lbfgs", "iterations": 3}]}
    config.write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = fit(load_config(config))
    net = result.model.rhs.networks["net1"]
    with np.load(config.parent / "net1.npz") as stored:
        np.testing.assert_array_equal(net.weights[0][0].detach().numpy().T, stored["weight0"])
    assert result.metrics["n_parameters"]["network"] == 0


def test_a_network_in_an_observable_formula_against_the_closed_form(tmp_path):
    # y = x + U(x), U a 1-2-1 tanh network with given weights; x(t) = 2 exp(-0.7 t)
    t = np.linspace(0.5, 5, 10)
    y = 2.0 * np.exp(-0.7 * t) + 0.1 + 0.05 * np.sin(7 * t)
    pd.DataFrame({"t": t, "y": y}).to_csv(tmp_path / "d.csv", index=False)
    w0, b0, w1, b1 = np.array([[0.3], [-0.8]]), np.array([0.1, 0.2]), np.array([[0.5, 0.7]]), np.array([0.05])
    np.savez(tmp_path / "u.npz", weight0=w0, bias0=b0, weight1=w1, bias1=b1)
    config = {"data": {"file": "d.csv"}, "model": {
        "states": ["x"], "equations": {"x": "-k*x"}, "initial": {"x": 2.0}, "t0": 0.0, "parameters": {"k": 0.7}},
        "networks": {"U": {"inputs": ["x"], "hidden": [2], "normalize": False, "weights": "u.npz"}},
        "observables": {"y": {"formula": "x + U", "noise": {"sigma": 0.1}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run(tmp_path / "c.yaml")
    x = 2.0 * np.exp(-0.7 * t)
    mu = x + (w1 @ np.tanh(w0 @ x[None, :] + b0[:, None]) + b1[:, None])[0]
    expected = np.sum(-0.5 * np.log(2 * np.pi * 0.01) - 0.5 * ((y - mu) / 0.1) ** 2)
    assert result.llh == pytest.approx(expected, abs=1e-8)
    np.testing.assert_allclose(result.simulations["simulation"], mu, rtol=1e-9)
    # d llh / d b1 = sum (y - mu) / sigma^2
    assert result.gradient_networks["U"]["layer1"]["bias"][0] == pytest.approx(np.sum((y - mu) / 0.01), rel=1e-7)


def test_frozen_arrays_follow_the_most_specific_parameter_row(tmp_path):
    # 023: net1_layer1 (the whole first layer) is not estimated; 026: only its weight
    for case, frozen in (("023", ["weight0", "bias0"]), ("026", ["weight0"])):
        config = import_problem(SCIML / case / "petab" / "problem.yaml", tmp_path / case)
        assert yaml.safe_load(config.read_text())["networks"]["net1"]["frozen"] == frozen


@pytest.mark.parametrize("engine", ["compiled", "torchdiffeq"])
def test_a_parameter_as_a_network_input_both_engines_and_finite_differences(tmp_path, engine):
    # dx/dt = -k*x + U(x, a): a shared parameter fed to the network; llh equal in both engines, gradient in a
    # against a central difference
    t = np.linspace(0.5, 5, 10)
    y = 2.0 * np.exp(-0.7 * t) + 0.05 * np.sin(7 * t)
    pd.DataFrame({"t": t, "y": y}).to_csv(tmp_path / "d.csv", index=False)
    np.savez(tmp_path / "u.npz", weight0=np.array([[0.3, -0.5], [-0.8, 0.4]]), bias0=np.array([0.1, 0.2]),
             weight1=np.array([[0.5, 0.7]]), bias1=np.array([0.05]))
    config = {"data": {"file": "d.csv"}, "model": {
        "states": ["x"], "equations": {"x": "-k*x + U"}, "initial": {"x": 2.0}, "t0": 0.0,
        "parameters": {"k": 0.7, "a": 0.4}},
        "networks": {"U": {"inputs": ["x", "a"], "hidden": [2], "normalize": False, "weights": "u.npz"}},
        "observables": {"y": {"formula": "x", "noise": {"sigma": 0.1}}}, "solver": {"engine": engine}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run(tmp_path / "c.yaml")
    h = 1e-6
    fd = (run(tmp_path / "c.yaml", values={"a": 0.4 + h}).llh - run(tmp_path / "c.yaml", values={"a": 0.4 - h}).llh) / (2 * h)
    assert result.gradient["a"] == pytest.approx(fd, rel=1e-5)
    config["solver"]["engine"] = "compiled" if engine == "torchdiffeq" else "torchdiffeq"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(config))
    assert run(tmp_path / "other.yaml").llh == pytest.approx(result.llh, abs=1e-7)


# -- SBML features against a closed form ---------------------------------------------------------------------------

def _write_sbml(path: Path) -> None:
    """S (concentration in compartment V = 2) decays by reaction R with the kinetic law f(V*k*S), f a function
    definition and k a local parameter (0.5): dS/dt = -0.5 S, S(0) = s0 by an initial assignment; p follows the
    rate rule dp/dt = -r p; q = 2*S by an assignment rule."""
    import libsbml

    doc = libsbml.SBMLDocument(3, 2)
    model = doc.createModel()
    c = model.createCompartment()
    c.setId("V"), c.setSize(2.0), c.setConstant(True)
    for sid, value, constant in (("s0", 3.0, True), ("r", 0.3, True), ("p", 1.5, False), ("q", 0.0, False)):
        par = model.createParameter()
        par.setId(sid), par.setValue(value), par.setConstant(constant)
    s = model.createSpecies()
    s.setId("S"), s.setCompartment("V"), s.setInitialConcentration(1.0), s.setHasOnlySubstanceUnits(False)
    s.setBoundaryCondition(False), s.setConstant(False)
    f = model.createFunctionDefinition()
    f.setId("f"), f.setMath(libsbml.parseL3Formula("lambda(x, x)"))
    reaction = model.createReaction()
    reaction.setId("R"), reaction.setReversible(False)
    ref = reaction.createReactant()
    ref.setSpecies("S"), ref.setStoichiometry(1.0), ref.setConstant(True)
    law = reaction.createKineticLaw()
    local = law.createLocalParameter()
    local.setId("k"), local.setValue(0.5)
    law.setMath(libsbml.parseL3Formula("f(V*k*S)"))
    ia = model.createInitialAssignment()
    ia.setSymbol("S"), ia.setMath(libsbml.parseL3Formula("s0"))
    rate = model.createRateRule()
    rate.setVariable("p"), rate.setMath(libsbml.parseL3Formula("-r*p"))
    rule = model.createAssignmentRule()
    rule.setVariable("q"), rule.setMath(libsbml.parseL3Formula("2*S"))
    libsbml.writeSBMLToFile(doc, str(path))


def test_sbml_reactions_rules_and_assignments_against_the_closed_form(tmp_path):
    _write_sbml(tmp_path / "model.xml")
    t = np.array([0.5, 1.0, 2.0, 4.0])
    q_true, p_true = 2 * 3.0 * np.exp(-0.5 * t), 1.5 * np.exp(-0.3 * t)
    rows = [("obs_q", tt, v) for tt, v in zip(t, q_true + 0.01, strict=True)]
    rows += [("obs_p", tt, v) for tt, v in zip(t, p_true - 0.02, strict=True)]
    pd.DataFrame([{"observableId": o, "simulationConditionId": "c", "measurement": m, "time": tt}
                  for o, tt, m in rows]).to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    pd.DataFrame({"observableId": ["obs_q", "obs_p"], "observableFormula": ["q", "p"],
                  "noiseFormula": ["0.1", "sd_p"]}).to_csv(tmp_path / "o.tsv", sep="\t", index=False)
    pd.DataFrame({"conditionId": ["c"]}).to_csv(tmp_path / "c.tsv", sep="\t", index=False)
    pd.DataFrame({"parameterId": ["r", "sd_p"], "parameterScale": ["log10", "lin"], "lowerBound": [0.01, 0.001],
                  "upperBound": [10, 1], "nominalValue": [0.3, 0.05], "estimate": [1, 1]}).to_csv(
        tmp_path / "p.tsv", sep="\t", index=False)
    (tmp_path / "problem.yaml").write_text(yaml.safe_dump({
        "format_version": 1, "parameter_file": "p.tsv", "problems": [{
            "sbml_files": ["model.xml"], "condition_files": ["c.tsv"], "measurement_files": ["m.tsv"],
            "observable_files": ["o.tsv"]}]}))
    result = run(tmp_path / "problem.yaml")
    np.testing.assert_allclose(result.simulations["simulation"], [*q_true, *p_true], rtol=1e-8)
    sigma = np.array([0.1] * 4 + [0.05] * 4)
    r = np.array([0.01] * 4 + [-0.02] * 4)
    assert result.llh == pytest.approx(np.sum(-0.5 * np.log(2 * np.pi * sigma**2) - 0.5 * (r / sigma) ** 2), abs=1e-6)
    # d llh / d r: only p depends on r: dp/dr = -t p
    dr = np.sum((p_true - 0.02 - p_true) / 0.05**2 * (-t * p_true))
    assert result.gradient["r"] == pytest.approx(dr, rel=1e-5)


def test_ids_starting_with_an_underscore_get_a_name_the_language_takes():
    """SBML ids such as SalazarCavazos_MBoC2020's ``_rateLaw1`` start with '_', which the equation language refuses;
    they become ``u_rateLaw1``, with more underscores where that meets another id."""
    from types import SimpleNamespace

    from ude_cli.expressions import parse_expression
    from ude_cli.petab.convert import _names

    fake = SimpleNamespace(sbml=SimpleNamespace(kinds={"_k": "parameter", "u_k": "parameter", "x": "species"}),
                           parameters={"_rateLaw1": {}, "lambda": {}})
    names = _names(fake)
    assert names["_rateLaw1"] == "u_rateLaw1" and names["u_k"] == "u_k" and names["_k"] == "u_k_"
    assert names["lambda"] == "lambda_" and names["x"] == "x"
    assert len(set(names.values())) == len(names)
    parse_expression(" + ".join(v for k, v in names.items() if k != "time"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Bruno_JExpBot2016", "Elowitz_Nature2000", "Fujita_SciSignal2010",
                                  "Schwen_PONE2014", "Sneyd_PNAS2002"])
def test_problems_vendored_after_the_first_six_match_amici(name):
    """Five problems not looked at while the importer was written, against AMICI's references: Schwen measures
    some conditions at a single time (it was refused before: an experiment needed two); Fujita's EGF input is an
    SBML piecewise of time (refused before: imported as where(t <= EGF_end, ..., 0)); Elowitz, Fujita, Schwen and
    Sneyd are stiff (BDF)."""
    result = run(name)
    assert result.llh == pytest.approx(REFERENCES[name]["llh"], abs=1e-3)


@pytest.mark.slow
def test_laske_llh_equals_the_one_from_the_collections_simulations():
    """Laske_PLOSComputBiol2019's FracNucInt observables are ratios of states that are all 0 at t0, where only
    IntNucOffset is measured: that 0/0 made the llh NaN. The llh computed with numpy from the collection's own
    simulations is -315.9059105 (no AMICI reference)."""
    name = "Laske_PLOSComputBiol2019"
    result = run(name)
    assert np.isfinite(list(result.gradient.values())).all()
    folder = BENCH / name
    meas = pd.read_csv(folder / f"measurementData_{name}.tsv", sep="\t")
    sim = pd.read_csv(folder / f"simulatedData_{name}.tsv", sep="\t")
    obs = pd.read_csv(folder / f"observables_{name}.tsv", sep="\t").set_index("observableId")
    nominal = pd.read_csv(folder / f"parameters_{name}.tsv", sep="\t").set_index("parameterId")["nominalValue"]
    keys = ["observableId", "simulationConditionId", "time"]
    meas, sim = (f.sort_values(keys, kind="stable").reset_index(drop=True) for f in (meas, sim))
    total = 0.0
    for row, s in zip(meas.itertuples(), sim["simulation"], strict=True):
        o = obs.loc[row.observableId]
        factor = float(o.noiseFormula.split(" * ")[0]) if " * " in o.noiseFormula else 1.0
        sigma = factor * float(nominal[row.noiseParameters])
        if o.observableTransformation == "log":
            r = (math.log(row.measurement) - math.log(s)) / sigma
            total += -0.5 * math.log(2 * math.pi * sigma**2) - math.log(row.measurement) - 0.5 * r * r
        else:
            total += -0.5 * math.log(2 * math.pi * sigma**2) - 0.5 * ((row.measurement - s) / sigma) ** 2
    assert result.llh == pytest.approx(total, abs=1e-6)


def _add_sbml_parameter(path: Path, pid: str, value: float) -> None:
    import libsbml

    document = libsbml.readSBMLFromFile(str(path))
    parameter = document.getModel().createParameter()
    parameter.setId(pid)
    parameter.setValue(value)
    parameter.setConstant(True)
    libsbml.writeSBMLToFile(document, str(path))


def _add_parameter_row(folder: Path, pid: str, nominal: float, lower: float = 0.1, upper: float = 10.0) -> None:
    path = folder / "parameters_Rahman_MBS2016.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    row = {"parameterId": pid, "parameterScale": "log10", "lowerBound": repr(lower), "upperBound": repr(upper),
           "nominalValue": repr(nominal), "estimate": "1"}
    pd.concat([table, pd.DataFrame([row])]).to_csv(path, sep="\t", index=False)


def test_an_id_starting_with_an_underscore_in_an_observable_formula(tmp_path):
    """An SBML id such as Lang_PLOSComputBiol2024's ``_Nuc__CCNA_CDKN1A_B_`` in an observable formula is read
    under an alias (never sympify'd text) and is the same quantity as in the model."""
    from ude_cli.petab.language import parse_formula

    expr = parse_formula("_a + 2*_b^2 + u_a")  # u_a is taken: _a's alias gets another underscore
    assert expr == sp.Symbol("_a") + 2 * sp.Symbol("_b") ** 2 + sp.Symbol("u_a")
    from ude_cli.expressions import ExpressionError

    with pytest.raises(ExpressionError, match=r"'_a \+'"):  # the error quotes the user's text, not the aliases
        parse_formula("_a +")
    with pytest.raises(ExpressionError) as info:
        parse_formula("_x ? 1")
    assert "u_x" not in info.value.message and "u_x" not in (info.value.hint or "")
    yaml_path = copy_problem(tmp_path)
    folder = yaml_path.parent
    _add_sbml_parameter(folder / "model_Rahman_MBS2016.xml", "_one", 1.0)
    observables = folder / "observables_Rahman_MBS2016.tsv"
    table = pd.read_csv(observables, sep="\t", dtype=str, keep_default_na=False)
    table["observableFormula"] = "_one * (" + table["observableFormula"] + ")"
    table.to_csv(observables, sep="\t", index=False)
    assert evaluate(yaml_path).llh == pytest.approx(evaluate(problem("Rahman_MBS2016")).llh, abs=1e-9)


def test_a_nominal_value_outside_its_bounds_is_evaluated_as_the_table_says(tmp_path):
    """Lang_PLOSComputBiol2024 has estimated parameters of nominal value 0 on log scale (bounds [1e-24, ...]): the
    reference llh is at the nominal values, so `ude evaluate` uses them; the fit starts inside the bounds."""
    yaml_path = copy_problem(tmp_path)
    folder = yaml_path.parent
    path = folder / "parameters_Rahman_MBS2016.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    nominal = float(table.loc[1, "nominalValue"])
    table.loc[1, "lowerBound"] = repr(nominal * 2)  # the nominal value is now below its lower bound
    table.to_csv(path, sep="\t", index=False)
    assert evaluate(yaml_path).llh == pytest.approx(evaluate(problem("Rahman_MBS2016")).llh, abs=1e-9)
    notes: list[str] = []
    config = import_problem(yaml_path, tmp_path / "out", notes=notes)
    pid = table.loc[1, "parameterId"]
    assert any(f"parameter {pid}: its nominalValue" in n and "lies outside its bounds" in n for n in notes), notes
    spec = yaml.safe_load(config.read_text())["model"]["parameters"][pid]
    assert spec["bounds"][0] < spec["init"] < spec["bounds"][1]
    table.loc[1, "upperBound"] = repr(nominal)  # lower above upper: a malformed table
    table.to_csv(path, sep="\t", index=False)
    with pytest.raises(UdeError, match="lowerBound .* is not below upperBound"):
        evaluate(yaml_path)


def test_an_estimated_parameter_nothing_depends_on(tmp_path):
    """A model parameter that no formula depends on (Oliveira_NatCommun2021's beta_2, removed by its conditions) is
    evaluated with gradient 0 and a note; a parameter table row naming nothing in the model is still an error."""
    yaml_path = copy_problem(tmp_path)
    folder = yaml_path.parent
    _add_sbml_parameter(folder / "model_Rahman_MBS2016.xml", "k_spare", 2.0)
    _add_parameter_row(folder, "k_spare", 2.0)
    result = evaluate(yaml_path)
    assert result.llh == pytest.approx(evaluate(problem("Rahman_MBS2016")).llh, abs=1e-9)
    assert result.gradient["k_spare"] == 0.0
    notes: list[str] = []
    import_problem(yaml_path, tmp_path / "out", notes=notes)
    assert any("parameter k_spare is estimated, but no equation" in n for n in notes), notes
    _add_parameter_row(folder, "k_typo", 2.0)
    with pytest.raises(UdeError, match="parameter k_typo is estimated but used nowhere"):
        evaluate(yaml_path)


def _rahman_noise(tmp_path: Path, formula: str, parameters: str) -> Path:
    yaml_path = copy_problem(tmp_path)
    folder = yaml_path.parent
    observables = folder / "observables_Rahman_MBS2016.tsv"
    table = pd.read_csv(observables, sep="\t", dtype=str, keep_default_na=False)
    table["noiseFormula"] = formula
    table.to_csv(observables, sep="\t", index=False)
    measurements = folder / "measurementData_Rahman_MBS2016.tsv"
    table = pd.read_csv(measurements, sep="\t", dtype=str, keep_default_na=False)
    table["noiseParameters"] = parameters
    table.to_csv(measurements, sep="\t", index=False)
    return yaml_path


@pytest.mark.parametrize("formula, parameters, sd", [
    ("noiseParameter1_observable_prevalence + noiseParameter2_observable_prevalence * prevalence", "0.2;0.5",
     lambda s: 0.2 + 0.5 * s),
    ("noiseParameter1_observable_prevalence * prevalence", "0.5", lambda s: 0.5 * s),
    ("sqrt(noiseParameter1_observable_prevalence^2 + (noiseParameter2_observable_prevalence * prevalence)^2)",
     "0.2;0.5", lambda s: np.sqrt(0.2**2 + (0.5 * s) ** 2)),
])
def test_a_noise_formula_of_the_observable_is_combined_or_proportional_error(tmp_path, formula, parameters, sd):
    """PEtab's a + b * (observable formula) and b * (observable formula) (Raia_CancerResearch2011, Armistead_
    CellDeathDis2024) are ude's combined and proportional normal errors: the llh from the collection's simulations
    with sigma = a + b * simulation."""
    yaml_path = _rahman_noise(tmp_path, formula, parameters)
    meas = pd.read_csv(yaml_path.parent / "measurementData_Rahman_MBS2016.tsv", sep="\t")
    sim = pd.read_csv(yaml_path.parent / "simulatedData_Rahman_MBS2016.tsv", sep="\t")["simulation"].to_numpy()
    sigma = sd(sim)
    expected = float(np.sum(-0.5 * np.log(2 * np.pi * sigma**2) - 0.5 * ((meas["measurement"] - sim) / sigma) ** 2))
    assert evaluate(yaml_path).llh == pytest.approx(expected, abs=1e-3)  # the collection's simulations: 6 digits
    config = yaml.safe_load(import_problem(yaml_path, tmp_path / "out").read_text())
    noise = config["observables"]["observable_prevalence"]["noise"]
    assert noise["error"] == ("combined2" if "sqrt" in formula else "combined" if ";" in parameters else "proportional")


def test_estimated_combined_error_parameters_and_their_gradient(tmp_path):
    yaml_path = _rahman_noise(tmp_path, "noiseParameter1_observable_prevalence + noiseParameter2_observable_prevalence"
                                        " * prevalence", "sd_abs;sd_rel")
    _add_parameter_row(yaml_path.parent, "sd_abs", 0.2, 1e-3, 10.0)
    _add_parameter_row(yaml_path.parent, "sd_rel", 0.5, 1e-3, 10.0)
    config = yaml.safe_load(import_problem(yaml_path, tmp_path / "out").read_text())
    noise = config["observables"]["observable_prevalence"]["noise"]
    assert noise["error"] == "combined" and noise["sigma"]["init"] == 0.2 and noise["sigma_rel"]["init"] == 0.5
    result = evaluate(yaml_path)
    for pid, value in (("sd_abs", 0.2), ("sd_rel", 0.5)):
        h = 1e-6
        up, down = (evaluate(yaml_path, values={pid: value + s}).llh for s in (h, -h))
        assert result.gradient[pid] == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_a_noise_formula_of_part_of_the_observable_is_refused(tmp_path):
    """noise = a + b * x1 for the observable x1 + x2 is no error model of the observable: refused in one line (it
    used to come out as a + b * (x1 + x2) - b * x2, a formula of a state the config then could not resolve)."""
    yaml_path = _rahman_noise(tmp_path, "noiseParameter1_observable_prevalence + noiseParameter2_observable_prevalence"
                                        " * infected_moderate", "0.2;0.5")
    observables = yaml_path.parent / "observables_Rahman_MBS2016.tsv"
    table = pd.read_csv(observables, sep="\t", dtype=str, keep_default_na=False)
    table["observableFormula"] = "infected_moderate + infected_weak"
    table.to_csv(observables, sep="\t", index=False)
    with pytest.raises(ConfigError, match=r"depends on infected_moderate \(a state or time\), other than as a \+ b"):
        evaluate(yaml_path)


def test_an_error_model_is_looked_for_quickly_in_a_large_formula(tmp_path):
    """sqrt(a^2 + b^2 y^2 + y) of a sum of Hill terms is refused at once (sympy's simplify took minutes on such
    formulas; sqrt(a^2 + b^2 y^2) itself is combined2 error)."""
    hill = " + ".join(f"{s}/(1 + {s})" for s in ("infected_moderate", "infected_weak", "infected_normal",
                                                  "treated_moderate", "treated_weak"))
    yaml_path = _rahman_noise(tmp_path, f"sqrt(noiseParameter1_observable_prevalence^2 + "
                                        f"noiseParameter2_observable_prevalence^2 * ({hill})^2 + {hill})", "0.2;0.5")
    observables = yaml_path.parent / "observables_Rahman_MBS2016.tsv"
    table = pd.read_csv(observables, sep="\t", dtype=str, keep_default_na=False)
    table["observableFormula"] = hill
    table.to_csv(observables, sep="\t", index=False)
    with pytest.raises(ConfigError, match=r"other than as a \+ b \* \(the observable formula\) or sqrt"):
        evaluate(yaml_path)
    table = pd.read_csv(observables, sep="\t", dtype=str, keep_default_na=False)  # without the extra term: combined2
    table["noiseFormula"] = (f"sqrt(noiseParameter1_observable_prevalence^2 + "
                             f"noiseParameter2_observable_prevalence^2 * ({hill})^2)")
    table.to_csv(observables, sep="\t", index=False)
    config = yaml.safe_load(import_problem(yaml_path, tmp_path / "out").read_text())
    assert config["observables"]["observable_prevalence"]["noise"]["error"] == "combined2"


def test_a_positive_parameter_of_nominal_value_0_and_lower_bound_0(tmp_path):
    yaml_path = copy_problem(tmp_path)
    path = yaml_path.parent / "parameters_Rahman_MBS2016.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    table.loc[1, ["lowerBound", "nominalValue"]] = ["0", "0"]
    table.to_csv(path, sep="\t", index=False)
    spec = yaml.safe_load(import_problem(yaml_path, tmp_path / "out").read_text())["model"]["parameters"][
        table.loc[1, "parameterId"]]
    assert spec["init"] == pytest.approx(min(1.0, float(table.loc[1, "upperBound"]) / 10))
    assert math.isfinite(evaluate(yaml_path).llh)


def test_another_noise_formula_of_a_state_is_refused_in_one_line(tmp_path):
    yaml_path = _rahman_noise(tmp_path, "noiseParameter1_observable_prevalence * prevalence^2", "0.5")
    with pytest.raises(ConfigError, match=r"depends on infected_moderate \(a state or time\), other than as a \+ b \* "):
        evaluate(yaml_path)


def _llh_from_simulations_with_error_model(name: str) -> float:
    """PEtab's normal llh from the collection's simulations with sigma = a + b * simulation (``a;b``) or
    b * simulation (one noise parameter), the parameters' nominal values: numpy only."""
    meas = pd.read_csv(BENCH / name / f"measurementData_{name}.tsv", sep="\t")
    sim = pd.read_csv(BENCH / name / f"simulatedData_{name}.tsv", sep="\t")
    if "simulationConditionId" in sim.columns:  # Armistead's rows are in another order: match them
        key = ["observableId", "simulationConditionId", "time"]
        for df in (meas, sim):
            df["k"] = df.groupby(key).cumcount()
        meas = meas.merge(sim[[*key, "k", "simulation"]], on=[*key, "k"])
    else:  # Raia's older table: the measurement table's rows, in its order
        meas["simulation"] = sim["simulation"].to_numpy()
    nominal = pd.read_csv(BENCH / name / f"parameters_{name}.tsv", sep="\t").set_index("parameterId")["nominalValue"]

    def value(cell: str) -> float:
        try:
            return float(cell)
        except ValueError:
            return float(nominal[cell])

    total = 0.0
    for cells, y, m in zip(meas["noiseParameters"].astype(str), meas["measurement"], meas["simulation"], strict=True):
        p = [value(c) for c in cells.split(";")]
        sigma = p[0] + p[1] * m if len(p) == 2 else p[0] * m
        total += -0.5 * math.log(2 * math.pi * sigma**2) - 0.5 * ((y - m) / sigma) ** 2
    return total


@pytest.mark.slow
@pytest.mark.parametrize("name, tolerance", [("Armistead_CellDeathDis2024", 1e-6), ("Raia_CancerResearch2011", 1e-4)])
def test_noise_formulas_of_the_observable_match_the_collections_simulations(name, tolerance):
    """Raia's simulations are given to 4 to 6 digits (3.7e-5 in the llh), Armistead's to about 1e-8."""
    assert run(name).llh == pytest.approx(_llh_from_simulations_with_error_model(name), abs=tolerance)


@pytest.mark.slow
def test_oliveira_switch_day_gradient_is_the_llhs_own_central_difference():
    """Oliveira_NatCommun2021: the transmission changes at the estimated day t_1; the solvers' gradient of t_1 is 0
    (a branch), evaluate's is a finite difference, here against central differences of the llh itself."""
    result = run("Oliveira_NatCommun2021")
    assert result.finite_differences == ["t_1"]
    t1 = result.values["t_1"]
    up, down = (run("Oliveira_NatCommun2021", values={"t_1": t1 + s}).llh for s in (1e-3, -1e-3))
    expected = (up - down) / 2e-3
    assert abs(expected) > 1e5
    assert result.gradient["t_1"] == pytest.approx(expected, rel=1e-3)
    assert result.gradient["beta_2"] == 0.0  # removed from every formula by beta_2_multiplier = 0
