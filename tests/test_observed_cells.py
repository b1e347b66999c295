"""Observables only where they are measured: experiments of one time after model.t0, and formulas that are not
finite at a cell nothing measures (both met first in PEtab benchmark problems: Schwen_PONE2014, Lucarelli and
Bachmann measure some conditions once; Laske_PLOSComputBiol2019's fraction of states is 0/0 at t0).

The known answer is closed form: ``dx/dt = a - k x``, ``dy/dt = k x`` from ``x = y = 0`` give
``x = (a/k)(1 - exp(-k t))`` and ``x + y = a t``, so the observable ``frac = y / (x + y) = 1 - x / (a t)`` is 0/0
at t0 = 0, where only ``total = x + y`` is measured.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ude_cli.petab import evaluate

A, K, SIGMA_F, SIGMA_T = 1.5, 0.7, 0.05, 0.2


def closed_form(t, a=A, k=K):
    x = (a / k) * (1 - math.exp(-k * t))
    total = a * t
    return total, (1 - x / total) if t > 0 else float("nan")


ROWS = [("A", 0.0, 0.1, None), ("A", 1.0, None, 0.31), ("A", 2.0, 3.2, 0.52), ("A", 3.0, None, 0.6),
        ("B", 2.5, None, 0.55)]  # experiment B: one measurement, after t0


def expected_llh(a=A, k=K) -> float:
    total = 0.0
    for _, t, tot, frac in ROWS:
        m_tot, m_frac = closed_form(t, a, k)
        for y, m, s in ((tot, m_tot, SIGMA_T), (frac, m_frac, SIGMA_F)):
            if y is not None:
                total += -0.5 * math.log(2 * math.pi * s * s) - 0.5 * ((y - m) / s) ** 2
    return total


@pytest.fixture
def config(write):
    lines = ["run,t,total,frac"] + [f"{e},{t},{'' if a is None else a},{'' if b is None else b}" for e, t, a, b in ROWS]
    write("d.csv", "\n".join(lines) + "\n")
    return write("c.yaml", f"""
        data: {{file: d.csv, time: t, experiment: run}}
        model:
          states: [x, y]
          parameters: {{a: {{init: {A}}}, k: {{init: {K}}}}}
          equations: {{x: a - k*x, y: k*x}}
          initial: {{x: 0, y: 0}}
          t0: 0
        observables:
          total: {{formula: x + y, column: total, noise: {{distribution: normal, sigma: {SIGMA_T}}}}}
          frac: {{formula: y/(x + y), column: frac, noise: {{distribution: normal, sigma: {SIGMA_F}}}}}
        solver: {{rtol: 1.0e-12, atol: 1.0e-14}}
        """)


def test_llh_and_gradient_ignore_a_formula_undefined_where_nothing_is_measured(config):
    result = evaluate(config, rtol=1e-12, atol=1e-14)
    assert np.isfinite(result.llh)
    assert result.llh == pytest.approx(expected_llh(), abs=1e-8)
    for name, value in (("a", A), ("k", K)):
        h = 1e-6
        up = expected_llh(**{name: value + h}) if name == "a" else expected_llh(k=value + h)
        down = expected_llh(**{name: value - h}) if name == "a" else expected_llh(k=value - h)
        assert result.gradient[name] == pytest.approx((up - down) / (2 * h), rel=1e-6)
    # the simulations table reports the measured cells: B's single one included
    sims = result.simulations
    assert len(sims) == sum((a is not None) + (b is not None) for _, _, a, b in ROWS)
    assert np.isfinite(sims["simulation"]).all()


def test_an_experiment_of_one_time_needs_t0(write, config):
    text = config.read_text().replace("  t0: 0\n", "")
    bare = write("no_t0.yaml", text)
    from ude_cli.errors import UdeError

    with pytest.raises(UdeError, match="experiment 'B' has 1 time point; at least 2 are needed to fit "
                                       r"\(one when model.t0 is given\)"):
        evaluate(bare)


def test_a_fit_with_such_data_recovers_the_parameters(config, tmp_path):
    import yaml

    from ude_cli.api import fit
    from ude_cli.config import load_config

    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["parameters"] = {"a": {"init": 1.0, "positive": True}, "k": {"init": 1.0, "positive": True}}
    cfg["training"] = {"stages": [{"optimizer": "lbfgs", "iterations": 200}]}
    start = tmp_path / "start.yaml"
    start.write_text(yaml.safe_dump(cfg))
    result = fit(load_config(start))
    assert np.isfinite(result.metrics["likelihood"]["nll"])
    from scipy.optimize import minimize

    best = minimize(lambda p: -expected_llh(*p), [1.0, 1.0], method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    assert -result.metrics["likelihood"]["nll"] == pytest.approx(-best.fun, abs=1e-5)
    assert result.values["a"] == pytest.approx(best.x[0], rel=1e-4)
    assert result.values["k"] == pytest.approx(best.x[1], rel=1e-4)


# -- where(...): an input switched off at a time (SBML piecewise) ------------------------------------------------

def switched(t, k, d, off=2.0):
    """x(t) of dx/dt = where(t < off, k, 0) - d x, x(0) = 0."""
    if t <= off:
        return (k / d) * (1 - math.exp(-d * t))
    return (k / d) * (1 - math.exp(-d * off)) * math.exp(-d * (t - off))


TIMES = [0.5, 1.0, 1.5, 2.5, 3.0, 4.0, 5.0]
DATA = [0.4, 0.7, 0.9, 0.75, 0.6, 0.35, 0.2]


def switched_llh(k, d, sigma=0.05):
    return sum(-0.5 * math.log(2 * math.pi * sigma**2) - 0.5 * ((y - switched(t, k, d)) / sigma) ** 2
               for t, y in zip(TIMES, DATA, strict=True))


@pytest.mark.parametrize("engine", ["compiled", "torchdiffeq"])
def test_a_where_switch_in_time_matches_the_closed_form(write, engine):
    write("s.csv", "t,x\n" + "".join(f"{t},{y}\n" for t, y in zip(TIMES, DATA, strict=True)))
    config = write(f"s_{engine}.yaml", f"""
        data: {{file: s.csv, time: t}}
        model:
          states: [x]
          parameters: {{k: {{init: 0.9}}, d: {{init: 0.6}}}}
          equations: {{x: "where(t < 2, k, 0) - d*x"}}
          initial: {{x: 0}}
          t0: 0
        observables: {{x: {{formula: x, column: x, noise: {{distribution: normal, sigma: 0.05}}}}}}
        solver: {{engine: {engine}, rtol: 1.0e-12, atol: 1.0e-14}}
        """)
    result = evaluate(config, rtol=1e-12, atol=1e-14)
    assert result.llh == pytest.approx(switched_llh(0.9, 0.6), abs=1e-6)
    h = 1e-6
    assert result.gradient["k"] == pytest.approx((switched_llh(0.9 + h, 0.6) - switched_llh(0.9 - h, 0.6)) / (2 * h),
                                                 rel=1e-5)
    assert result.gradient["d"] == pytest.approx((switched_llh(0.9, 0.6 + h) - switched_llh(0.9, 0.6 - h)) / (2 * h),
                                                 rel=1e-5)


def test_where_exports_as_sbml_piecewise_and_reimports(write, tmp_path):
    from ude_cli.petab.export import export

    write("s.csv", "t,x\n" + "".join(f"{t},{y}\n" for t, y in zip(TIMES, DATA, strict=True)))
    config = write("s.yaml", """
        data: {file: s.csv, time: t}
        model:
          states: [x]
          parameters: {k: {init: 0.9}, d: {init: 0.6}}
          equations: {x: "where(t < 2 and not (x > 10), k, 0) - d*x"}
          initial: {x: 0}
          t0: 0
        observables: {x: {formula: x, column: x, noise: {distribution: normal, sigma: 0.05}}}
        solver: {rtol: 1.0e-12, atol: 1.0e-14}
        """)
    result = export(config, tmp_path / "out", check=False)
    assert "<piecewise>" in (tmp_path / "out" / "model.xml").read_text()
    original, again = evaluate(config, rtol=1e-12, atol=1e-14), evaluate(result.problem, rtol=1e-12, atol=1e-14)
    assert again.llh == pytest.approx(original.llh, abs=1e-8)
    assert original.llh == pytest.approx(switched_llh(0.9, 0.6), abs=1e-6)
