"""Jumps of states at given times (model.events; ude_cli/fitting/events.py).

Known answer, closed form: ``dx/dt = -k x`` from ``x(0) = x0`` with a dose ``x -> x + D`` at 4 and 12 gives
``x(t) = x0 e^{-kt} + D sum_{tau <= t} e^{-k (t - tau)}`` (a measurement at a dose time sees the dose, as in PEtab),
whose derivatives in k and D are written out below: the llh and its gradient of every engine and method are
checked against them.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from ude_cli.api import check, fit
from ude_cli.errors import UdeError
from ude_cli.petab import evaluate

K, D, X0, SIGMA = 0.3, 5.0, 2.0, 0.2
DOSES = (4.0, 12.0)
TIMES = np.arange(0.0, 20.5, 1.0)


def closed_form(t, k=K, d=D, before=False):
    """x(t); with ``before`` (``observed: before``) the sum is over the doses strictly before t."""
    t = np.asarray(t, dtype=float)
    x = X0 * np.exp(-k * t)
    for tau in DOSES:
        x = x + np.where(t > tau if before else t >= tau, d * np.exp(-k * (t - tau)), 0.0)
    return x


def gradient(t, k=K, d=D, before=False):
    """d x / d k and d x / d D at ``t``."""
    dk = -t * X0 * np.exp(-k * t)
    dd = np.zeros_like(t)
    for tau in DOSES:
        after = t > tau if before else t >= tau
        dk = dk - np.where(after, d * (t - tau) * np.exp(-k * (t - tau)), 0.0)
        dd = dd + np.where(after, np.exp(-k * (t - tau)), 0.0)
    return dk, dd


NOISE = 0.1 * np.random.default_rng(5).standard_normal(len(TIMES))
MEASURED = closed_form(TIMES) + NOISE


def config(write, solver="", extra="", k=K, d=D, measured=MEASURED):
    write("d.csv", "t,x\n" + "".join(f"{t},{y}\n" for t, y in zip(TIMES, measured, strict=True)))
    return write("c.yaml", f"""
        data: {{file: d.csv, columns: {{x: x}}}}
        model:
          states: [x]
          equations: {{x: "-k*x"}}
          parameters:
            k: {{init: {k}, positive: true}}
            D: {{init: {d}, positive: true}}
          initial: {{x: {X0}}}
          events:
            - {{at: {list(DOSES)}, set: {{x: "x + D"}}}}
        noise: {{distribution: normal, sigma: {{init: {SIGMA}, fixed: true}}}}
        {solver}
        {extra}
        """)


def llh(k=K, d=D, before=False):
    r = MEASURED - closed_form(TIMES, k, d, before)
    return float(np.sum(-0.5 * math.log(2 * math.pi * SIGMA**2) - 0.5 * (r / SIGMA) ** 2))


SOLVERS = {
    "compiled dopri5": "solver: {engine: compiled, method: dopri5}",
    "compiled rk4": "solver: {engine: compiled, method: rk4, step: 0.01}",
    "compiled bdf": "solver: {engine: compiled, method: bdf}",
    "torchdiffeq dopri5": "solver: {engine: torchdiffeq, method: dopri5}",
    "torchdiffeq rk4": "solver: {engine: torchdiffeq, method: rk4, step: 0.01}",
}


@pytest.mark.parametrize("solver", SOLVERS)
def test_llh_and_gradient_through_the_jumps_are_the_closed_forms(write, solver):
    result = evaluate(config(write, SOLVERS[solver]), values={"k": 0.25, "D": 4.5})
    # rk4 with step 0.01: its error is about 1e-10 here; bdf's at the tight tolerances of evaluate about 1e-7
    tol = 1e-6 if "bdf" in solver else 1e-8
    assert result.llh == pytest.approx(llh(0.25, 4.5), rel=tol)
    dk, dd = gradient(TIMES, 0.25, 4.5)
    r = (MEASURED - closed_form(TIMES, 0.25, 4.5)) / SIGMA**2
    assert result.gradient["k"] == pytest.approx(float(r @ dk), rel=10 * tol)
    assert result.gradient["D"] == pytest.approx(float(r @ dd), rel=10 * tol)


@pytest.mark.parametrize("solver", SOLVERS)
def test_observed_before_sees_the_states_before_each_jump(write, solver):
    """``observed: before``: the observations at 4 and 12 (the dose times) see the states before the doses, the
    others are as with the default: the llh and gradient are the closed form's with the sum over tau < t."""
    path = config(write, SOLVERS[solver])
    path.write_text(path.read_text().replace('set: {x: "x + D"}}', 'set: {x: "x + D"}, observed: before}'))
    result = evaluate(path, values={"k": 0.25, "D": 4.5})
    tol = 1e-6 if "bdf" in solver else 1e-8
    assert result.llh == pytest.approx(llh(0.25, 4.5, before=True), rel=tol)
    assert abs(llh(0.25, 4.5, before=True) - llh(0.25, 4.5)) > 100  # the two readings differ by far more
    dk, dd = gradient(TIMES, 0.25, 4.5, before=True)
    r = (MEASURED - closed_form(TIMES, 0.25, 4.5, before=True)) / SIGMA**2
    assert result.gradient["k"] == pytest.approx(float(r @ dk), rel=10 * tol)
    assert result.gradient["D"] == pytest.approx(float(r @ dd), rel=10 * tol)


