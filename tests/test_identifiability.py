"""Intervals against known answers: R's nls / nlsList standard errors, an independent profile likelihood
(scipy on the closed-form curve), the mean of normal data; the network's compensation flagged; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ude_cli import fit, load_config
from ude_cli.cli import app

from .conftest import REPO

runner = CliRunner()

# ../shared/data/orange_trees_logistic/source.md (cran/nlme tests/extras/scripts.Rout.save, lines 6763-6765)
NLS_SE = {"Asym": 20.2, "xmid": 107.3, "scal": 81.5}
# nlsList(SSlogis, Orange): per tree (the data's tree labels) Asym, xmid, scal standard errors (lines 6885-6903)
NLSLIST_SE = {"3": (19.2, 130.8, 94.8), "1": (13.6, 92.9, 81.2), "5": (22.0, 108.0, 66.8),
              "2": (13.4, 61.4, 49.4), "4": (11.8, 51.2, 41.6)}


def _se(result) -> dict[str, float]:
    rows = result.parameters
    return dict(zip(rows["name"], rows["se"], strict=True))


def test_wald_standard_errors_equal_nls():
    result = fit(load_config(REPO / "configs/orange_trees.yaml"))
    se = _se(result)
    for name, published in NLS_SE.items():  # printed to one decimal
        assert round(se[name], 1) == published, (name, se[name])
    row = result.parameters.set_index("name").loc["Asym"]
    assert row["ci_method"] == "wald (Gauss-Newton information, as nls)" and row["identifiable"]
    # value +- t(32) * se: Asym is bounded, not `positive`, so the interval is symmetric
    from scipy import stats

    q = stats.t.ppf(0.975, 32)
    assert row["ci_lower"] == pytest.approx(row["value"] - q * row["se"], rel=1e-12)


def test_wald_standard_errors_equal_nls_list_with_the_pooled_sigma():
    result = fit(load_config(REPO / "configs/orange_trees_per_tree.yaml"))
    se = _se(result)
    for tree, published in NLSLIST_SE.items():
        for name, value in zip(("Asym", "xmid", "scal"), published, strict=True):
            assert round(se[f"{name}[{tree}]"], 1) == value, (name, tree, se)  # printed to one decimal


def test_mean_of_normal_data_band_and_interval(write, tmp_path):
    """dx/dt = 0 with x(0) learned: the fit is the mean, its Wald se s/sqrt(n), the confidence band mean +- 1.96 se
    (sampled), the prediction band mean +- 1.96 sigma."""
    rng = np.random.default_rng(3)
    y = 10 + rng.normal(0, 2.0, 40)
    lines = ["t,y"] + [f"{i},{v:.12g}" for i, v in enumerate(y)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    path = write("c.yaml", """
        data: {file: d.csv, time: t, columns: {x: y}}
        model:
          states: [x]
          parameters: {}
          equations: {x: "0*x"}
          initial: {x: {learn: true}}
        training: {stages: [{optimizer: lbfgs, iterations: 200}]}
        uncertainty: {band_samples: 4000}
        """)
    result = fit(load_config(path))
    row = result.parameters.set_index("name").loc["x(t0)"]
    n = len(y)
    s = y.std(ddof=1)
    assert row["value"] == pytest.approx(y.mean(), rel=1e-7)
    assert row["se"] == pytest.approx(s / np.sqrt(n), rel=1e-5)  # n/(n-1) * RSS/n = s^2
    pred = result.predictions
    half = (pred["x_ci_upper"] - pred["x_ci_lower"]).to_numpy() / 2
    assert half.mean() == pytest.approx(1.96 * s / np.sqrt(n), rel=0.06)
    half_pi = (pred["x_pi_upper"] - pred["x_pi_lower"]).to_numpy() / 2
    sigma_ml = y.std(ddof=0)
    assert half_pi.mean() == pytest.approx(1.96 * np.hypot(sigma_ml, s / np.sqrt(n)), rel=0.06)


@pytest.mark.slow
def test_profile_intervals_equal_an_independent_profile():
    """Orange trees, pooled: profile intervals (F-calibrated, as profile.nls) against scipy least squares on the
    closed-form SSlogis curve, re-optimised at each point, and a root finder for the ends."""
    import pandas as pd
    from scipy import stats
    from scipy.optimize import brentq, least_squares

    cfg = load_config(REPO / "configs/orange_trees.yaml")
    cfg = cfg.model_copy(update={"uncertainty": cfg.uncertainty.model_copy(update={"profile": ["Asym", "xmid",
                                                                                                "scal"]})})
    result = fit(cfg)
    d = pd.read_csv(REPO / "data/orange_trees/orange.csv")
    t, y = d.age_days.to_numpy(), d.circumference_mm.to_numpy()

    def resid(p):
        return p[0] / (1 + np.exp((p[1] - t) / p[2])) - y

    best = least_squares(resid, [190, 700, 350], xtol=1e-15, ftol=1e-15)
    rss0, n = (best.fun ** 2).sum(), len(y)
    threshold = n * np.log1p(stats.f.ppf(0.95, 1, n - 3) / (n - 3))

    def statistic(i, v):
        free = [j for j in range(3) if j != i]

        def r(q):
            p = np.empty(3)
            p[i], p[free] = v, q
            return resid(p)

        fitted = least_squares(r, best.x[free], xtol=1e-14, ftol=1e-14)
        return n * np.log((fitted.fun ** 2).sum() / rss0) - threshold

    rows = result.parameters.set_index("name")
    for i, name in enumerate(("Asym", "xmid", "scal")):
        x = best.x[i]
        lo = brentq(lambda v, i=i: statistic(i, v), 0.5 * x, x)
        hi = brentq(lambda v, i=i: statistic(i, v), x, 2.2 * x)
        assert rows.loc[name, "ci_method"] == "profile likelihood"
        assert rows.loc[name, "ci_lower"] == pytest.approx(lo, rel=2e-3), name
        assert rows.loc[name, "ci_upper"] == pytest.approx(hi, rel=2e-3), name


@pytest.mark.slow
def test_a_rate_the_network_can_compensate_is_flagged():
    """The bundled learned-gamma sample: gamma is identified only through the weight decay; with the network
    re-fitted in the curvature its variance grows by orders of magnitude, and the fit says so."""
    result = fit(load_config(REPO / "configs/lotka_volterra_learn_gamma.yaml"))
    unc = result.metrics["uncertainty"]
    flagged = {b["name"]: b["reason"] for b in unc["not_identifiable"]}
    assert "gamma" in flagged and "network compensates" in flagged["gamma"]
    wald = {w["name"]: w for w in unc["wald"]["intervals"]}
    assert wald["gamma"]["variance_inflation"] > 100


def test_bad_uncertainty_requests_exit_3(write, lv_csv):
    base = f"""
        data: {{file: {lv_csv}, time: t, columns: {{x: prey, y: predator}}}}
        model:
          builtin: lotka_volterra
          parameters: {{alpha: {{fixed: true}}}}
        training: {{stages: [{{optimizer: lbfgs, iterations: 5}}]}}
        """
    fixed = write("fixed.yaml", base + "uncertainty: {profile: [alpha]}\n")
    r = runner.invoke(app, ["fit", str(fixed), "--out", str(fixed.parent / "r1"), "--no-plots"])
    assert r.exit_code == 3, r.output
    assert "'alpha' is fixed" in r.output and "uncertainty.profile" in r.output and "Traceback" not in r.output
    assert not (fixed.parent / "r1").exists()
    level = write("level.yaml", base + "uncertainty: {level: 1.5}\n")
    r = runner.invoke(app, ["fit", str(level), "--out", str(level.parent / "r2"), "--no-plots"])
    assert r.exit_code == 3 and "uncertainty.level" in r.output, r.output
    neural = write("neural.yaml", f"""
        data: {{file: {lv_csv}, time: t, columns: {{x: prey, y: predator}}}}
        model:
          states: [x, y]
          equations: {{x: "U[0]", y: "U[1]"}}
        networks: {{U: {{inputs: [x, y], outputs: 2, hidden: [4]}}}}
        training: {{stages: [{{optimizer: lbfgs, iterations: 5}}]}}
        """)
    r = runner.invoke(app, ["fit", str(neural), "--out", str(neural.parent / "r3"), "--no-plots", "--profile"])
    assert r.exit_code == 3 and "nothing to profile" in r.output, r.output
    assert not (neural.parent / "r3").exists()


def test_interval_columns_in_params_files(tmp_path):
    result = fit(load_config(REPO / "configs/flu_sir_negbin.yaml"))
    out = result.save(tmp_path / "run", plots=False)
    rows = {r["name"]: r for r in json.loads((out / "params.json").read_text())}
    beta = rows["beta"]
    assert beta["ci_lower"] < beta["value"] < beta["ci_upper"] and beta["ci_level"] == 0.95
    assert beta["ci_method"].startswith("wald (observed information")
    # a value kept positive gets its interval on log scale: never below 0
    assert rows["dispersion_in_bed"]["ci_lower"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["uncertainty"]["intervals"]["gamma"]["method"] == beta["ci_method"]


def test_derived_quantity_by_the_delta_method():
    """R0 = beta/gamma of the flu fit: se^2 = g' Cov g with the analytic gradient g = (1/gamma, -beta/gamma^2)
    and the fit's Wald covariance (the code differentiates the formula numerically)."""
    result = fit(load_config(REPO / "configs/flu_sir_negbin.yaml"))
    unc = result.metrics["uncertainty"]
    r0 = unc["derived"]["R0"]
    values = result.values
    assert r0["value"] == pytest.approx(values["beta"] / values["gamma"], rel=1e-12)
    wald = result.uncertainty.wald
    ts = [t.name for t in wald.targets]
    D = np.array([t.derivative() for t in wald.targets])
    cov = wald.cov_u * np.outer(D, D)
    i, j = ts.index("beta"), ts.index("gamma")
    b, g = values["beta"], values["gamma"]
    grad = np.array([1 / g, -b / g ** 2])
    sub = cov[np.ix_([i, j], [i, j])]
    assert r0["se"] == pytest.approx(float(np.sqrt(grad @ sub @ grad)), rel=1e-5)
    assert r0["lower"] == pytest.approx(r0["value"] - 1.959964 * r0["se"], rel=1e-5)
    # Stan's posterior (../shared/data/flu_boarding_school_1978.md): R0 mean 3.22, 95 % [2.74, 3.83]
    assert 2.6 < r0["lower"] < 3.0 and 3.4 < r0["upper"] < 3.9


