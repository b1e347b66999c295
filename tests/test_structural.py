"""The structural check (ude_cli/identifiability/structural.py): which learned parameters a network can
imitate, decided from the equations before fitting. Known answers: each case below is small enough to
decide by hand (the reasoning is in the test's docstring)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import lv_truth
from tests.helpers import problem, write_csv
from ude_cli.cli import app
from ude_cli.identifiability.structural import structural_check

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def verdicts(raw, directory) -> dict[str, str]:
    return {f.parameter: f.verdict for f in structural_check(problem(raw, directory))}


def findings(raw, directory):
    return {f.parameter: f for f in structural_check(problem(raw, directory))}


@pytest.fixture
def cultures(tmp_path):
    """Two logistic cultures (r = 0.8, K = 100) from N0 = 5 and 20, noiseless."""
    t = np.linspace(0, 12, 13)
    rows = [(c, float(a), 100 / (1 + (100 / n0 - 1) * np.exp(-0.8 * a))) for c, n0 in (("A", 5.0), ("B", 20.0))
            for a in t]
    write_csv(tmp_path / "cultures.csv", "culture,t,N", rows)
    return dict(file="cultures.csv", time="t", experiment="culture", columns={"N": "N"})


@pytest.fixture
def lv3(tmp_path):
    """Three Lotka-Volterra experiments from different starts (oscillating: no state is monotone)."""
    t = np.linspace(0, 10, 41)
    rows = []
    for name, u0 in (("e1", (0.44, 4.6)), ("e2", (1.0, 1.0)), ("e3", (2.0, 0.5))):
        rows += [(name, float(a), float(x), float(y)) for a, (x, y) in zip(t, lv_truth(t, u0=u0), strict=True)]
    write_csv(tmp_path / "lv3.csv", "run,t,prey,predator", rows)
    return dict(file="lv3.csv", time="t", experiment="run", columns={"x": "prey", "y": "predator"})


def lv_model(data, equations, parameters, networks, **model):
    return dict(data=data, model=dict(states=["x", "y"], parameters=parameters, equations=equations, **model),
                networks=networks)


# -- the measured cases of issue 14, re-created -----------------------------------------------------

def test_builtin_logistic_with_a_correction_on_n_flags_r_and_k(cultures, tmp_path):
    """dN/dt = r*N*(1 - N/K) + U(N): a change of r or K changes the right-hand side by a function of N
    alone, which U(N) can add: neither is told from the network."""
    raw = dict(data=cultures, model=dict(builtin="logistic", corrections={"N": "U"}), networks={"U": {"inputs": ["N"]}})
    found = findings(raw, tmp_path)
    assert {p: f.verdict for p, f in found.items()} == {"r": "imitable", "K": "imitable"}
    assert found["r"].line == ("r (in dN/dt: r*N*(1 - N/K)) can be imitated by U(N): the data cannot tell r from "
                               "the network")
    assert found["K"].network == "U" and found["K"].network_inputs == ["N"]
    assert any("fixed: true" in r for r in found["r"].remedies)
    assert any("ude discover" in r for r in found["r"].remedies)
    # U has no other input to drop: the remedy offered is a network of t, which two cultures tell apart
    assert any("inputs: [t]" in r for r in found["r"].remedies)


def test_logistic_with_a_learned_harvesting_term_flags_r_and_k(cultures, tmp_path):
    """dN/dt = r*N*(1 - N/K) - H(N): the harvest sees N, so it can take over the growth term."""
    raw = dict(data=cultures, model=dict(states=["N"], parameters={"r": 0.5, "K": 80.0},
                                         equations={"N": "r*N*(1 - N/K) - H"}), networks={"H": {"inputs": ["N"]}})
    assert verdicts(raw, tmp_path) == {"r": "imitable", "K": "imitable"}


def test_a_harvest_of_t_alone_cannot_imitate_growth_across_cultures(cultures, tmp_path):
    """H(t) is one function of time for both cultures, whose N differ at the same t: it cannot produce
    r*N*(1 - N/K). With one culture it can (along one trajectory N is a function of t)."""
    model = dict(states=["N"], parameters={"r": 0.5, "K": 80.0}, equations={"N": "r*N*(1 - N/K) - H"})
    raw = dict(data=cultures, model=model, networks={"H": {"inputs": ["t"]}})
    found = findings(raw, tmp_path)
    assert {p: f.verdict for p, f in found.items()} == {"r": "not_imitable", "K": "not_imitable"}
    assert "changes with N, which no network there sees (H(t)), as far as the experiments' trajectories differ " \
           "at the same times (H sees t)" in found["r"].line
    one = dict(raw, data=dict(cultures, file="one.csv", experiment=None))
    write_csv(tmp_path / "one.csv", "t,N", [(float(a), 100 / (1 + 19 * np.exp(-0.8 * a))) for a in range(13)])
    found = findings(one, tmp_path)
    assert found["r"].verdict == "imitable"
    assert "H sees t: along one experiment every state is a function of it" in found["r"].line


def test_lotka_volterra_alpha_and_death_rate_with_a_network_on_both_states(lv3, tmp_path):
    """The built-in LV with corrections U[0], U[1] of (x, y), alpha and gamma learned: alpha*x and
    -gamma*y are functions of (x, y), which U sees."""
    raw = dict(data=lv3, model=dict(builtin="lotka_volterra", corrections={"x": "U[0]", "y": "U[1]"},
                                    parameters={"alpha": 1.0, "gamma": 1.0, "beta": {"init": 0.9, "fixed": True},
                                                "delta": {"init": 1.8, "fixed": True}}),
               networks={"U": {"inputs": ["x", "y"], "outputs": 2}})
    found = findings(raw, tmp_path)
    assert {p: f.verdict for p, f in found.items()} == {"alpha": "imitable", "gamma": "imitable"}
    assert found["gamma"].line == ("gamma (in dy/dt: -gamma*y) can be imitated by U[1](x, y): the data cannot tell "
                                   "gamma from the network")
    # a factor -gamma*y lacks, x, whose data come near 0 (down to 0.012 against 2.3)
    assert any("x*y*U[1]" in r and "unbounded where x = 0: its data span [0.0118, 2.34]" in r
               for r in found["gamma"].remedies)


def test_a_death_rate_whose_network_does_not_see_that_state_is_not_flagged(lv3, tmp_path):
    """dy/dt = -gamma*y + delta*x*y + V(x): V cannot produce y (y is no function of x across
    oscillating experiments), nor x*y; dx/dt's network does not matter for gamma."""
    raw = lv_model(lv3, {"x": "1.3*x + U", "y": "-gamma*y + delta*x*y + V"}, {"gamma": 1.0, "delta": 1.0},
                   {"U": {"inputs": ["x", "y"]}, "V": {"inputs": ["x"]}})
    found = findings(raw, tmp_path)
    assert {p: f.verdict for p, f in found.items()} == {"gamma": "not_imitable", "delta": "not_imitable"}
    assert "its term changes with y, which no network there sees (V(x))" in found["gamma"].line
    assert not found["gamma"].flagged and found["gamma"].remedies == []


