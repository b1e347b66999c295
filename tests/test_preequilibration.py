"""Pre-equilibration: each experiment starts at a steady state under other constants (ude_cli/fitting/steady_state.py).

Known answers, closed form:

- inflow and outflow, ``dx/dt = k_in u - k_out x``: settled at ``u = u_pre`` it starts at ``x* = k_in u_pre / k_out``,
  then relaxes to ``k_in u / k_out`` at the rate ``k_out``;
- a conserved pair, ``A <-> B`` (``k1 A`` one way, ``k2 s B`` back): ``A + B`` is kept, so the steady state from
  ``A = 1, B = 0`` at ``s = 1`` is ``B* = k1 / (k1 + k2)``, and the experiment relaxes at the rate ``k1 + k2 s``
  to ``B = total k1 / (k1 + k2 s)``; with ``reset: [A]``, A starts at 1 again, and the total is ``1 + B*``.

The llh and its gradient (the implicit function theorem's, through autograd) against these, and the
benchmark collection's problems with pre-equilibration against AMICI's references.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ude_cli.api import check, fit
from ude_cli.engines.torchdiffeq import SolverError
from ude_cli.errors import ConfigError
from ude_cli.fitting.steady_state import conservation_laws
from ude_cli.petab import evaluate

SIGMA = 0.05


def _llh(measured: dict, mean) -> float:
    return float(sum(-0.5 * math.log(2 * math.pi * SIGMA**2) - 0.5 * ((y - mean(e, t)) / SIGMA) ** 2
                     for (e, t), y in measured.items()))


def _fd(f, x: dict, name: str, h: float = 1e-6) -> float:
    return (f(**{**x, name: x[name] + h}) - f(**{**x, name: x[name] - h})) / (2 * h)


# -- inflow and outflow --------------------------------------------------------------------------------------------

U = {"a": 3.0, "b": 0.5}
TIMES = np.linspace(0.0, 10.0, 11)


def inflow(t, u, k_in=2.0, k_out=0.5, u_pre=1.0):
    start, end = k_in * u_pre / k_out, k_in * u / k_out
    return end + (start - end) * math.exp(-k_out * t)


def inflow_config(write, measured, k_in=2.0, k_out=0.5, engine="auto"):
    write("d.csv", "t,exp,u,x\n" + "".join(f"{t},{e},{U[e]},{y}\n" for (e, t), y in measured.items()))
    return write("c.yaml", f"""
        data: {{file: d.csv, time: t, experiment: exp}}
        model:
          states: [x]
          parameters:
            k_in: {{init: {k_in}, positive: true}}
            k_out: {{init: {k_out}, positive: true}}
          constants: {{u: {{column: u}}}}
          equations: {{x: "k_in*u - k_out*x"}}
          initial: {{x: 0}}
          t0: 0
          preequilibration:
            constants: {{u: 1.0}}
        observables:
          xo: {{formula: x, column: x, noise: {{distribution: normal, sigma: {SIGMA}}}}}
        solver: {{engine: {engine}}}
        """)


def inflow_data(seed=1):
    rng = np.random.default_rng(seed)
    return {(e, float(t)): inflow(t, U[e]) + SIGMA * rng.standard_normal() for e in U for t in TIMES}


@pytest.mark.parametrize("engine", ["auto", "torchdiffeq"])
def test_inflow_outflow_llh_and_gradient_equal_the_closed_form(write, engine):
    measured = inflow_data()
    at = {"k_in": 1.7, "k_out": 0.6}  # away from the truth: the gradient is large

    def llh(k_in, k_out):
        return _llh(measured, lambda e, t: inflow(t, U[e], k_in, k_out))

    result = evaluate(inflow_config(write, measured, **at, engine=engine))
    assert result.llh == pytest.approx(llh(**at), rel=1e-9)
    for name in at:
        expected = _fd(llh, at, name)
        assert abs(expected) > 100
        assert result.gradient[name] == pytest.approx(expected, rel=1e-6)


def test_a_fit_from_far_recovers_the_inflow_and_outflow_rates(write):
    measured = inflow_data()
    run = fit(inflow_config(write, measured, k_in=0.8, k_out=1.5))
    values = {n: float(v[0]) for n, v in run.model.parameter_values().items()}
    # the maximum of the closed-form llh, by a dense search on the log scale
    from scipy.optimize import minimize

    best = minimize(lambda z: -_llh(measured, lambda e, t: inflow(t, U[e], *np.exp(z))), np.log([2.0, 0.5]),
                    method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    assert values["k_in"] == pytest.approx(math.exp(best.x[0]), rel=1e-4)
    assert values["k_out"] == pytest.approx(math.exp(best.x[1]), rel=1e-4)
    summary = run.metrics["preequilibration"]  # both experiments settle at u = 1, from x = 0: one steady state
    assert summary["constants"] == {"u": 1.0} and summary["distinct_steady_states"] == 1
    assert summary["conservation_laws"] == [0] and summary["solves"] > 10


# -- a conservation law ------------------------------------------------------------------------------------------

S = {"a": 4.0, "b": 0.2}
T2 = np.linspace(0.0, 6.0, 13)


def pair(t, s, k1=0.7, k2=0.3, reset=False):
    settled = k1 / (k1 + k2)
    a0 = 1.0 if reset else 1.0 - settled
    end = (a0 + settled) * k1 / (k1 + k2 * s)
    return end + (settled - end) * math.exp(-(k1 + k2 * s) * t)


def pair_config(write, measured, reset, k1=0.7, k2=0.3):
    write("d2.csv", "t,exp,s,B\n" + "".join(f"{t},{e},{S[e]},{y}\n" for (e, t), y in measured.items()))
    return write("c2.yaml", f"""
        data: {{file: d2.csv, time: t, experiment: exp}}
        model:
          states: [A, B]
          parameters:
            k1: {{init: {k1}, positive: true}}
            k2: {{init: {k2}, positive: true}}
          constants: {{s: {{column: s}}}}
          equations: {{A: "-k1*A + k2*s*B", B: "k1*A - k2*s*B"}}
          initial: {{A: 1, B: 0}}
          t0: 0
          preequilibration:
            constants: {{s: 1}}
            reset: {"[A]" if reset else "[]"}
        observables:
          Bo: {{formula: B, column: B, noise: {{distribution: normal, sigma: {SIGMA}}}}}
        """)


@pytest.mark.parametrize("reset", [False, True])
def test_a_conserved_total_and_a_reset_state_against_the_closed_form(write, reset):
    rng = np.random.default_rng(2)
    measured = {(e, float(t)): pair(t, S[e], reset=reset) + SIGMA * rng.standard_normal() for e in S for t in T2}
    at = {"k1": 0.5, "k2": 0.45}

    def llh(k1, k2):
        return _llh(measured, lambda e, t: pair(t, S[e], k1, k2, reset))

    result = evaluate(pair_config(write, measured, reset, **at))
    assert result.llh == pytest.approx(llh(**at), rel=1e-9)
    for name in at:
        assert result.gradient[name] == pytest.approx(_fd(llh, at, name), rel=1e-6)


def test_conservation_laws_of_a_mass_action_network():
    """E + S <-> C -> E + P: the enzyme (E + C) and the substrate (S + C + P) are conserved; found from the right-hand
    side's values at random points, as rows spanning the same space."""
    rng = np.random.default_rng(0)
    k1, k2, k3 = 2.0, 0.5, 1.3

    def f(e, s, c, p):
        v1, v2, v3 = k1 * e * s, k2 * c, k3 * c
        return np.array([-v1 + v2 + v3, -v1 + v2, v1 - v2 - v3, v3])

    F = np.stack([f(*rng.lognormal(0, 1, 4)) for _ in range(12)], -1)
    C = conservation_laws(F)
    expected = np.array([[1.0, 0, 1, 0], [0, 1, 1, 1]])
    assert C.shape == (2, 4)
    # the same row space: each expected law is its own projection onto C's rows
    np.testing.assert_allclose(expected @ C.T @ C, expected, atol=1e-10)
    # a network without laws has none
    assert conservation_laws(np.stack([rng.normal(size=3) for _ in range(9)], -1)).shape == (0, 3)