@pytest.mark.parametrize("solver", SOLVERS)
def test_observed_before_at_the_start_and_on_the_dense_curve(write, solver):
    """A dose at t0 seen before: the observation at 0 is the initial state, the solve goes on from the dosed one
    (the initial state is a piece of one time of its own); the dense curve holds the states before the dose at the
    dose time and after it just later (drawn upright)."""
    from ude_cli.fitting.model import UDEModel

    path = config(write, SOLVERS[solver])
    path.write_text(path.read_text().replace('- {at: [4.0, 12.0], set: {x: "x + D"}}',
                                             '- {at: [0, 4], set: {x: "x + D"}, observed: before}'))
    model = UDEModel(check(path))
    (sol,) = model.forward()
    x = sol[:, 0, 0, 0].detach().numpy()

    def expected(t):
        t = np.asarray(t, dtype=float)
        return X0 * np.exp(-K * t) + D * np.where(t > 0, np.exp(-K * t), 0) + D * np.where(t > 4, np.exp(-K * (t - 4)), 0)

    tol = 1e-4 if "bdf" in solver else 1e-5  # the default tolerances (bdf's error is 1.5e-5 at t = 16)
    assert x == pytest.approx(expected(TIMES), rel=tol)
    assert x[0] == pytest.approx(X0)
    t, y = model.dense(200)[0]
    for tau in (0.0, 4.0):
        i = int(np.searchsorted(t, tau))
        assert t[i] == tau and y[i, 0, 0] == pytest.approx(expected(tau), rel=tol)
        assert t[i + 1] - tau < 1e-4 and y[i + 1, 0, 0] == pytest.approx(expected(tau) + D, rel=1e-4)


def test_every_from_first_to_last_is_the_list_of_its_times(write):
    """every: 8, first: 4, last: 12 is at: [4, 12] (last included on the step): the same llh and gradient; a last
    off the step is not passed (last: 19.9 is 4 and 12 too)."""
    listed = evaluate(config(write), values={"k": 0.25, "D": 4.5})
    for last in (12, 19.9):
        path = config(write)
        path.write_text(path.read_text().replace("at: [4.0, 12.0]", f"every: 8, first: 4, last: {last}"))
        result = evaluate(path, values={"k": 0.25, "D": 4.5})
        assert result.llh == pytest.approx(listed.llh, rel=1e-12), last
        assert result.gradient["D"] == pytest.approx(listed.gradient["D"], rel=1e-10), last
    from ude_cli.config import EventSpec

    tenths = EventSpec(every=0.1, first=0, last=1, set={"x": "x"}).times()
    assert tenths == [k / 10 for k in range(11)]  # 0.3 exactly as a data time 0.3 reads (not 0.1 * 3)


@pytest.mark.parametrize(("event", "message"), [
    ("{every: 8, set: {x: 'x + D'}}", "'every' needs 'first' and 'last'"),
    ("{every: 8, first: 4, last: 2, set: {x: 'x + D'}}", "last (2) is before first (4)"),
    ("{every: 0, first: 4, last: 8, set: {x: 'x + D'}}", "model.events[0].every: must be > 0, got 0"),
    ("{at: [4], every: 8, first: 4, last: 8, set: {x: 'x + D'}}", "give one of 'at' (the times), 'every'"),
    ("{at: [4], last: 8, set: {x: 'x + D'}}", "'first' and 'last' go with 'every'"),
    ("{every: 1.0e-6, first: 0, last: 1, set: {x: 'x + D'}}", "is 1000001 jumps: at most 100000"),
    ("{every: 2, first: -1, last: 8, set: {x: 'x + D'}}", "model.events[0].first: a jump at t = -1 is before"),
])
def test_bad_repeats_are_named(write, event, message):
    text = config(write).read_text().replace(f"- {{at: {list(DOSES)}, set: {{x: \"x + D\"}}}}", f"- {event}")
    with pytest.raises(UdeError, match=re.escape(message)):
        check(write("bad.yaml", text))