# -- the rules, one at a time -------------------------------------------------------------------------

def test_a_network_multiplied_by_a_factor_the_term_lacks(tmp_path):
    """x*y*U(x, y) imitates -k*x only as U + k/y, unbounded at y = 0: where the data come near y = 0 it is
    not decided; where they keep y in [1, 3], 1/y is a smooth function there and U imitates k. U(x, y)*x
    (the term's own factor) imitates it exactly."""
    t = np.linspace(0, 6, 25)
    data = dict(file="f.csv", time="t", columns={"x": "x", "y": "y"})
    raw = lv_model(data, {"x": "-k*x + x*y*U", "y": "-0.8*y + 1.8*x*y"}, {"k": 1.0}, {"U": {"inputs": ["x", "y"]}})
    write_csv(tmp_path / "f.csv", "t,x,y", [(float(a), 2 + np.sin(a), 1.5 + 1.45 * np.cos(a)) for a in t])
    f = findings(raw, tmp_path)["k"]
    assert f.verdict == "undecided"
    assert "could imitate it only by adding a multiple of 1/y to U, unbounded where y = 0" in f.line
    write_csv(tmp_path / "f.csv", "t,x,y", [(float(a), 2 + np.sin(a), 2 + np.cos(a)) for a in t])
    f = findings(raw, tmp_path)["k"]
    assert f.verdict == "imitable"
    assert "U changes by a multiple of 1/y, which is bounded where the data lie (y in [1.01, 3])" in f.line
    raw["model"]["equations"]["x"] = "-k*x + x*U"
    assert verdicts(raw, tmp_path) == {"k": "imitable"}