@pytest.mark.slow
def test_lynx_hare_profile_intervals_beside_stan():
    """80 % profile intervals of the lynx-hare fit against Carpenter's Stan case study (weak priors there)."""
    cfg = load_config(REPO / "configs/lynx_hare_lognormal.yaml")
    cfg = cfg.model_copy(update={"uncertainty": cfg.uncertainty.model_copy(update={"level": 0.8, "profile": [
        "alpha", "beta", "gamma", "delta"], "bands": False})})
    result = fit(cfg)
    stan = {"alpha": (0.47, 0.63), "beta": (0.023, 0.033), "gamma": (0.69, 0.91), "delta": (0.020, 0.029)}
    rows = result.parameters.set_index("name")
    for name, (lo, hi) in stan.items():
        assert rows.loc[name, "ci_method"] == "profile likelihood"
        assert rows.loc[name, "ci_lower"] == pytest.approx(lo, rel=0.06), name
        assert rows.loc[name, "ci_upper"] == pytest.approx(hi, rel=0.06), name


@pytest.mark.slow
def test_a_correction_that_sees_the_state_makes_r_and_k_not_identifiable(write, tmp_path):
    """The measured case: built-in logistic with a correction network on N absorbs the growth term. Both r and
    K are flagged after the fit; the mechanism alone identifies them, and its intervals cover the truth."""
    t = np.linspace(0, 10, 30)
    n = 100 / (1 + (100 / 5 - 1) * np.exp(-0.8 * t))
    y = n * (1 + 0.02 * np.random.default_rng(1).standard_normal(t.size))
    (tmp_path / "d.csv").write_text("t,N\n" + "\n".join(f"{a},{b}" for a, b in zip(t, y, strict=True)) + "\n")
    corrected = write("corrected.yaml", """
        data: {file: d.csv, time: t, columns: {N: N}}
        model: {builtin: logistic, corrections: {N: "U[0]"}}
        networks: {U: {inputs: [N], outputs: 1, hidden: [16]}}
        uncertainty: {hessian: profiled, bands: false}
        """)
    result = fit(load_config(corrected))
    flagged = {b["name"] for b in result.metrics["uncertainty"]["not_identifiable"]}
    assert {"r", "K"} <= flagged
    mechanism = write("mechanism.yaml", """
        data: {file: d.csv, time: t, columns: {N: N}}
        model: {builtin: logistic}
        """)
    rows = fit(load_config(mechanism)).parameters.set_index("name")
    for name, truth in (("r", 0.8), ("K", 100.0)):
        assert rows.loc[name, "identifiable"] and rows.loc[name, "ci_lower"] < truth < rows.loc[name, "ci_upper"]