def test_events_at_one_time_must_agree_on_what_it_observes(write):
    write("d.csv", "t,a,b\n0,1,3\n1,1,1\n2,1,1\n")
    path = write("c.yaml", """
        data: {file: d.csv, columns: {a: a, b: b}}
        model:
          states: [a, b]
          equations: {a: "-c*a", b: "-c*b"}
          parameters: {c: {init: 0.5}}
          initial: {a: 1, b: 3}
          events:
            - {at: [1, 2], set: {a: "a + 1"}}
            - {at: 2, set: {b: "b + 1"}, observed: before}
        """)
    with pytest.raises(UdeError) as info:
        check(path)
    assert str(info.value).count("\n") == 0 and ("model.events[1].observed: model.events[0] jumps at t = 2 too "
                                                  "(experiment '1') and observes after it") in str(info.value)


def test_a_fit_is_the_closed_form_least_squares_with_its_observed_information(write):
    """From k = 0.6, D = 1: the estimates are scipy's least squares on the closed form (k 0.30670, D 5.0651),
    the standard errors those of the closed form's observed information (the Hessian of the negative llh by
    central differences: 0.011324, 0.13897), and the truth is inside both intervals."""
    from scipy.optimize import least_squares

    result = fit(config(write, extra="training: {seed: 1}", k=0.6, d=1.0))
    rows = result.parameters.set_index("name")
    best = least_squares(lambda q: closed_form(TIMES, *q) - MEASURED, [0.5, 3.0], xtol=1e-14, ftol=1e-14).x

    def nll(q):
        r = (MEASURED - closed_form(TIMES, *q)) / SIGMA
        return 0.5 * float(r @ r)

    h, eye = 1e-5, np.eye(2)
    hessian = np.array([[(nll(best + h * (eye[i] + eye[j])) - nll(best + h * (eye[i] - eye[j]))
                          - nll(best - h * (eye[i] - eye[j])) + nll(best - h * (eye[i] + eye[j]))) / (4 * h * h)
                         for j in range(2)] for i in range(2)])
    se = np.sqrt(np.diag(np.linalg.inv(hessian)))
    for name, value, s, truth in zip(("k", "D"), best, se, (K, D), strict=True):
        assert rows.loc[name, "value"] == pytest.approx(value, abs=1e-3 * s), name
        assert rows.loc[name, "se"] == pytest.approx(s, rel=1e-3), name
        assert rows.loc[name, "ci_lower"] < truth < rows.loc[name, "ci_upper"], name
    # the fit's curve at the data times is the closed form at its own estimates (the jump is in the model)
    predicted = result.predictions.sort_values("time")["x_predicted"].to_numpy()
    assert predicted == pytest.approx(closed_form(TIMES, rows.loc["k", "value"], rows.loc["D", "value"]), rel=1e-5)


def test_the_dense_curve_jumps_upright_and_a_forecast_keeps_the_later_doses(write):
    from ude_cli.fitting.model import UDEModel

    problem = check(config(write))
    model = UDEModel(problem)
    t, y = model.dense(200)[0]
    assert y[:, 0, 0] == pytest.approx(closed_form(t), rel=1e-5)
    before = t[np.searchsorted(t, DOSES[0]) - 1]
    assert DOSES[0] - before < 1e-4  # a point just before the dose and one at it
    t, y = model.dense(200, until=30.0)[0]
    assert y[-1, 0, 0] == pytest.approx(closed_form(30.0), rel=1e-5)