def test_a_factor_with_a_variable_the_network_does_not_see(lv3, tmp_path):
    """x*U(x) cannot add -k*x*y: the term changes with y, which U does not see; x*y*U(x) cannot add
    -k*x*y**2 either: U would have to change by a multiple of y."""
    raw = lv_model(lv3, {"x": "-k*x*y + x*U", "y": "-0.8*y + 1.8*x*y"}, {"k": 1.0}, {"U": {"inputs": ["x"]}})
    f = findings(raw, tmp_path)["k"]
    assert f.verdict == "not_imitable" and "its term changes with y, which no network there sees (U(x))" in f.line
    raw["model"]["equations"]["x"] = "-k*x*y**2 + x*y*U"
    f = findings(raw, tmp_path)["k"]
    assert f.verdict == "not_imitable"
    assert "x*y*U(x) would have to change by a multiple of y, which depends on y" in f.line


def test_two_additive_networks_produce_sums_not_products(lv3, tmp_path):
    """U(x) + V(y) can add k*(x + y) (term by term) but not k*x*y (d^2/dx dy of it is not zero)."""
    nets = {"U": {"inputs": ["x"]}, "V": {"inputs": ["y"]}}
    raw = lv_model(lv3, {"x": "-k*(x + y) + U + V", "y": "-0.8*y + 1.8*x*y"}, {"k": 1.0}, nets)
    f = findings(raw, tmp_path)["k"]
    assert f.verdict == "imitable" and "can be imitated by U(x) + V(y)" in f.line
    raw["model"]["equations"]["x"] = "-k*x*y + U + V"
    f = findings(raw, tmp_path)["k"]
    assert f.verdict == "not_imitable" and "couples x, y, which no single network there sees together" in f.line


def test_a_parameter_is_pinned_by_an_equation_without_a_network(lv3, tmp_path):
    """k in dx/dt (with U(x)) and in dy/dt (no network): the change in dy/dt cannot be undone."""
    raw = lv_model(lv3, {"x": "-k*x + U", "y": "k*x - y"}, {"k": 1.0}, {"U": {"inputs": ["x", "y"]}})
    f = findings(raw, tmp_path)["k"]
    assert f.verdict == "not_imitable" and f.where == ["dx/dt", "dy/dt"] and f.terms == ["-k*x", "k*x"]
    assert "in dy/dt there is no network" in f.line