@pytest.mark.slow
def test_coverage_small():
    """Ten replicates of the coverage benchmark's SIR model (bench/coverage.py): nominal 95 % Wald intervals
    cover the truth in at least 8 of 10 (a calibrated interval fails this with probability 1 %)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("coverage_bench", REPO / "bench/coverage.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.run("sir", 10, profile=False)
    assert out["failures"] == 0
    for name in ("beta", "gamma"):
        assert out["counted"][(name, "wald")] == 10
        assert out["hits"][(name, "wald")] >= 8, out


def test_a_product_of_two_rates_leaves_each_unidentifiable(write, tmp_path):
    """dx/dt = -a*b*x: the data fix a*b only. The information matrix is singular in a/b: both values are
    flagged, their Wald intervals unbounded; with one of them fixed the other is identified."""
    t = np.linspace(0, 4, 25)
    y = 3 * np.exp(-0.6 * t) * (1 + 0.01 * np.random.default_rng(2).standard_normal(t.size))
    (tmp_path / "d.csv").write_text("t,x\n" + "\n".join(f"{a},{b}" for a, b in zip(t, y, strict=True)) + "\n")
    both = write("both.yaml", """
        data: {file: d.csv, time: t, columns: {x: x}}
        model:
          states: [x]
          parameters: {a: {init: 1.0, positive: true}, b: {init: 1.0, positive: true}}
          equations: {x: -a*b*x}
        training: {stages: [{optimizer: lbfgs, iterations: 300}]}
        uncertainty: {bands: false}
        """)
    result = fit(load_config(both))
    rows = result.parameters.set_index("name")
    assert result.values["a"] * result.values["b"] == pytest.approx(0.6, rel=0.02)
    for name in ("a", "b"):
        assert rows.loc[name, "identifiable"] is False or rows.loc[name, "identifiable"] == False  # noqa: E712
        assert not np.isfinite(rows.loc[name, "ci_upper"]) or rows.loc[name, "ci_upper"] / rows.loc[name, "ci_lower"] > 1e3
    one = write("one.yaml", both.read_text().replace("b: {init: 1.0, positive: true}", "b: {init: 1.0, fixed: true}"))
    rows = fit(load_config(one)).parameters.set_index("name")
    assert rows.loc["a", "identifiable"] and rows.loc["a", "ci_lower"] < 0.6 < rows.loc["a", "ci_upper"]


@pytest.mark.slow
def test_the_recovered_model_identifies_what_the_ude_could_not(tmp_path):
    """The remedy of docs/identifiability.md: the learned-gamma UDE flags gamma; `ude discover`'s recovered model
    (no network) gets its own profile intervals, and gamma's is closed and covers the truth 0.8."""
    from ude_cli.discovery.files import discover_run

    result = fit(load_config(REPO / "configs/lotka_volterra_learn_gamma.yaml"))
    assert "gamma" in {b["name"] for b in result.metrics["uncertainty"]["not_identifiable"]}
    run = result.save(tmp_path / "run", plots=False)
    discovery, target = discover_run(run, plots=False)
    own = json.loads((target / "discovery.json").read_text())["recovered_intervals"]
    assert "intervals" in own, own
    gamma = own["intervals"]["gamma"]
    assert own["method"].startswith("profile likelihood") and gamma["method"] == "profile likelihood"
    assert gamma["identifiable"] and gamma["lower"] < 0.8 < gamma["upper"]
    assert gamma["upper"] - gamma["lower"] < 0.2