def test_a_jump_at_the_start_changes_the_initial_state_and_jumps_read_the_states_before_them(write):
    """a and b swap at 2 (each formula reads the states before the jump); a dose at t0 = 0 adds to a's initial value."""
    write("d.csv", "t,a,b\n0,1,3\n1,1,1\n2,1,1\n3,1,1\n")
    path = write("c.yaml", """
        data: {file: d.csv, columns: {a: a, b: b}}
        model:
          states: [a, b]
          equations: {a: "0*a", b: "c"}
          parameters: {c: {init: 0.5}}
          initial: {a: 1, b: 3}
          t0: 0
          events:
            - {at: 0, set: {a: "a + 10"}}
            - {at: 2, set: {a: "b", b: "a"}}
        """)
    from ude_cli.fitting.model import UDEModel

    (sol,) = UDEModel(check(path)).forward()
    a, b = sol[:, 0, 0, 0].detach().numpy(), sol[:, 0, 0, 1].detach().numpy()
    assert a == pytest.approx([11, 11, 4, 4])  # b(2-) = 3 + 0.5 * 2 = 4
    assert b == pytest.approx([3, 3.5, 11, 11.5])


def test_events_of_some_experiments_only(write):
    write("d.csv", "e,t,x\n" + "".join(f"{e},{t},{y}\n" for e, f in (("dosed", 1.0), ("plain", 0.0))
                                         for t, y in zip(TIMES, X0 * np.exp(-K * TIMES) + f * (closed_form(TIMES)
                                                                                          - X0 * np.exp(-K * TIMES)),
                                                         strict=True)))
    path = write("c.yaml", f"""
        data: {{file: d.csv, experiment: e, columns: {{x: x}}}}
        model:
          states: [x]
          equations: {{x: "-k*x"}}
          parameters: {{k: {{init: {K}, fixed: true}}, D: {{init: {D}, fixed: true}}}}
          initial: {{x: {X0}}}
          events: [{{at: {list(DOSES)}, set: {{x: "x + D"}}, experiments: [dosed]}}]
        """)
    from ude_cli.config import load_config
    from ude_cli.fitting.model import UDEModel
    from ude_cli.problem import resolve

    model = UDEModel(resolve(load_config(path)))
    assert len(model.groups) == 2  # one schedule of jumps per group
    for g, sol in zip(model.groups, model.forward(), strict=True):
        name = model.problem.dataset.experiments[g.experiments[0]].name
        expected = closed_form(TIMES) if name == "dosed" else X0 * np.exp(-K * TIMES)
        assert sol[:, 0, 0, 0].detach().numpy() == pytest.approx(expected, rel=1e-5), name


def test_a_curriculum_solves_its_windows_through_the_jumps(write):
    result = fit(config(write, extra="training: {strategy: curriculum, warm_start: none}", k=0.5, d=3.0))
    rows = result.parameters.set_index("name")
    assert rows.loc["k", "value"] == pytest.approx(K, rel=0.05)
    assert rows.loc["D", "value"] == pytest.approx(D, rel=0.05)


@pytest.mark.parametrize(("events", "message"), [
    ("[{at: 4, set: {y: 'x + D'}}]", "model.events[0].set: unknown state 'y'"),
    ("[{at: 4, set: {x: 'x + q'}}]", "model.events[0].set.x: unknown name 'q'"),
    ("[{at: 4, set: {x: 'x + D'}, experiments: [other]}]", "model.events[0].experiments: unknown experiment 'other'"),
    ("[{at: -1, set: {x: 'x + D'}}]", "model.events[0].at: a jump at t = -1 is before experiment '1' starts (t = 0)"),
    ("[{at: 4, set: {x: 'x + D'}}, {at: [4, 5], set: {x: '2*x'}}]",
     "model.events[1].set: 'x' jumps at t = 4 in model.events[0] too"),
    ("[{at: [4, 4], set: {x: 'x + D'}}]", "model.events[0].at: a time is given twice"),
])
def test_bad_events_are_named(write, events, message):
    text = config(write).read_text().replace(f"- {{at: {list(DOSES)}, set: {{x: \"x + D\"}}}}", "")
    text = text.replace("events:", f"events: {events}")
    with pytest.raises(UdeError) as info:
        check(write("bad.yaml", text))
    assert message in str(info.value)


def test_multiple_shooting_and_collocation_refuse_jumps(write):
    with pytest.raises(UdeError, match="multiple shooting cannot be used with jumps"):
        fit(config(write, extra="training: {strategy: multiple_shooting}"))
    from ude_cli.fitting.collocation import applicable

    assert "model.events" in applicable(check(config(write)))



# -- PEtab: a jump is a later period of the experiment (v2) ---------------------------------------------------------