def test_a_network_in_two_equations(lv3, tmp_path):
    """A flux U that leaves x and enters y: its change is forced by one equation and felt in the other.
    dx/dt = -U, dy/dt = U - g*y: U must add g*y to dy/dt, which takes it from dx/dt too, where nothing
    undoes it (d(x + y)/dt = -g*y pins g). With a network V of its own in dx/dt, V undoes it. Two
    networks shared by two equations (U + V and U - V) are not decided."""
    nets = {"U": {"inputs": ["x", "y"]}}
    raw = lv_model(lv3, {"x": "-U", "y": "U - g*y"}, {"g": 1.0}, nets)
    f = findings(raw, tmp_path)["g"]
    assert f.verdict == "not_imitable"
    assert ("in dy/dt (and through U, dx/dt): U would have to change by a multiple of y, which changes dx/dt too, "
            "where no other network can undo it") in f.line
    raw = lv_model(lv3, {"x": "-U + V", "y": "U - g*y"}, {"g": 1.0}, nets | {"V": {"inputs": ["x", "y"]}})
    f = findings(raw, tmp_path)["g"]
    assert f.verdict == "imitable" and f.networks == ["U", "V"]
    raw = lv_model(lv3, {"x": "-U - g*y", "y": "U + g*y"}, {"g": 1.0}, nets)  # the flux g*y itself
    assert verdicts(raw, tmp_path) == {"g": "imitable"}
    raw = lv_model(lv3, {"x": "-k*x + U + V", "y": "-y + U - V"}, {"k": 1.0}, nets | {"V": {"inputs": ["x", "y"]}})
    f = findings(raw, tmp_path)["k"]
    assert f.verdict == "undecided" and "also enters another equation" in f.line


def test_a_parameter_times_a_network_is_imitable(lv3, tmp_path):
    """p*x*U(x): p and the scale of U trade exactly; and r*x*exp(U): exp(U) absorbs r."""
    raw = lv_model(lv3, {"x": "-p*x*U", "y": "-y"}, {"p": 1.0}, {"U": {"inputs": ["x"]}})
    assert verdicts(raw, tmp_path) == {"p": "imitable"}
    raw["model"]["equations"]["x"] = "-p*x*exp(U)"
    assert verdicts(raw, tmp_path) == {"p": "imitable"}


def test_a_parameter_that_sets_an_initial_state_is_pinned(lv3, tmp_path):
    """m0 in y(t0) = m0: no network changes an initial state."""
    raw = lv_model(lv3, {"x": "-k*x + U", "y": "-m0*y + U2"}, {"k": 1.0, "m0": 2.0},
                   {"U": {"inputs": ["x", "y"]}, "U2": {"inputs": ["x", "y"]}}, initial={"y": {"formula": "m0"}})
    found = findings(raw, tmp_path)
    assert found["k"].verdict == "imitable"
    assert found["m0"].verdict == "not_imitable" and "it also sets y(t0)" in found["m0"].line


def test_a_per_experiment_parameter_keeps_its_differences(cultures, tmp_path):
    """r per culture with U(N): U can take a common shift of the r's, not their differences."""
    raw = dict(data=cultures, model=dict(states=["N"], parameters={"r": {"init": 0.5, "per_experiment": True},
                                                                   "K": {"init": 80.0, "fixed": True}},
                                         equations={"N": "r*N*(1 - N/K) + U"}), networks={"U": {"inputs": ["N"]}})
    f = findings(raw, tmp_path)["r"]
    assert f.verdict == "imitable" and f.per_experiment
    assert "their common level; the differences between experiments are identified" in f.line


def observed_scale(tmp_path, initial, equation="r*N + U", formula="s*N"):
    write_csv(tmp_path / "y.csv", "t,y", [(float(a), 3.0 + np.sin(a)) for a in range(11)])
    return dict(data=dict(file="y.csv", time="t", columns={}), observables={"y": {"formula": formula}},
                model=dict(states=["N"], parameters={"s": 2.0, "r": 0.1}, equations={"N": equation},
                           initial={"N": initial}), networks={"U": {"inputs": ["N"]}})


def test_an_observation_scale_against_a_network(tmp_path):
    """y = s*N: rescaling N keeps y; dN/dt = r*N + U(N) in the new units is r*N + (a function of N), so
    U follows, if N(t0) may follow too (learned). A given N(t0) pins s through y(t0)."""
    found = findings(observed_scale(tmp_path, {"value": 1.5, "learn": True}), tmp_path)
    assert found["s"].verdict == "imitable" and found["s"].role == "observation"
    assert found["s"].line.startswith("s (in observable y: s*N) can be imitated by U(N)")
    found = findings(observed_scale(tmp_path, {"value": 1.5}), tmp_path)
    assert found["s"].verdict == "not_imitable" and "N(t0) is given" in found["s"].line
    offset = findings(observed_scale(tmp_path, {"value": 1.5, "learn": True}, formula="N + s"), tmp_path)
    assert offset["s"].verdict == "imitable"


