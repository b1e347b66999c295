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
            assert abs(se[f"{name}[{tree}]"] - value) <= 0.051 * max(1.0, value / 10), (name, tree, se)


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