def test_forecast_bands_from_parameter_draws(tmp_path):
    """ude predict on a one-start run: the band is the central 95 % of Wald draws (a confidence band, the fit's
    line inside it) and the prediction band adds the noise model's scatter around the draws."""
    from ude_cli.forecast import forecast
    from ude_cli.runs.load import load_run

    run_dir = fit(load_config(REPO / "configs/flu_sir_negbin.yaml")).save(tmp_path / "run", plots=False)
    fc = forecast(load_run(run_dir), 20.0)
    f = fc.frame[fc.frame["model"] == "UDE"]
    assert any("Wald distribution" in n for n in fc.notes)
    inside = (f["I_lower"] <= f["I"] + 1e-9) & (f["I"] <= f["I_upper"] + 1e-9)
    assert inside.all()
    assert (f["I_pi_upper"] - f["I_pi_lower"] >= f["I_upper"] - f["I_lower"] - 1e-9).mean() > 0.95
    assert (f["I_upper"] - f["I_lower"]).max() > 1.0  # a band, not a line


def _michaelis_menten(write, tmp_path, uncertainty: str):
    """Michaelis-Menten data that never come near Km (S from 10 down to 5; Vmax = 1, Km = 0.5; 20 points, normal
    noise sd 0.05), and the config that fits Vmax and Km from 2 with ``uncertainty``."""
    from scipy.integrate import solve_ivp

    t = np.linspace(0, 5, 20)
    s = solve_ivp(lambda _, u: [-u[0] / (0.5 + u[0])], (0, 5), [10.0], t_eval=t, rtol=1e-10).y[0]
    y = s + np.random.default_rng(4).normal(0, 0.05, t.size)
    (tmp_path / "mm.csv").write_text("t,S\n" + "\n".join(f"{a},{b}" for a, b in zip(t, y, strict=True)) + "\n")
    return write("mm.yaml", f"""
        data: {{file: mm.csv, time: t, columns: {{S: S}}}}
        model:
          states: [S]
          parameters: {{Vmax: {{init: 2, positive: true}}, Km: {{init: 2, positive: true}}}}
          equations: {{S: -Vmax*S/(Km + S)}}
        noise: normal
        uncertainty: {uncertainty}
        """)