def test_a_scale_against_a_learned_initial_state_of_linear_dynamics(tmp_path):
    """y = s*N, dN/dt = r*N (no network in it), N(t0) learned: s*N(t0) is all the data see, whatever
    the networks: not identifiable (a symmetry of the model itself)."""
    raw = observed_scale(tmp_path, {"value": 1.5, "learn": True}, equation="r*N")
    raw["model"]["states"] = ["N", "M"]
    raw["model"]["equations"]["M"] = "U"
    raw["model"]["initial"]["M"] = {"value": 0.0}
    raw["networks"] = {"U": {"inputs": ["M"]}}
    f = findings(raw, tmp_path)["s"]
    assert f.verdict == "not_identifiable" and f.flagged
    assert "cannot tell s from N(t0)" in f.line


# -- the bundled configs --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("lotka_volterra", {}),  # alpha and gamma fixed: nothing learned to imitate
    ("lotka_volterra_learn_gamma", {"gamma": "imitable"}),  # U[1](x, y) can add -gamma*y
    ("lynx_hare_ude", {"alpha": "imitable", "beta": "imitable", "gamma": "imitable", "delta": "imitable"}),
    ("robertson_ude", {}),
    ("logistic_imitable", {"r": "imitable", "K": "imitable"}),
    ("lotka_volterra_learn_death_rate", {"gamma": "not_imitable", "delta": "not_imitable"}),
    ("flu_sir", {}),  # no network
])
def test_bundled_configs(name, expected):
    from ude_cli.config import load_config
    from ude_cli.problem import resolve

    assert {f.parameter: f.verdict for f in structural_check(resolve(load_config(REPO / f"configs/{name}.yaml")))} \
        == expected


# -- what a user sees ------------------------------------------------------------------------------------

