"""Jumps when a condition becomes true (model.events' ``when``; ude_cli/fitting/events.py, Triggers).

Known answer, closed form: ``dx/dt = -k x`` from ``x(0) = 2``, refilled by ``x -> x + D`` each time ``x < 1``
becomes true: the first time is ``t1 = ln(2) / k``, then every ``P = ln(1 + D) / k``, and between two of them
``x = (1 + D) e^{-k (t - t_m)}``. Every time depends on k and D, so the gradient checks the derivative through
the jump's time (the implicit function theorem), against central differences of the closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ude_cli.api import check
from ude_cli.errors import UdeError
from ude_cli.petab import evaluate

K, D, X0, SIGMA = 0.3, 1.5, 2.0, 0.05
TIMES = np.concatenate([[0.0], np.arange(0.5, 20.01, 0.5) + 0.013])  # none at a jump of the values used


def closed_form(t, k=K, d=D):
    t = np.asarray(t, dtype=float)
    t1, period = math.log(X0) / k, math.log(1 + d) / k
    x = X0 * np.exp(-k * t)
    late = t >= t1
    since = (t[late] - t1) - np.floor((t[late] - t1) / period) * period
    x[late] = (1 + d) * np.exp(-k * since)
    return x


MEASURED = closed_form(TIMES) + SIGMA * np.random.default_rng(3).standard_normal(len(TIMES))


def config(write, solver="", when="x < 1", initial=X0, extra=""):
    write("d.csv", "t,x\n" + "".join(f"{t},{y}\n" for t, y in zip(TIMES, MEASURED, strict=True)))
    return write("c.yaml", f"""
        data: {{file: d.csv, columns: {{x: x}}}}
        model:
          states: [x]
          equations: {{x: "-k*x"}}
          parameters: {{k: {{init: {K}, positive: true}}, D: {{init: {D}, positive: true}}}}
          initial: {{x: {initial}}}
          events:
            - {{when: "{when}", set: {{x: "x + D"}}{extra}}}
        noise: {{distribution: normal, sigma: {{init: {SIGMA}, fixed: true}}}}
        {solver}
        """)


def llh(k, d):
    r = (MEASURED - closed_form(TIMES, k, d)) / SIGMA
    return float(np.sum(-0.5 * math.log(2 * math.pi * SIGMA**2) - 0.5 * r * r))


SOLVERS = {
    "default": "",
    "torchdiffeq dopri5": "solver: {engine: torchdiffeq, method: dopri5}",
    "compiled bdf": "solver: {engine: compiled, method: bdf}",
    "compiled rk4": "solver: {engine: compiled, method: rk4, step: 0.01}",
}


@pytest.mark.parametrize("solver", SOLVERS)
def test_llh_and_gradient_through_the_times_of_the_jumps_are_the_closed_forms(write, solver):
    """At k = 0.28, D = 1.6 (jumps at 2.48, 5.83, 9.19, ...): the llh to 1e-9 relative (bdf 1e-8) and its
    gradient to 1e-7 (bdf 1e-6) of the closed form's central differences; without the time's derivative
    d llh / dD would be off by far more (it moves every jump after the first)."""
    result = evaluate(config(write, SOLVERS[solver]), values={"k": 0.28, "D": 1.6})
    tol = 1e-8 if "bdf" in solver else 1e-9
    assert result.llh == pytest.approx(llh(0.28, 1.6), rel=tol)
    h = 1e-6
    for name, up, down in (("k", (0.28 + h, 1.6), (0.28 - h, 1.6)), ("D", (0.28, 1.6 + h), (0.28, 1.6 - h))):
        assert result.gradient[name] == pytest.approx((llh(*up) - llh(*down)) / (2 * h), rel=100 * tol), name


def test_a_condition_true_at_the_start_waits_until_it_has_been_false(write):
    """x(0) = 0.5 < 1 and x only decays: the condition never becomes true, so no jump (SBML's initialValue
    true); from x(0) = 2 the first jump is at ln(2)/k."""
    from ude_cli.fitting.model import UDEModel

    (sol,) = UDEModel(check(config(write, initial=0.5))).forward()
    # (the default tolerances: atol 1e-6)
    assert sol[:, 0, 0, 0].detach().numpy() == pytest.approx(0.5 * np.exp(-K * TIMES), abs=1e-5)
    (sol,) = UDEModel(check(config(write))).forward()
    assert sol[:, 0, 0, 0].detach().numpy() == pytest.approx(closed_form(TIMES), abs=1e-5)


def test_a_rising_condition_and_the_dense_curve(write):
    """dx/dt = +k x from 0.5 with x -> x - D when x > 1.5: the mirror image (jumps down each time x reaches 1.5,
    to 1.5 - D); the dense curve follows it (400 points plus the data's)."""
    from ude_cli.fitting.model import UDEModel

    path = config(write, when="x > 1.5", initial=0.5)
    path.write_text(path.read_text().replace('"-k*x"', '"k*x"').replace('"x + D"', '"x - D"').replace(
        "D: {init: 1.5", "D: {init: 1.0"))
    model = UDEModel(check(path))
    t, y = model.dense(400)[0]
    t1, period = math.log(3) / K, math.log(1.5 / 0.5) / K
    since = np.where(t < t1, t, (t - t1) % period)
    expected = np.where(t < t1, 0.5 * np.exp(K * t), 0.5 * np.exp(K * since))
    phase = (t - t1) / period
    near = np.abs(phase - np.round(phase)) * period < 1e-4  # within 1e-4 of a jump: on either side of it
    assert near.sum() < 10 and y[~near, 0, 0] == pytest.approx(expected[~near], abs=1e-5)


@pytest.mark.parametrize(("event", "message"), [
    ('when: "x + 1"', "model.events[0].when: 'x + 1' is not a condition 'a < b'"),
    ('when: "0 < x < 1"', "is not a condition 'a < b' (or <=, >, >=) of one comparison"),
    ('when: "x < q"', "model.events[0].when: unknown name 'q' in 'x < q'"),
    ('when: "x < 1", observed: before', "'observed' is for jumps at given times"),
    ('when: "x < 1", at: [2]', "not at and when"),
])
def test_bad_conditions_are_named_in_one_line(write, event, message):
    path = config(write)
    path.write_text(path.read_text().replace('when: "x < 1"', event))
    with pytest.raises(UdeError) as info:
        check(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_check_names_the_condition_and_export_refuses_it(write, tmp_path):
    from ude_cli.fitting.events import summary
    from ude_cli.petab.export import export

    path = config(write)
    assert summary(check(path)) == "jumps (model.events) when x < 1: x (model.events[0])"
    with pytest.raises(UdeError, match=r"model.events\[0\].when: a jump when a condition becomes true is not "
                                       r"exported yet"):
        export(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_jump_that_keeps_its_condition_flipping_is_a_solver_error_not_a_crash(write, monkeypatch):
    """x < 1 sets x = 1.001 (just above: true again 0.003 later): past MOST_CHANGES changes in one solve, a
    solver error naming model.events (a fit's trial point rolls back on it), not an internal error."""
    from ude_cli.engines.torchdiffeq import SolverError
    from ude_cli.fitting import events
    from ude_cli.fitting.model import UDEModel

    monkeypatch.setattr(events, "MOST_CHANGES", 20)
    path = config(write)
    path.write_text(path.read_text().replace('"x + D"', '"1.001"'))
    with pytest.raises(UdeError, match="simulating the initial guess: more than 20 changes of a condition of "
                                       "model.events"):
        check(path)  # (ude check and fit simulate the initial guess)
    from ude_cli.config import load_config
    from ude_cli.problem import resolve

    with pytest.raises(SolverError, match="more than 20 changes"):  # (resolve simulates nothing)
        UDEModel(resolve(load_config(path))).forward()


def test_the_fit_quality_cuts_the_noise_estimate_at_the_jumps_the_conditions_made(write):
    """UDEModel.jump_times gives the closed form's times ln(2)/k + m ln(1 + D)/k (to 1e-4); cut there, the
    difference-based noise estimate of the data is the noise's variance (0.0025, to 40 %), uncut it is several times
    more (the refills counted as noise), so a fit stuck off the truth's phase is not judged by an inflated yardstick."""
    import pandas as pd

    from ude_cli.fitting.model import UDEModel
    from ude_cli.fitting.quality import assess

    path = config(write)  # sigma estimated: the noise level is the data's differences'
    path.write_text(path.read_text().replace(f"noise: {{distribution: normal, sigma: {{init: {SIGMA}, fixed: true}}}}",
                                             "noise: normal"))
    problem = check(path)
    times = UDEModel(problem).jump_times()
    name = problem.dataset.experiments[0].name
    t1, period = math.log(X0) / K, math.log(1 + D) / K
    expected = [t1 + m * period for m in range(20) if t1 + m * period <= TIMES[-1]]
    assert times[name] == pytest.approx(expected, abs=1e-4)  # (the default tolerances: 9e-6 measured)
    table = pd.DataFrame({"experiment": name, "time": TIMES, "split": "train", "x_observed": MEASURED,
                          "x_predicted": closed_form(TIMES)})
    cut = assess(problem, table, 1.0, jump_times=times)["per_observable"]["x"]["noise"]
    whole = assess(problem, table, 1.0)["per_observable"]["x"]["noise"]
    assert cut == pytest.approx(SIGMA**2, rel=0.4) and whole > 3 * cut