def test_a_state_that_neither_moves_nor_moves_anything_keeps_its_value(write):
    """Without ligand (L = 0 while settling) the complex AL neither forms nor acts: H's Jacobian is singular without
    a conservation law (Raimundez_PCB2020's drug complexes). It keeps its initial value 0.3; A settles at k1/k2."""
    times = np.linspace(0, 4, 9)
    k1, k2, k3, L = 1.0, 0.5, 0.8, 2.0

    def a(t):  # dA/dt = k1 - k2 A - k3 L A from A = k1/k2: relaxes to k1/(k2 + k3 L)
        end = k1 / (k2 + k3 * L)
        return end + (k1 / k2 - end) * math.exp(-(k2 + k3 * L) * t)

    rng = np.random.default_rng(4)
    measured = {("e", float(t)): a(t) + SIGMA * rng.standard_normal() for t in times}
    write("d.csv", "t,A\n" + "".join(f"{t},{y}\n" for (_, t), y in measured.items()))
    path = write("c.yaml", f"""
        data: {{file: d.csv, time: t}}
        model:
          states: [A, AL]
          parameters: {{k1: {{init: {k1}, positive: true}}, k2: {{init: {k2}, positive: true}}}}
          constants: {{k3: {k3}, L: {L}}}
          equations: {{A: "k1 - k2*A - k3*L*A", AL: "k3*L*A"}}
          initial: {{A: 1, AL: 0.3}}
          t0: 0
          preequilibration: {{constants: {{L: 0}}}}
        observables:
          Ao: {{formula: A, column: A, noise: {{distribution: normal, sigma: {SIGMA}}}}}
        """)
    result = evaluate(path)
    assert result.llh == pytest.approx(_llh(measured, lambda e, t: a(t)), rel=1e-9)
    model = fit(path).model
    y0 = model.initial().detach().numpy()[0, 0]
    assert y0[1] == pytest.approx(0.3, rel=1e-12)
    assert y0[0] == pytest.approx(model.parameter_values()["k1"][0] / model.parameter_values()["k2"][0], rel=1e-10)