def test_export_writes_later_periods_that_import_back_to_the_same_llh_and_gradient(write, tmp_path):
    """Two experiments starting at 1 (t0 shifted to PEtab's 0), a dose per experiment read from a column, given in
    one of them only: the periods sit at the dose times less t0, and the re-imported problem is the same."""
    rows = ["e,t,x,dose"]
    for name, dose in (("low", 2.0), ("high", 6.0)):
        for t in TIMES[1:]:
            x = X0 * math.exp(-K * (t - 1)) + sum(dose * math.exp(-K * (t - tau)) for tau in DOSES if t >= tau)
            rows.append(f"{name},{t},{x * (1 + 0.05 * math.sin(3 * t))},{dose}")
    write("d.csv", "\n".join(rows) + "\n")
    path = write("c.yaml", f"""
        data: {{file: d.csv, experiment: e, columns: {{x: x}}}}
        model:
          states: [x]
          equations: {{x: "-k*x"}}
          parameters: {{k: {{init: 0.25, positive: true}}, f: {{init: 0.9}}}}
          constants: {{dose: {{column: dose}}}}
          initial: {{x: {X0}}}
          t0: 1
          events:
            - {{at: {list(DOSES)}, set: {{x: "x + f*dose"}}}}
            - {{at: 8, set: {{x: "x/2"}}, experiments: [high]}}
        noise: {{distribution: lognormal, sigma: 0.1}}
        """)
    from ude_cli.petab.export import export

    result = export(path, tmp_path / "out")
    folder = tmp_path / "out"
    periods = (folder / "experiments.tsv").read_text().splitlines()
    assert "high\t7.0\thigh_jump2" in periods and "low\t3.0\tlow_jump1" in periods
    assert not any(line.startswith("low\t7.0") for line in periods)
    original, again = evaluate(path), evaluate(result.problem)
    assert again.llh == pytest.approx(original.llh, abs=1e-8)
    for name in ("k", "f"):
        assert again.gradient[name] == pytest.approx(original.gradient[name], rel=1e-6)


def test_export_refuses_what_petab_cannot_say_of_a_jump(write, tmp_path):
    from ude_cli.petab.export import export

    with pytest.raises(UdeError, match="PEtab v2's periods, which v1 does not have"):
        export(config(write), tmp_path / "v1", version=1)
    assert not (tmp_path / "v1").exists()


def test_a_jump_at_the_start_goes_into_the_first_period_and_one_reading_a_learned_start_is_refused(write, tmp_path):
    """PEtab v2's first period is applied before the model is initialized and may not read a state
    (doc/v2/documentation_data_format.rst, "Initialization and parameter application"): x + D at t0 from a number
    x0 = 2 is written as the first period's condition x = 2 + D, and re-imports to the same llh and gradient; from
    a learned x0 it is refused, and nothing is written."""
    from ude_cli.petab.export import export

    start = write("start.yaml", config(write).read_text().replace(f"at: {list(DOSES)}", "at: [0, 4]"))
    result = export(start, tmp_path / "start")
    conditions = (tmp_path / "start" / "conditions.tsv").read_text()
    assert "\tx\t(2.0 + D)" in conditions, conditions
    assert "0.0" not in [line.split("\t")[1] for line in (tmp_path / "start" / "experiments.tsv").read_text()
                         .splitlines()[1:]][1:]  # one period at 0 (the first), one at 4
    original, again = evaluate(start), evaluate(result.problem)
    assert again.llh == pytest.approx(original.llh, abs=1e-8)
    assert again.gradient["D"] == pytest.approx(original.gradient["D"], rel=1e-6)
    learned = write("learned.yaml", start.read_text().replace(f"initial: {{x: {X0}}}", f"initial: {{x: {{value: {X0}, learn: true}}}}"))
    with pytest.raises(UdeError, match="a jump at the start time .0, experiment '1'.: PEtab v2's first period .* "
                                       "it reads x, whose initial value is learned"):
        export(learned, tmp_path / "learned")
    assert not (tmp_path / "learned").exists()