def test_a_value_driven_to_the_edge_of_its_range_is_said(write, tmp_path):
    """Michaelis-Menten data that never come near Km: the fit drives Km towards 0. Km is flagged and a note says
    the other values' Wald intervals hold only with Km there."""
    result = fit(load_config(_michaelis_menten(write, tmp_path, "{bands: false}")))
    unc = result.metrics["uncertainty"]
    assert result.values["Km"] < 2e-6  # the fit ran Km to the edge of its log scale
    assert "Km" in {b["name"] for b in unc["not_identifiable"]}
    assert any(n.startswith("at the edge of its range") and "Km" in n for n in unc["notes"])


def test_a_profile_restarts_a_value_stuck_at_its_edge(write, tmp_path):
    """The same data: with Km stuck near 0 (where its log-scale gradient vanishes), a warm-started re-optimisation
    along Vmax's profile cannot move Km back, and the interval came out [0.923, 0.942], excluding the truth 1.0.
    Each profile point also restarts Km from its start: the interval then reaches past 1."""
    result = fit(load_config(_michaelis_menten(write, tmp_path, "{bands: false, profile: [Vmax]}")))
    vmax = result.metrics["uncertainty"]["intervals"]["Vmax"]
    assert vmax["method"] == "profile likelihood"
    assert vmax["lower"] < 0.93 and vmax["upper"] > 1.0  # the truth is inside


def test_an_unobserved_state_has_the_confidence_band_of_the_same_draws(write, tmp_path):
    """dx/dt = -k x, dy/dt = k x from (2, 0), only x measured: every draw has y = 2 - x (Runge-Kutta keeps a linear
    invariant to rounding), so y's confidence band is 2 minus x's, bound for bound, and y has no prediction band
    (nothing measures it)."""
    t = np.linspace(0, 3, 16)
    rng = np.random.default_rng(5)
    x = 2 * np.exp(-0.7 * t) * np.exp(0.05 * rng.standard_normal(len(t)))
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{b:.12g}\n" for a, b in zip(t, x, strict=True)))
    path = write("c.yaml", """
        data: {file: d.csv, time: t, columns: {x: x}}
        model:
          states: [x, y]
          parameters: {k: {init: 0.5, positive: true}}
          equations: {x: -k*x, y: k*x}
          initial: {x: 2.0, y: 0.0}
        noise: {distribution: lognormal}
        training: {stages: [{optimizer: lbfgs, iterations: 200}]}
        uncertainty: {band_samples: 400}
        """)
    pred = fit(load_config(path)).predictions
    assert {"y_ci_lower", "y_ci_upper"} <= set(pred.columns) and "y_pi_lower" not in pred.columns
    assert np.allclose(pred["y_ci_lower"], 2 - pred["x_ci_upper"], atol=1e-9)
    assert np.allclose(pred["y_ci_upper"], 2 - pred["x_ci_lower"], atol=1e-9)
    assert (pred["y_ci_upper"] - pred["y_ci_lower"]).iloc[1:].min() > 0  # a band, not a line