@pytest.mark.parametrize("equations, expected", [
    # a limit cycle: the continuation leaves the unstable focus at 0 and circles
    ('{x: "mu*x - w*y - x*(x^2 + y^2)", y: "w*x + mu*y - y*(x^2 + y^2)"}', "no steady state reached .* may oscillate"),
    ('{x: "-w*y", y: "w*x"}', "not attracting"),  # a centre: circles for ever
])
def test_a_model_that_does_not_settle_says_so(write, equations, expected):
    write("d.csv", "t,x\n0,1\n1,0.5\n2,0.2\n")
    path = write("c.yaml", f"""
        data: {{file: d.csv, time: t}}
        model:
          states: [x, y]
          parameters: {{w: {{init: 1.0}}}}
          constants: {{mu: 1.0}}
          equations: {equations.replace("^", "**")}
          initial: {{x: 0.5, y: 0}}
          t0: 0
          preequilibration: {{constants: {{mu: 1.0}}}}
        observables:
          xo: {{formula: x, column: x, noise: {{distribution: normal, sigma: 0.1}}}}
        """)
    with pytest.raises(SolverError, match=expected):
        evaluate(path)
    from ude_cli.errors import FitError

    with pytest.raises(FitError, match="simulating the initial guess: pre-equilibration: "):  # ude check
        check(path)


@pytest.mark.parametrize("block, expected", [
    ("{constants: {uu: 1}}", "'uu' is not a constant of the model (did you mean 'u'?); pre-equilibration changes "
                              "constants"),
    ("{constants: {k_in: 1}}", "'k_in' is not a constant of the model"),
    ("{constants: {u: 1}, reset: [z]}", "unknown state 'z'"),
    ("{constants: {u: 1}, experiments: [a, a]}", "an experiment is listed twice"),
    ("{constants: {u: 1}, experiments: [2]}", "unknown experiment '2'"),  # a number is a name
])
def test_bad_preequilibration_settings_name_the_field(write, block, expected):
    path = inflow_config(write, inflow_data())
    path.write_text(path.read_text().replace("preequilibration:\n    constants: {u: 1.0}",
                                             f"preequilibration: {block}"))
    with pytest.raises(ConfigError, match="model.preequilibration") as info:
        check(path)
    assert expected in str(info.value)