def test_check_warns_on_stderr_and_lists_the_others_on_stdout():
    result = runner.invoke(app, ["check", str(REPO / "configs/logistic_imitable.yaml"),
                                 str(REPO / "configs/lotka_volterra_learn_death_rate.yaml")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and all("can be imitated by U(N)" in w for w in warnings)
    assert warnings[0].startswith(f"warning: {REPO / 'configs/logistic_imitable.yaml'}: model.parameters.r: r (in dN/dt")
    assert "to identify it: fix it" in warnings[0]
    info = [line for line in result.stdout.splitlines() if "structural check:" in line]
    assert [line.split("structural check: ")[1].split(" ")[0] for line in info] == ["gamma", "delta"]
    quiet = runner.invoke(app, ["check", "--quiet", str(REPO / "configs/logistic_imitable.yaml")])
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_check_json_carries_the_findings():
    result = runner.invoke(app, ["check", "--json", str(REPO / "configs/lotka_volterra_learn_gamma.yaml")])
    assert result.exit_code == 0
    (record,) = json.loads(result.stdout)["configs"]
    (finding,) = record["structural"]
    assert finding["parameter"] == "gamma" and finding["verdict"] == "imitable"
    assert finding["where"] == ["dy/dt"] and finding["terms"] == ["-gamma*y"]
    assert finding["network"] == "U[1]" and finding["network_inputs"] == ["x", "y"]
    assert any("model.parameters.gamma" in w for w in record["warnings"])


def test_fit_warns_at_the_start_and_records_the_check_in_metrics(cultures, tmp_path, write):
    """One warning line per imitable parameter before training; metrics.json's identifiability.structural."""
    import yaml

    raw = dict(data=cultures, model=dict(builtin="logistic", corrections={"N": "U"}),
               networks={"U": {"inputs": ["N"], "hidden": [4]}},
               training={"warm_start": "none", "stages": [{"optimizer": "lbfgs", "iterations": 2}]})
    path = write("logistic.yaml", yaml.safe_dump(raw))
    result = runner.invoke(app, ["fit", str(path), "--out", str(tmp_path / "run"), "--no-plots"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    flagged = [line for line in lines if "warning: model.parameters." in line]
    assert [line.split("model.parameters.")[1].split(":")[0] for line in flagged] == ["r", "K"]
    first_stage = next(k for k, line in enumerate(lines) if "stage 1/" in line)
    assert lines.index(flagged[0]) < first_stage  # before training
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    structural = metrics["identifiability"]["structural"]
    assert structural["flagged"] == ["r", "K"]
    assert [f["verdict"] for f in structural["findings"]] == ["imitable", "imitable"]
    quiet = runner.invoke(app, ["fit", str(path), "--out", str(tmp_path / "run2"), "--no-plots", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_one_experiment_with_a_monotone_network_input(tmp_path):
    """One experiment: where the data of V's input x only rise, y is a function of x along the trajectory,
    so V(x) can imitate -gamma*y there; where they rise almost monotonically it is not decided; where x
    goes up and down (and another experiment starts elsewhere) it cannot."""
    t = np.linspace(0, 5, 21)
    raw = lv_model(dict(file="m.csv", time="t", columns={"x": "x", "y": "y"}), {"x": "0.2*x", "y": "-gamma*y + V"},
                   {"gamma": 1.0}, {"V": {"inputs": ["x"]}})
    write_csv(tmp_path / "m.csv", "t,x,y", [(float(a), float(np.exp(0.2 * a)), 1.0 + a) for a in t])
    f = findings(raw, tmp_path)["gamma"]
    assert f.verdict == "imitable" and "V sees x, which only rises in the data" in f.line
    wobble = np.exp(0.2 * t) + 0.05 * np.where(np.arange(21) % 2, 1.0, -1.0)  # not strictly monotone
    write_csv(tmp_path / "m.csv", "t,x,y", [(float(a), float(b), 1.0 + a) for a, b in zip(t, wobble, strict=True)])
    f = findings(raw, tmp_path)["gamma"]
    assert f.verdict == "undecided" and "x rises almost monotonically in the data (Spearman" in f.line
    write_csv(tmp_path / "m.csv", "t,x,y", [(float(a), float(2 + np.sin(a)), 1.0 + a) for a in t])
    assert verdicts(raw, tmp_path) == {"gamma": "not_imitable"}
    # x not observed (its start given): whether it only rises is not known
    raw["data"]["columns"] = {"y": "y"}
    raw["model"]["initial"] = {"x": {"value": 1.0}}
    f = findings(raw, tmp_path)["gamma"]
    assert f.verdict == "undecided" and "x is not observed, and if it only rises or only falls" in f.line


def test_an_observable_of_two_states_is_not_decided(lv3, tmp_path):
    raw = lv_model(dict(lv3, columns={}), {"x": "-x + U", "y": "-y"}, {"s": 1.0}, {"U": {"inputs": ["x", "y"]}},
                   initial={"x": {"value": 1.0, "learn": True}, "y": {"value": 1.0, "learn": True}})
    raw["observables"] = {"total": {"formula": "s*(x + y)", "column": "prey"}}
    f = findings(raw, tmp_path)["s"]
    assert f.verdict == "undecided" and "observables of several states" in f.line


def test_lotka_volterra_on_one_irregular_partly_observed_series(tmp_path):
    """The issue's last case: one series, irregular times, only the prey observed (the predator's start
    learned): alpha and gamma are still imitated by U(x, y); the observation does not change that."""
    t = np.sort(np.random.default_rng(3).uniform(0, 8, 17))
    t[0] = 0.0
    write_csv(tmp_path / "p.csv", "t,prey", [(float(a), float(x)) for a, (x, _) in zip(t, lv_truth(t), strict=True)])
    raw = dict(data=dict(file="p.csv", time="t", columns={"x": "prey"}),
               model=dict(builtin="lotka_volterra", corrections={"x": "U[0]", "y": "U[1]"},
                          parameters={"alpha": 1.0, "gamma": 1.0, "beta": {"init": 0.9, "fixed": True},
                                      "delta": {"init": 1.8, "fixed": True}},
                          initial={"y": {"value": 4.0, "learn": True}}),
               networks={"U": {"inputs": ["x", "y"], "outputs": 2}})
    assert verdicts(raw, tmp_path) == {"alpha": "imitable", "gamma": "imitable"}


def test_the_fit_warnings_keep_their_brackets_on_a_terminal():
    """The progress bars' messages are not read as rich markup: U[1] and inputs: [t] reach the user."""
    import io

    from ude_cli.progress import RichMonitor

    stream = io.StringIO()
    RichMonitor("run", stream=stream).message("warning: U[1](x, y); networks.U.inputs: [t]")
    assert " ".join(stream.getvalue().split()) == "run: warning: U[1](x, y); networks.U.inputs: [t]"


@pytest.mark.slow
def test_rates_no_network_can_imitate_are_recovered():
    """configs/lotka_volterra_learn_death_rate.yaml: gamma and delta, not flagged, come out near the truth
    (0.8, 1.8) from the canonical data (5 % noise); measured 0.792 and 1.69."""
    from ude_cli import fit, load_config

    result = fit(load_config(REPO / "configs/lotka_volterra_learn_death_rate.yaml"))
    assert result.values["gamma"] == pytest.approx(0.8, rel=0.05)
    assert result.values["delta"] == pytest.approx(1.8, rel=0.10)
    assert result.metrics["identifiability"]["structural"]["flagged"] == []


def test_a_denominator_that_cannot_vanish_is_no_obstacle(lv3, tmp_path):
    """-k*sigmoid(x*y) + U(x, y): U adds a multiple of exp(x*y)/(exp(x*y) + 1), bounded everywhere.
    U/(1 + k*x): U must change by a multiple of x*U/(1 + k*x), bounded for k > 0 and x > 0 (the data's x
    are all positive); for a k of unknown sign 1 + k*x may vanish: not decided."""
    raw = lv_model(lv3, {"x": "-k*sigmoid(x*y) + U", "y": "-y"}, {"k": 1.0}, {"U": {"inputs": ["x", "y"]}})
    assert verdicts(raw, tmp_path) == {"k": "imitable"}
    raw["model"]["equations"]["x"] = "U/(1 + k*x)"
    raw["networks"] = {"U": {"inputs": ["x"]}}
    assert verdicts(raw, tmp_path) == {"k": "undecided"}
    raw["model"]["parameters"] = {"k": {"init": 1.0, "positive": True}}
    assert verdicts(raw, tmp_path) == {"k": "imitable"}


def test_seir_with_a_correction_on_every_state(tmp_path):
    """The built-in SEIR with U[0..3](S, E, I, R) added to each equation: each rate appears in two
    equations, and each has a network that sees every state: all three are imitated, by two outputs."""
    t = np.linspace(0, 20, 21)
    write_csv(tmp_path / "seir.csv", "t,S,E,I,R",
              [(float(a), 990 - a, 5 + np.sin(a), 5 + np.cos(a), float(a)) for a in t])
    raw = dict(data=dict(file="seir.csv", time="t", columns={s: s for s in "SEIR"}),
               model=dict(builtin="seir", constants={"N": 1000.0},
                          corrections={"S": "U[0]", "E": "U[1]", "I": "U[2]", "R": "U[3]"}),
               networks={"U": {"inputs": ["S", "E", "I", "R"], "outputs": 4}})
    found = findings(raw, tmp_path)
    assert {p: f.verdict for p, f in found.items()} == {"beta": "imitable", "sigma": "imitable", "gamma": "imitable"}
    assert found["gamma"].line == ("gamma (in dI/dt: -gamma*I; in dR/dt: gamma*I) can be imitated by "
                                   "U[2](S, E, I, R) in dI/dt and U[3](S, E, I, R) in dR/dt: the data cannot tell "
                                   "gamma from the networks")
    assert found["gamma"].networks == ["U[2]", "U[3]"]