def test_bands_along_the_dense_grid_are_the_closed_forms_between_the_data_times(write, tmp_path):
    """dx/dt = -k x from x(0) = 2, log-normal noise, 7 times on [0, 3]: a draw of log k ~ N(log k_hat, se^2) gives
    x(t) = 2 exp(-k t), monotone in k, so the confidence band at every t of the dense grid (between the data
    times too) is 2 exp(-k_hat exp(+-1.96 se) t). At the data times the dense band is the one in predictions.csv
    (the same draws), and trajectory.csv holds it."""
    t = np.linspace(0, 3, 7)
    rng = np.random.default_rng(11)
    x = 2 * np.exp(-0.7 * t) * np.exp(0.1 * rng.standard_normal(len(t)))
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{b:.12g}\n" for a, b in zip(t, x, strict=True)))
    path = write("c.yaml", """
        data: {file: d.csv, time: t, columns: {x: x}}
        model:
          states: [x]
          parameters: {k: {init: 0.5, positive: true}}
          equations: {x: -k*x}
          initial: {x: 2.0}
        noise: {distribution: lognormal}
        training: {stages: [{optimizer: lbfgs, iterations: 200}]}
        uncertainty: {band_samples: 2000}
        """)
    result = fit(load_config(path))
    k = result.parameters.set_index("name").loc["k"]
    se_log = k["se"] / k["value"]  # the Wald distribution is of log k (delta method: se(k) = k se(log k))
    grid = result.trajectories[0][0]
    band = result.curve_bands[0]["x"]
    assert band.shape == (len(grid), 4) and len(grid) > 10 * len(t)
    inner = grid > 0.05  # at t = 0 every draw is 2
    fit_x = 2 * np.exp(-k["value"] * grid[inner])
    for j, z in ((0, 1.96), (1, -1.96)):  # the lower end has the larger k
        expected = np.log(2 * np.exp(-k["value"] * np.exp(z * se_log) * grid[inner]) / fit_x)
        assert np.allclose(np.log(band[inner, j] / fit_x), expected, rtol=0.1), j
    assert np.all(band[:, 2] <= band[:, 0] + 1e-12) and np.all(band[:, 3] >= band[:, 1] - 1e-12)
    pred = result.predictions
    for j, column in enumerate(("x_ci_lower", "x_ci_upper")):
        assert np.allclose(np.interp(t, grid, band[:, j]), pred[column], rtol=1e-3), column
    saved = result.trajectory_frame()
    assert np.allclose(saved["x_ci_lower"], band[:, 0]) and np.allclose(saved["x_pi_upper"], band[:, 3])


def test_when_the_draws_batch_fails_on_the_dense_grid_the_note_says_so(write, tmp_path, monkeypatch):
    from ude_cli.engines.torchdiffeq import SolverError
    from ude_cli.fitting.model import UDEModel

    t = np.linspace(0, 3, 7)
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{2 * np.exp(-0.7 * a) * (1 + 0.05 * (-1) ** i):.12g}\n"
                                                       for i, a in enumerate(t)))
    path = write("c.yaml", """
        data: {file: d.csv, time: t, columns: {x: x}}
        model: {states: [x], parameters: {k: {init: 0.5, positive: true}}, equations: {x: -k*x}, initial: {x: 2.0}}
        noise: {distribution: lognormal}
        training: {stages: [{optimizer: lbfgs, iterations: 100}]}
        """)
    dense = UDEModel.dense

    def failing(self, *args, **kwargs):
        if self.n_starts > 1:  # the batch of draws, not the fit's own curve
            raise SolverError("too many steps")
        return dense(self, *args, **kwargs)

    monkeypatch.setattr(UDEModel, "dense", failing)
    result = fit(load_config(path))
    assert result.curve_bands is None and "x_ci_lower" in result.predictions  # the data times' bands stay
    [note] = [n for n in result.uncertainty.notes if n.startswith("bands")]
    assert "none along the curves (the batched solve of the draws on the dense grid failed: too many steps): the " \
           "fit figure joins the bands at the data times" in note
    result.save(tmp_path / "run")  # the figure draws the data times' bands