def test_export_writes_settling_conditions_that_import_back_to_the_same_llh(write, tmp_path):
    """PEtab v1 and v2. v1: a settling condition per way of settling (one here), named in preequilibrationConditionId; the
    reset state A set in every simulation condition, the others NaN there (they continue from the steady state)."""
    from ude_cli.petab import export

    rng = np.random.default_rng(2)
    measured = {(e, float(t)): pair(t, S[e], reset=True) + SIGMA * rng.standard_normal() for e in S for t in T2}
    result = export(pair_config(write, measured, True, k1=0.5, k2=0.45), tmp_path / "out", version=1)
    assert result.llh_exported == pytest.approx(result.llh_source, abs=1e-8)
    conditions = pd.read_csv(tmp_path / "out" / "conditions.tsv", sep="\t")
    assert conditions.to_dict("list") == {"conditionId": ["a", "b", "settle"], "s": [4.0, 0.2, 1.0],
                                          "A": [1.0, 1.0, 1.0]}
    assert set(pd.read_csv(tmp_path / "out" / "measurements.tsv", sep="\t")["preequilibrationConditionId"]) == {
        "settle"}
    # PEtab v2: a period at -inf in the experiments table; its condition's changes last, so the experiment's own
    # condition sets s back
    v2 = export(pair_config(write, measured, True, k1=0.5, k2=0.45), tmp_path / "v2", version=2)
    assert v2.llh_exported == pytest.approx(v2.llh_source, abs=1e-8)
    periods = pd.read_csv(tmp_path / "v2" / "experiments.tsv", sep="\t")
    assert periods.values.tolist() == [["a", -math.inf, "settle"], ["a", 0.0, "a_condition"],
                                       ["b", -math.inf, "settle"], ["b", 0.0, "b_condition"]]
    conditions = pd.read_csv(tmp_path / "v2" / "conditions.tsv", sep="\t")
    assert conditions.values.tolist() == [["a_condition", "s", 4.0], ["a_condition", "A", 1.0],
                                          ["b_condition", "s", 0.2], ["b_condition", "A", 1.0],
                                          ["settle", "s", 1.0], ["settle", "A", 1.0]]
    # without a_condition's s, the settling value s = 1 lasts into experiment a (PEtab v2's semantics)
    conditions[~((conditions["conditionId"] == "a_condition") & (conditions["targetId"] == "s"))].to_csv(
        tmp_path / "v2" / "conditions.tsv", sep="\t", index=False)
    sims = evaluate(tmp_path / "v2" / "problem.yaml").simulations
    a = sims[sims["simulationConditionId"] == "a"]
    np.testing.assert_allclose(a["simulation"], [pair(t, 1.0, 0.5, 0.45, reset=True) for t in a["time"]], rtol=1e-8)


# -- the benchmark collection ---------------------------------------------------------------------------------------

BENCH = Path(__file__).parent / "data" / "petab" / "benchmark"
REFERENCES = yaml.safe_load((BENCH / "references.yaml").read_text())


@pytest.mark.parametrize("name", ["Brannmark_JBC2010", "Weber_BMC2015", "Zheng_PNAS2012"])
def test_collection_problems_with_preequilibration_match_amici(name):
    """Each condition settles in another (Brannmark: insulin 0; Weber: no expression or stimulus; Zheng: dilution
    on); AMICI's reference llh and the collection's simulations (Zheng's simulations file holds its measurements,
    3 digits: not compared)."""
    result = evaluate(BENCH / name / f"{name}.yaml")
    assert result.llh == pytest.approx(REFERENCES[name]["llh"], abs=1e-3)
    if name == "Zheng_PNAS2012":
        return
    sim = pd.read_csv(BENCH / name / f"simulatedData_{name}.tsv", sep="\t")["simulation"].to_numpy()
    np.testing.assert_allclose(result.simulations["simulation"], sim, rtol=1e-4, atol=1e-9)


@pytest.mark.slow
def test_weber_gradient_through_the_steady_state_against_finite_differences():
    path = BENCH / "Weber_BMC2015" / "Weber_BMC2015.yaml"
    table = pd.read_csv(BENCH / "Weber_BMC2015" / "parameters_Weber_BMC2015.tsv", sep="\t").set_index("parameterId")
    at = {n: float(table.loc[n, "nominalValue"]) * f for n, f in (("a22", 1.2), ("a32", 0.8))}
    result = evaluate(path, values=at)
    for name in at:  # the llh is solved to about 1e-8: a smaller step is noise
        h = 1e-4 * at[name]
        up = evaluate(path, values={**at, name: at[name] + h}).llh
        down = evaluate(path, values={**at, name: at[name] - h}).llh
        assert result.gradient[name] == pytest.approx((up - down) / (2 * h), rel=1e-3)


def test_blasi_measured_at_steady_state_equals_the_llh_of_the_collections_simulations(tmp_path):
    """Every measurement at time inf: each condition settles in itself and is measured there. PEtab's log-normal
    density (log transformation) of the collection's simulations (one value per observable), in numpy; and a
    mix with a time course is refused in one line."""
    import shutil

    name = "Blasi_CellSystems2016"
    result = evaluate(BENCH / name / f"{name}.yaml")
    meas = pd.read_csv(BENCH / name / f"measurementData_{name}.tsv", sep="\t")
    sim = pd.read_csv(BENCH / name / f"simulatedData_{name}.tsv", sep="\t").groupby("observableId")["simulation"]
    mu, y, sigma = sim.first().reindex(meas["observableId"]).to_numpy(), meas["measurement"].to_numpy(), 0.1
    expected = np.sum(-0.5 * np.log(2 * np.pi * sigma**2) - np.log(y) - 0.5 * ((np.log(y) - np.log(mu)) / sigma) ** 2)
    assert result.llh == pytest.approx(expected, abs=1e-5)  # (the simulations have 8 to 9 digits)
    ours = result.simulations.groupby("observableId")["simulation"].first()
    np.testing.assert_allclose(ours, sim.first().reindex(ours.index), rtol=1e-7)
    folder = tmp_path / name
    shutil.copytree(BENCH / name, folder)
    meas.loc[3, "time"] = 2.0
    meas.to_csv(folder / f"measurementData_{name}.tsv", sep="\t", index=False)
    with pytest.raises(ConfigError, match=r"line 5, column time: measurements at steady state \(inf\) together with "
                                          r"measurements at finite times \(2.0 here\)"):
        evaluate(folder / f"{name}.yaml")