def test_check_says_which_states_jump_and_a_bad_event_is_one_line_exit_3(write):
    from typer.testing import CliRunner

    from ude_cli.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["check", str(config(write))])
    assert result.exit_code == 0 and "jumps (model.events) of x: 2 in each experiment during the data" in result.output
    bad = write("bad.yaml", config(write).read_text().replace('set: {x: "x + D"}', 'set: {x: "x +"}'))
    result = runner.invoke(app, ["check", str(bad)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 3 and len(lines) == 1 and "model.events[0].set.x" in lines[0]
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize("engine", ["compiled", "torchdiffeq"])
def test_a_switch_in_time_at_a_jump_keeps_its_stop(write, engine):
    """dx/dt = -k x + u where(t > 7, 1, 0) with doses at 5 and 7: the piece after the jump at 7 starts at the
    switch; its stop just after 7 was dropped (stops had to be a whole stop's distance inside a piece), so dopri5's
    first step read the right-hand side on the wrong side of the switch: torchdiffeq's d llh / dk was 1.6e-4 off.
    Against scipy solved in pieces (rtol 1e-12) and its central differences."""
    from scipy.integrate import solve_ivp

    times = np.arange(0.0, 15.5, 0.5)

    def solution(k, d, u):
        out, z = np.zeros(len(times)), np.array([1.0])
        for i, (a, b) in enumerate(((0, 5), (5, 7), (7, 15))):
            z = z + (d if i else 0.0)
            on = u if a >= 7 else 0.0
            s = solve_ivp(lambda t, x, on=on: -k * x + on, (a, b), z, rtol=1e-12, atol=1e-14, dense_output=True)
            pick = (times >= a) & ((times < b) | (b == 15))
            out[pick] = s.sol(times[pick])[0]
            z = s.sol(b)
        return out

    measured = solution(0.3, 2.0, 0.5) * (1 + 0.03 * np.cos(5 * times))
    write("d.csv", "t,x\n" + "".join(f"{t},{x}\n" for t, x in zip(times, measured, strict=True)))
    path = write("c.yaml", f"""
        data: {{file: d.csv, columns: {{x: x}}}}
        model:
          states: [x]
          equations: {{x: "-k*x + u*where(t > 7, 1, 0)"}}
          parameters: {{k: {{init: 0.3, positive: true}}, D: {{init: 2.0}}, u: {{init: 0.5}}}}
          initial: {{x: 1.0}}
          events: [{{at: [5, 7], set: {{x: "x + D"}}}}]
        noise: {{distribution: normal, sigma: {{init: 0.05, fixed: true}}}}
        solver: {{engine: {engine}, method: dopri5}}
        """)

    def llh(k, d, u):
        r = (measured - solution(k, d, u)) / 0.05
        return float(np.sum(-0.5 * math.log(2 * math.pi * 0.05**2) - 0.5 * r**2))

    at = {"k": 0.35, "D": 1.8, "u": 0.6}
    result = evaluate(path, values=at)
    assert result.llh == pytest.approx(llh(*at.values()), rel=1e-9)
    h = 1e-6
    for i, name in enumerate(at):
        up, down = list(at.values()), list(at.values())
        up[i] += h
        down[i] -= h
        assert result.gradient[name] == pytest.approx((llh(*up) - llh(*down)) / (2 * h), rel=1e-6), name


def test_a_network_in_a_jump_and_training_that_cannot_jump_are_named_by_check(write):
    text = config(write).read_text()
    with_net = text.replace("noise:", "networks: {U: {inputs: [x], outputs: 1, hidden: [4]}}\nnoise:").replace(
        'set: {x: "x + D"}', 'set: {x: "x + U"}')
    with pytest.raises(UdeError, match=r"model.events\[0\].set.x: 'x \+ U' uses the network U"):
        check(write("net.yaml", with_net))
    for training, where in (("{strategy: multiple_shooting}", "training.strategy"),
                            ("{stages: [{optimizer: adam, objective: collocation, iterations: 5}]}",
                             "training.stages[0].objective")):
        with pytest.raises(UdeError, match=f"{where.replace('[', '.').replace(']', '.')}.*model.events"):
            check(write("t.yaml", text + f"training: {training}\n"))


# -- dosing records read from the data (column: ...) --------------------------------------------------------------

def _dosing(write, extra=""):
    """Two subjects of an oral one-compartment model, each dosed on its own schedule by rows of the column `amt`
    (a row may hold a dose and an observation, or a dose alone); concentrations C = central / V."""
    rows = ["id,t,amt,conc"]
    doses = {"s1": {0.0: 100.0, 12.0: 100.0}, "s2": {0.0: 50.0, 8.0: 80.0, 16.0: 80.0}}
    observed = [0.5, 1, 2, 4, 6, 8, 10, 12, 13, 14, 18, 20, 24]
    for subject, given in doses.items():
        for t in sorted(set(observed) | set(given)):
            y = _pk(given, 1.2, 0.15, 30.0, np.array([t]))[0] * (1 + 0.05 * math.sin(7 * t)) if t in observed else ""
            rows.append(f"{subject},{t},{given.get(t, '')},{y}")
    write("pk.csv", "\n".join(rows) + "\n")
    return write("pk.yaml", f"""
        data: {{file: pk.csv, experiment: id}}
        model:
          states: [gut, central]
          equations: {{gut: "-ka*gut", central: "ka*gut - ke*central"}}
          parameters: {{ka: {{init: 1.0, positive: true}}, ke: {{init: 0.2, positive: true}}, V: {{init: 25, positive: true}}}}
          initial: {{gut: 0, central: 0}}
          t0: 0
          events: [{{column: amt, set: {{gut: "gut + amt"}}}}]
        observables: {{C: {{formula: central/V, column: conc, noise: {{distribution: normal, sigma: 0.1}}}}}}
        {extra}
        """), doses, observed


def _pk(given, ka, ke, v, times):
    from scipy.integrate import solve_ivp

    z, out, cuts = np.zeros(2), np.full(len(times), np.nan), sorted(given) + [30.0]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        z = z + np.array([given[a], 0.0])
        s = solve_ivp(lambda t, x: [-ka * x[0], ka * x[0] - ke * x[1]], (a, b), z, rtol=1e-12, atol=1e-12,
                      dense_output=True)
        pick = (times >= a) & (times < b)
        if pick.any():
            out[pick] = s.sol(times[pick])[1] / v
        z = s.sol(b)
    return out


def test_dosing_records_from_a_column_are_each_subjects_own_jumps(write):
    """llh and gradient of two subjects dosed by rows of `amt` (2 and 3 doses, one a row of its own) against scipy
    solved between the doses and its central differences; ude check counts each subject's doses."""
    import pandas as pd

    path, doses, observed = _dosing(write)
    data = pd.read_csv(path.parent / "pk.csv")
    at = {"ka": 0.9, "ke": 0.18, "V": 27.0}

    def llh(ka, ke, v):
        total = 0.0
        for subject, given in doses.items():
            rows = data[(data["id"] == subject) & data["conc"].notna()]
            r = (rows["conc"].to_numpy() - _pk(given, ka, ke, v, rows["t"].to_numpy())) / 0.1
            total += float(np.sum(-0.5 * math.log(2 * math.pi * 0.01) - 0.5 * r**2))
        return total

    result = evaluate(path, values=at)
    assert result.llh == pytest.approx(llh(*at.values()), rel=1e-9)
    for i, name in enumerate(at):
        up, down = list(at.values()), list(at.values())
        up[i], down[i] = up[i] + 1e-6, down[i] - 1e-6
        assert result.gradient[name] == pytest.approx((llh(*up) - llh(*down)) / 2e-6, rel=1e-5), name
    from ude_cli.fitting.events import summary

    assert summary(check(path)) == ("jumps (model.events) of gut: 2 to 3 per experiment during the data; 2 "
                                    "observations at a jump's time see the states after it (observed: before, for "
                                    "samples taken just before a dose)")  # s1 at 12, s2 at 8


def test_a_trough_sample_in_a_dose_row_is_seen_before_the_dose(write, tmp_path):
    """An intravenous bolus (central + amt) with ``observed: before``: the samples at 12 (s1) and 8, 16 (s2), in the
    dose rows, are troughs, C = sum over the doses strictly before t of amt e^{-ke (t - tau)} / V, to 1e-9; the
    default reading (after) adds the dose there. Export refuses it (a PEtab measurement at a period's start sees
    its condition) and writes nothing."""
    import pandas as pd

    path, doses, _ = _dosing(write)
    bolus = path.read_text().replace('events: [{column: amt, set: {gut: "gut + amt"}}]',
                                     'events: [{column: amt, set: {central: "central + amt"}, observed: before}]')
    path.write_text(bolus)
    data = pd.read_csv(path.parent / "pk.csv")
    ke, v = 0.18, 27.0

    def llh(before):
        total = 0.0
        for subject, given in doses.items():
            rows = data[(data["id"] == subject) & data["conc"].notna()]
            t = rows["t"].to_numpy()
            c = sum(a * np.where(t > tau if before else t >= tau, np.exp(-ke * (t - tau)), 0.0)
                    for tau, a in given.items()) / v
            r = (rows["conc"].to_numpy() - c) / 0.1
            total += float(np.sum(-0.5 * math.log(2 * math.pi * 0.01) - 0.5 * r**2))
        return total

    at = {"ka": 0.9, "ke": ke, "V": v}
    assert evaluate(path, values=at).llh == pytest.approx(llh(True), rel=1e-9)
    after = write("after.yaml", bolus.replace(", observed: before", ""))
    assert evaluate(after, values=at).llh == pytest.approx(llh(False), rel=1e-9)
    assert abs(llh(True) - llh(False)) > 100
    from ude_cli.petab.export import export

    with pytest.raises(UdeError, match=re.escape("an observation at t = 12 (experiment 's1') sees the states before "
                                                 "the jump there (observed: before)")):
        export(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dosing_records_export_as_periods_with_each_rows_amount(write, tmp_path):
    from ude_cli.petab.export import export

    path, _, _ = _dosing(write)
    at_start = export(path, tmp_path / "start")  # the doses at t0 = 0: the first period's condition, gut = 0 + amt
    assert "s1_condition\tgut\t(0.0 + 100" in (tmp_path / "start" / "conditions.tsv").read_text()
    assert evaluate(at_start.problem).llh == pytest.approx(evaluate(path).llh, abs=1e-8)
    path.write_text(path.read_text().replace("t0: 0", "t0: -0.5"))  # every dose a later period
    result = export(path, tmp_path / "out")
    conditions = (tmp_path / "out" / "conditions.tsv").read_text()
    assert "s2_jump2\tgut\t(gut + 80" in conditions and "s1_jump1\tgut\t(gut + 100" in conditions
    assert evaluate(result.problem).llh == pytest.approx(evaluate(path).llh, abs=1e-8)


@pytest.mark.parametrize(("event", "message"), [
    ("{column: nowhere, set: {gut: 'gut + 1'}}", "no column 'nowhere' (named by model.events)"),
    ("{column: ka, set: {gut: 'gut + 1'}}", "the column 'ka' is also the name of a state, parameter"),
    ("{column: amt, at: [1], set: {gut: 'gut + amt'}}", "or 'column' (a data column of dosing records), not at and "
                                                      "column"),
    ("{column: amt, set: {gut: 'gut + amt'}, experiments: [s9]}", "unknown experiment 's9'"),
])
def test_bad_dosing_records_are_named(write, event, message):
    path, _, _ = _dosing(write)
    text = path.read_text().replace("events: [{column: amt, set: {gut: \"gut + amt\"}}]", f"events: [{event}]")
    with pytest.raises(UdeError, match=re.escape(message)):
        check(write("bad.yaml", text))


def test_a_dosing_row_alone_is_no_time_point_of_the_data(write):
    """A row that holds a dose and no observation does not count among an experiment's time points: the validation
    window's last 30 % are of the 13 observed rows (4 per subject), not of the rows with the doses alone too."""
    path, _, _ = _dosing(write)
    text = path.read_text().replace("data: {file: pk.csv, experiment: id}",
                                    "data: {file: pk.csv, experiment: id, validation: {last_fraction: 0.3}}")
    problem = check(write("val.yaml", text))
    for e in problem.dataset.experiments:
        held = e.t[~e.train & e.observed]
        assert list(held) == [14.0, 18.0, 20.0, 24.0], e.name
        assert int((e.train & e.observed).sum()) == 9


def test_a_forecast_past_the_last_jump_says_none_is_repeated(write):
    from ude_cli.forecast import _jumps_note

    problem = check(config(write))
    assert _jumps_note(problem, [0], 10.0) == []  # the dose at 12 is still ahead
    assert _jumps_note(problem, [0], 30.0) == ["the states jump only at the times model.events gives (the last at "
                                               "t = 12): none is repeated up to t = 30"]


def test_a_jump_that_is_not_finite_is_named_and_a_subject_of_doses_only_is_refused(write):
    """log(gut - amt) at a dose into an empty gut: the error names model.events[0].set.gut (it blamed the solver);
    a subject whose rows are all dosing records observes nothing, said so (it said '0 time point')."""
    path, _, _ = _dosing(write)
    bad = write("nan.yaml", path.read_text().replace('set: {gut: "gut + amt"}', 'set: {gut: "log(gut - amt)"}'))
    with pytest.raises(UdeError, match=re.escape("model.events[0].set.gut: the jump's value is not finite at t = 0")):
        fit(bad)
    text = (path.parent / "pk.csv").read_text() + "s3,0,100,\ns3,12,100,\n"
    (path.parent / "pk.csv").write_text(text)
    with pytest.raises(UdeError, match=re.escape("experiment 's3' observes nothing: its 2 rows are dosing records "
                                                 "only")):
        check(path)