def test_the_prediction_band_of_a_scaled_loss_with_an_unobserved_state_first(write, tmp_path):
    """loss: scaled, states [u, x], only x measured: the maximum-likelihood sd of x is c * spread(x) = the rms of
    its residuals, so the 95 % prediction band is about +-1.96 rms wide (it took the spread of state u, the first
    state, and came out 2.6 times too narrow)."""
    t = np.linspace(0, 10, 21)
    rng = np.random.default_rng(2)
    x = 5 * (1 - np.exp(-0.3 * t)) + 0.4 * rng.standard_normal(len(t))
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{b:.12g}\n" for a, b in zip(t, x, strict=True)))
    path = write("c.yaml", """
        data: {file: d.csv, time: t, columns: {x: x}}
        model:
          states: [u, x]
          parameters: {k: {init: 0.3, positive: true}, A: {init: 5, positive: true}}
          equations: {u: -k*u, x: A*k*u}
          initial: {u: 1.0, x: 0.0}
        training: {loss: scaled, stages: [{optimizer: lbfgs, iterations: 200}]}
        uncertainty: {band_samples: 1000}
        """)
    result = fit(load_config(path))
    pred = result.predictions
    rms = float(np.sqrt(np.mean((pred["x_observed"] - pred["x_predicted"]) ** 2)))
    half = np.median((pred["x_pi_upper"] - pred["x_pi_lower"]).to_numpy()) / 2
    assert 0.95 * 1.96 * rms < half < 1.3 * 1.96 * rms
    band = result.curve_bands[0]["x"]
    assert 0.95 * 1.96 * rms < np.median(band[:, 3] - band[:, 2]) / 2 < 1.3 * 1.96 * rms


def test_a_determined_combination_of_undetermined_values_has_its_interval_and_band(write, tmp_path):
    """dx/dt = -a b x: the data determine k = a b alone. The derived a*b has the interval of the model fitted with
    k itself (to 5 % of its width: the df count differs by the one undetermined direction), a alone has none,
    and the confidence band is not the zero-width band of every value held at the fit."""
    t = np.linspace(0, 5, 16)
    rng = np.random.default_rng(3)
    x = 5 * np.exp(-0.6 * t) * np.exp(0.05 * rng.standard_normal(len(t)))
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a:g},{b:.9g}\n" for a, b in zip(t, x, strict=True)))
    product = fit(load_config(write("p.yaml", """
        data: {file: d.csv, time: t, columns: {x: x}}
        model: {states: [x], parameters: {a: {init: 1.0, positive: true}, b: {init: 0.3, positive: true}},
                equations: {x: -a*b*x}, initial: {x: 5}}
        noise: lognormal
        uncertainty: {derived: {k: a*b, a_alone: a*1}}
        """)))
    single = fit(load_config(write("k.yaml", """
        data: {file: d.csv, time: t, columns: {x: x}}
        model: {states: [x], parameters: {k: {init: 0.3}}, equations: {x: -k*x}, initial: {x: 5}}
        noise: lognormal
        """)))
    derived = product.metrics["uncertainty"]["derived"]
    k = single.parameters.set_index("name").loc["k"]
    width = k["ci_upper"] - k["ci_lower"]
    assert derived["k"]["value"] == pytest.approx(k["value"], rel=1e-6)
    assert derived["k"]["lower"] == pytest.approx(k["ci_lower"], abs=0.05 * width)
    assert derived["k"]["upper"] == pytest.approx(k["ci_upper"], abs=0.05 * width)
    assert derived["a_alone"]["lower"] is None or not np.isfinite(derived["a_alone"]["lower"])
    band = product.curve_bands[0]["x"]
    reference = single.curve_bands[0]["x"]
    assert (band[:, 1] - band[:, 0]).max() == pytest.approx((reference[:, 1] - reference[:, 0]).max(), rel=0.2)