def test_measured_at_t0_alone_without_native_code(write, monkeypatch):
    """Data at t0 alone: the states there are the steady state, with no solve. The compiled engine's CasADi path
    (before native code is built, or where none can be) crashed on a grid of one time (a reverse sweep of 0 steps)."""
    from ude_cli.engines.compiled import CompiledEngine

    monkeypatch.setattr(CompiledEngine, "start_native", lambda self: None)
    measured = {("a", 0.0): 4.2, ("b", 0.0): 3.9}
    path = inflow_config(write, measured, engine="compiled")
    result = evaluate(path)

    def llh(k_in, k_out):  # settled at u = 1: x* = k_in / k_out, in both experiments
        return _llh(measured, lambda e, t: k_in / k_out)

    at = {"k_in": 2.0, "k_out": 0.5}
    assert result.llh == pytest.approx(llh(**at), rel=1e-10)
    assert result.gradient["k_in"] == pytest.approx(_fd(llh, at, "k_in"), rel=1e-6)
    # a fit: its dense trajectories are the one time (a grid of 400 copies of t0 crashed torchdiffeq); a and b
    # differ in u (not replicates), so the fit-quality check has no noise estimate and says what it compares with
    path.write_text(path.read_text().replace(f"sigma: {SIGMA}", f"sigma: {{init: {SIGMA}}}"))  # estimated
    run = fit(path)
    assert [len(t) for t, _ in run.trajectories] == [1, 1]
    quality = run.metrics["fit_quality"]
    assert quality["per_observable"]["x"]["noise_from"].startswith("none: no experiment has 3 training times")
    assert "against 0.0001 of the data's variance (no noise estimate" in quality["line"]


# -- found in review: per-experiment values, laws that move with a parameter, float32, several steady states -------

def _autograd_and_differences(path, h=1e-6):
    """d objective / d (every learned raw value) by autograd through the model, and by central differences."""
    import torch

    from ude_cli.fitting.model import UDEModel
    from ude_cli.likelihood.objective import Objective

    model = UDEModel(check(path))
    objective = Objective(model)

    def loss():
        return objective.nll(model(), "train").sum()

    learned = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss(), learned)
    pairs = []
    for p, g in zip(learned, grads, strict=True):
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            with torch.no_grad():
                flat[i] = old + h
                up = loss().item()
                flat[i] = old - h
                down = loss().item()
                flat[i] = old
            pairs.append((g.view(-1)[i].item(), (up - down) / (2 * h)))
    return pairs


@pytest.mark.parametrize("initial", ["{A: 1, B: 0}", "{A: {value: 1, learn: true}, B: {value: 0, learn: true}}"])
def test_per_experiment_values_equal_at_the_start_get_their_own_gradients(write, initial):
    """The experiments settle alike at a fit's start (their own k1, or initial values, are still equal), and are
    solved once; each still gets its own gradient (it went to the first of them)."""
    rng = np.random.default_rng(2)
    measured = {(e, float(t)): pair(t, S[e]) + SIGMA * rng.standard_normal() for e in S for t in T2}
    path = pair_config(write, measured, False)
    text = path.read_text().replace("k1: {init: 0.7, positive: true}", "k1: {init: 0.6, positive: true, "
                                                                        "per_experiment: true}")
    path.write_text(text.replace("initial: {A: 1, B: 0}", f"initial: {initial}"))
    pairs = _autograd_and_differences(path)
    assert len(pairs) >= 3
    for autograd, differences in pairs:
        assert autograd == pytest.approx(differences, rel=1e-5, abs=1e-4)


def test_a_conservation_law_that_moves_with_a_parameter(write):
    """``A' = -(k1 A - k2 s B)``, ``B' = V (k1 A - k2 s B)`` keeps ``V A + B`` (V: a compartment's volume, learned):
    settled at s = 1 from A = 1, B = 0, ``B* = V / (1 + V k2 / k1)``; then it relaxes at ``k1 + V k2 s``."""
    def b(t, s, k1, k2, V):
        total = V
        settled, end = total / (1 + V * k2 / k1), total / (1 + V * k2 * s / k1)
        return end + (settled - end) * math.exp(-(k1 + V * k2 * s) * t)

    rng = np.random.default_rng(5)
    truth = {"k1": 0.7, "k2": 0.3, "V": 2.0}
    measured = {(e, float(t)): b(t, S[e], **truth) + SIGMA * rng.standard_normal() for e in S for t in T2}
    path = pair_config(write, measured, False)
    text = path.read_text().replace('B: "k1*A - k2*s*B"', 'B: "V*(k1*A - k2*s*B)"')
    path.write_text(text.replace("k2: {init: 0.3, positive: true}", "k2: {init: 0.3, positive: true}\n    "
                                                                    "V: {init: 2.0, positive: true}"))
    result = evaluate(path)

    def llh(k1, k2, V):
        return _llh(measured, lambda e, t: b(t, S[e], k1, k2, V))

    assert result.llh == pytest.approx(llh(**truth), rel=1e-9)
    for name in truth:  # V's was 2.4 times too small when C was held constant
        assert result.gradient[name] == pytest.approx(_fd(llh, truth, name), rel=1e-6)


def test_float32_finds_the_law_and_agrees_with_float64(write):
    rng = np.random.default_rng(2)
    measured = {(e, float(t)): pair(t, S[e]) + SIGMA * rng.standard_normal() for e in S for t in T2}
    path = pair_config(write, measured, False, k1=0.5, k2=0.45)
    double = evaluate(path)
    path.write_text(path.read_text() + "solver: {dtype: float32}\n")
    single = evaluate(path)
    assert single.llh == pytest.approx(double.llh, rel=1e-5)
    for name, g in double.gradient.items():
        assert single.gradient[name] == pytest.approx(g, rel=1e-3)


def test_the_steady_state_does_not_depend_on_earlier_evaluations(write):
    """``x' = -(x - 1)(x - p)(x - 4)`` from x = 2.5 settles at 4 for p = 2 and at 1 for p = 3: whatever was
    evaluated before (a warm start from the last steady state kept 4 for p = 3)."""
    import torch

    from ude_cli.fitting.model import UDEModel

    write("d.csv", "t,x\n0,1\n1,1\n")
    path = write("c.yaml", """
        data: {file: d.csv, time: t}
        model:
          states: [x]
          parameters: {p: {init: 2.0}}
          constants: {u: 0}
          equations: {x: "-(x - 1)*(x - p)*(x - 4) + u"}
          initial: {x: 2.5}
          t0: 0
          preequilibration: {constants: {u: 0}}
        observables:
          xo: {formula: x, column: x, noise: {distribution: normal, sigma: 0.1}}
        """)
    model = UDEModel(check(path))
    assert float(model.initial().detach()[0, 0, 0]) == pytest.approx(4.0, rel=1e-10)
    with torch.no_grad():
        model.parameters_.raw["p"].fill_(3.0)
    assert float(model.initial().detach()[0, 0, 0]) == pytest.approx(1.0, rel=1e-10)


def test_measured_at_steady_state_a_species_the_condition_sets_is_a_start_value(write, tmp_path):
    """``A -> B -> C -> A`` (rates k1 s A, k2 B, k3 C) keeps A + B + C; measured at time inf, with A set by each
    condition: the steady state from there, ``A* = total / (1 + k1 s / k2 + k1 s / k3)``, not the value A is set to
    (which a reset gave)."""
    from ude_cli.petab import export

    write("d.csv", "t,exp,s,A\n0,a,2.0,0.4\n0,b,0.5,0.6\n")
    path = write("c.yaml", """
        data: {file: d.csv, time: t, experiment: exp}
        model:
          states: [A, B, C]
          parameters: {k1: {init: 0.7, positive: true}, k2: {init: 0.3, positive: true}, k3: {init: 1.3, positive: true}}
          constants: {s: {column: s}}
          equations: {A: "-k1*s*A + k3*C", B: "k1*s*A - k2*B", C: "k2*B - k3*C"}
          initial: {A: 1, B: 0.1, C: 0.4}
          t0: 0
        observables:
          Ao: {formula: A, column: A, noise: {distribution: normal, sigma: 0.02}}
        """)
    folder = tmp_path / "petab"
    export(path, folder, version=1)
    meas = pd.read_csv(folder / "measurements.tsv", sep="\t")
    meas["time"] = math.inf
    meas.to_csv(folder / "measurements.tsv", sep="\t", index=False)
    pd.DataFrame({"conditionId": ["a", "b"], "s": [2.0, 0.5], "A": [2.0, 1.0]}).to_csv(
        folder / "conditions.tsv", sep="\t", index=False)
    result = evaluate(folder / "problem.yaml")
    k1, k2, k3 = 0.7, 0.3, 1.3
    for cond, s, total in (("a", 2.0, 2.5), ("b", 0.5, 1.5)):
        simulated = result.simulations.set_index("simulationConditionId").loc[cond, "simulation"]
        assert simulated == pytest.approx(total / (1 + k1 * s / k2 + k1 * s / k3), rel=1e-9)


def test_the_structural_check_does_not_read_a_steady_state_as_a_given_initial_value(write):
    """An observation scale s of x: without pre-equilibration x(t0) = 1 is given and the observable at t0 pins s;
    settled first, x(t0) is where the model (network included) comes to rest, which moves with every term."""
    from ude_cli.identifiability.structural import structural_check

    write("d.csv", "t,u,y\n0,1,2.0\n1,1,1.6\n2,1,1.4\n3,1,1.3\n")
    text = """
        data: {file: d.csv, time: t}
        model:
          states: [x]
          parameters: {k: {init: 0.5, positive: true}, s: {init: 2.0, positive: true}}
          constants: {u: {column: u}}
          equations: {x: "u - k*x + U[0]"}
          initial: {x: 1}
          t0: 0
        observables:
          yo: {formula: s*x, column: y, noise: {distribution: normal, sigma: 0.1}}
        networks:
          U: {inputs: [x], outputs: 1, hidden: [4]}
        """
    given = {f.parameter: f for f in structural_check(check(write("a.yaml", text)))}
    assert "x(t0) is given" in given["s"].reason
    settled = text.replace("t0: 0\n", "t0: 0\n          preequilibration: {constants: {u: 2}}\n")
    found = {f.parameter: f for f in structural_check(check(write("b.yaml", settled)))}
    assert "x(t0) is a steady state (model.preequilibration)" in found["s"].reason
    assert found["s"].verdict != given["s"].verdict
    # two experiments, one of which settles: the other's given x(t0) still pins s
    write("d2.csv", "t,e,u,y\n0,a,1,2.0\n1,a,1,1.6\n0,b,1,2.0\n1,b,1,1.5\n")
    some = settled.replace("data: {file: d.csv, time: t}", "data: {file: d2.csv, time: t, experiment: e}")
    some = some.replace("preequilibration: {constants: {u: 2}}", "preequilibration: {constants: {u: 2}, experiments: [a]}")
    partly = {f.parameter: f for f in structural_check(check(write("c.yaml", some)))}
    assert partly["s"].verdict == given["s"].verdict and "x(t0) is given" in partly["s"].reason


def test_some_experiments_settle_and_the_others_start_at_their_initial_values(write, tmp_path):
    """``preequilibration.experiments: [a]``: a settles at u = 1 (from x = 0: x* = k_in / k_out), b starts at x = 0;
    the llh and gradient in closed form; exported (v1 and v2) and imported back to the same llh."""
    from ude_cli.petab import export

    rng = np.random.default_rng(6)

    def mean(e, t, k_in=2.0, k_out=0.5):
        if e == "a":
            return inflow(t, U[e], k_in, k_out)
        end = k_in * U[e] / k_out  # from x = 0
        return end * (1 - math.exp(-k_out * t))

    measured = {(e, float(t)): mean(e, t) + SIGMA * rng.standard_normal() for e in U for t in TIMES}
    path = inflow_config(write, measured, k_in=1.7, k_out=0.6)
    path.write_text(path.read_text().replace("constants: {u: 1.0}", "constants: {u: 1.0}\n    experiments: [a]"))
    result = evaluate(path)
    at = {"k_in": 1.7, "k_out": 0.6}

    def llh(k_in, k_out):
        return _llh(measured, lambda e, t: mean(e, t, k_in, k_out))

    assert result.llh == pytest.approx(llh(**at), rel=1e-9)
    for name in at:
        assert result.gradient[name] == pytest.approx(_fd(llh, at, name), rel=1e-6)
    for version in (1, 2):
        out = export(path, tmp_path / f"v{version}", version=version)
        assert out.llh_exported == pytest.approx(out.llh_source, abs=1e-8)
    assert pd.read_csv(tmp_path / "v1" / "measurements.tsv", sep="\t").groupby("simulationConditionId")[
        "preequilibrationConditionId"].first().fillna("").to_dict() == {"a": "settle", "b": ""}
    assert len(pd.read_csv(tmp_path / "v2" / "experiments.tsv", sep="\t")) == 3  # a: -inf and 0; b: 0
    with pytest.raises(ConfigError, match="unknown experiment 'c'"):
        path.write_text(path.read_text().replace("experiments: [a]", "experiments: [a, c]"))
        check(path)


@pytest.mark.parametrize("x0", [-3.0, -0.05, -1e-3, 1e-3, 0.05, 3.0])
def test_settling_next_to_an_unstable_state_follows_the_trajectory(write, x0):
    """``x' = x - x^3`` has an unstable state at 0 between stable ones at -1 and 1: from x0 the trajectory reaches
    sign(x0). Large backward-Euler steps jumped across 0 (from +-0.05 to the other side, found in review): the step
    is held at half the growth rate's time while U^T J U has an eigenvalue with a positive real part."""
    write("d.csv", "t,x\n0,1\n1,1\n")
    path = write("c.yaml", f"""
        data: {{file: d.csv, time: t}}
        model:
          states: [x]
          parameters: {{k: {{init: 1.0, positive: true}}}}
          constants: {{c: 0.5}}
          equations: {{x: "k*(x - x**3) + c"}}
          initial: {{x: {x0}}}
          t0: 0
          preequilibration: {{constants: {{c: 0}}}}
        observables:
          xo: {{formula: x, column: x, noise: {{distribution: normal, sigma: 0.1}}}}
        """)
    simulated = evaluate(path).simulations["simulation"].iloc[0]
    assert simulated == pytest.approx(math.copysign(1.0, x0), rel=1e-9)


def test_petab_v2_array_inputs_of_the_settling_period_last_into_the_next(tmp_path):
    """PEtab v2: a period's changes last until a later period changes them. Suite case 015's image input comes per
    condition from an array file; with e1 settling in cond1 and its own period setting nothing, e1 keeps cond1's
    image (it fell back to a dataset `0`, or was refused without one)."""
    import shutil

    from ude_cli.petab.problem import load_problem

    folder = tmp_path / "015"
    shutil.copytree(Path(__file__).parent / "data" / "petab" / "sciml" / "015" / "petab", folder)
    (folder / "experiments.tsv").write_text("experimentId\ttime\tconditionId\ne1\t-inf\tcond1\ne1\t0.0\t\n"
                                            "e2\t0.0\tcond2\n")
    conditions = load_problem(folder / "problem.yaml").conditions
    image = [c for c in conditions.columns if c.startswith("input0_")]
    assert len(image) > 10
    settled, e1, e2 = (conditions.loc[c, image].astype(float).to_numpy() for c in
                       ("e1__preequilibration", "e1", "e2"))
    np.testing.assert_array_equal(e1, settled)
    assert not np.array_equal(e1, e2)


def test_the_fit_prints_a_line_about_pre_equilibration(write):
    from ude_cli.cli.fit import preequilibration_line

    rng = np.random.default_rng(2)
    measured = {(e, float(t)): pair(t, S[e], reset=True) + SIGMA * rng.standard_normal() for e in S for t in T2}
    run = fit(pair_config(write, measured, True))
    line = preequilibration_line(run.metrics["preequilibration"], 2)
    assert line.startswith("pre-equilibration: every experiment starts at the steady state the model reaches with "
                           "s = 1, then A takes its initial value again (1 distinct, 1 conservation law; ")
    assert check(pair_config(write, measured, True)).settled["distinct_steady_states"] == 1  # ude check's line
    some = {**run.metrics["preequilibration"], "experiments": ["a"], "constants": {"s": {"a": 1.0}}, "reset": []}
    assert preequilibration_line(some, 2).startswith("pre-equilibration: 1 of 2 experiments (a) starts at the steady "
                                                     "state the model reaches with s per experiment (")


def test_the_jacobians_one_batched_backward_pass_equals_a_pass_per_state(monkeypatch):
    """The settling Jacobian by one vmapped backward pass (is_grads_batched), and by one pass per state where an
    operation refuses vmap: the same llh and gradient (Brannmark: 3 conservation laws, 22 parameters)."""
    import torch

    path = BENCH / "Brannmark_JBC2010" / "Brannmark_JBC2010.yaml"
    batched = evaluate(path)
    grad = torch.autograd.grad
    refused = []

    def refuse(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            refused.append(1)
            raise RuntimeError("vmap: this operation is not batched")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", refuse)
    looped = evaluate(path)
    assert refused  # the fallback ran
    assert looped.llh == pytest.approx(batched.llh, abs=1e-9)
    for name, value in batched.gradient.items():
        assert looped.gradient[name] == pytest.approx(value, rel=1e-7, abs=1e-9), name
