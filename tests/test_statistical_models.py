"""Fits with a likelihood against published estimates (slow: run with -m slow).

Known answers (../shared/data/, copied with provenance into data/ and the configs' headers):
- boarding-school influenza, SIR with negative-binomial counts of boys in bed: beta, gamma and R0 inside the
  Stan case study's 95 % posterior intervals, dispersion estimated;
- lynx-hare 1900-1920, Lotka-Volterra with log-normal noise and sigma per species: within 5 % of the Stan
  posterior means, sigma inside its 80 % interval (0.20, 0.31);
- theophylline: per-subject ka, ke, V (normal constant error) give R's nlsList lKe, lKa, lCl for all 12
  subjects to their printed digits;
- orange trees: the pooled logistic fit (nls) and the per-tree fit (nlsList) to their printed digits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ude_cli import fit, load_config
from ude_cli.config import config_from_dict

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_influenza_negative_binomial_inside_the_stan_posterior():
    result = fit(load_config(REPO / "configs/flu_sir_negbin.yaml"))
    v = result.values
    beta, gamma = v["beta"], v["gamma"]
    print(f"influenza NB: beta {beta:.4f}, gamma {gamma:.4f}, R0 {beta / gamma:.3f}, "
          f"dispersion {v['dispersion_in_bed']:.2f}, NLL {result.metrics['likelihood']['nll']:.3f}")
    assert 1.64 <= beta <= 1.85
    assert 0.45 <= gamma <= 0.64
    assert 2.74 <= beta / gamma <= 3.83
    rows = result.parameters.set_index("name")
    assert rows.loc["dispersion_in_bed", "kind"] == "noise" and bool(rows.loc["dispersion_in_bed", "learned"])
    assert 1 < v["dispersion_in_bed"] < 1000


def test_lynx_hare_lognormal_matches_the_stan_case_study():
    result = fit(load_config(REPO / "configs/lynx_hare_lognormal.yaml"))
    v = result.values
    print("lynx-hare log-normal:", {k: round(x, 5) for k, x in v.items()})
    for name, value in {"alpha": 0.55, "beta": 0.028, "gamma": 0.80, "delta": 0.024}.items():
        assert v[name] == pytest.approx(value, rel=0.05), name
    for name in ("sigma_x", "sigma_y"):
        assert 0.20 < v[name] < 0.31, name


# R's nlsList(conc ~ SSfol(Dose, Time, lKe, lKa, lCl), data = Theoph): subject -> (lKe, lKa, lCl)
NLSLIST_THEOPH = {
    "6": (-2.31, 0.152, -2.97), "7": (-2.28, -0.386, -2.96), "8": (-2.39, 0.319, -3.07),
    "11": (-2.32, 1.348, -2.86), "3": (-2.51, 0.898, -3.23), "2": (-2.29, 0.664, -3.11),
    "4": (-2.44, 0.158, -3.29), "9": (-2.45, 2.182, -3.42), "12": (-2.25, -0.183, -3.17),
    "10": (-2.60, -0.363, -3.43), "1": (-2.92, 0.575, -3.92), "5": (-2.43, 0.386, -3.13),
}


def _printed(value: float, printed: float) -> bool:
    """``value`` rounds to ``printed`` at the number of decimals it is printed with."""
    decimals = len(repr(printed).split(".")[1]) if "." in repr(printed) else 0
    return abs(value - printed) <= 0.5 * 10 ** -decimals + 1e-12


def test_theophylline_per_subject_reproduces_nlslist():
    result = fit(load_config(REPO / "configs/theophylline_per_subject.yaml"))
    v = result.values
    for subject, (lke, lka, lcl) in NLSLIST_THEOPH.items():
        ke, ka, volume = v[f"ke[{subject}]"], v[f"ka[{subject}]"], v[f"V[{subject}]"]
        got = (math.log(ke), math.log(ka), math.log(ke * volume))
        print(f"subject {subject}: lKe {got[0]:.4f} lKa {got[1]:.4f} lCl {got[2]:.4f}")
        for g, ref, name in zip(got, (lke, lka, lcl), ("lKe", "lKa", "lCl"), strict=True):
            assert _printed(g, ref), f"subject {subject} {name}: {g:.4f}, nlsList {ref}"
    # nlsList's pooled residual standard error 0.7 = sqrt(RSS / 96); sigma here is its ML value sqrt(RSS / 132)
    rss = result.metrics["train_mse"]["C"] * 132
    assert round(math.sqrt(rss / 96), 1) == 0.7
    assert result.values["sigma_conc"] == pytest.approx(math.sqrt(rss / 132), rel=1e-3)


def test_theophylline_pooled_constant_against_combined_error():
    """The pooled model with normal errors of constant sd, and of sd a + b*prediction, compared by AIC (a
    purely proportional sd is degenerate here: the model predicts 0 at t = 0, where three subjects have a
    measured concentration)."""
    raw = load_config(REPO / "configs/theophylline_pk.yaml").model_dump(exclude_unset=True, mode="json")
    raw["data"]["file"] = str(REPO / "data/theophylline/theophylline.csv")
    results = {}
    for error in ("constant", "combined"):
        raw["noise"] = {"distribution": "normal", "error": error}
        raw["training"] = {"stages": [{"optimizer": "lbfgs", "iterations": 500}]}
        results[error] = fit(config_from_dict(raw, label=f"theophylline ({error})"))
    for error, r in results.items():
        like = r.metrics["likelihood"]
        v = r.values
        print(f"pooled, {error} error: ke {v['ke']:.4f} ka {v['ka']:.4f} V {v['V']:.4f}, NLL {like['nll']:.2f}, "
              f"AIC {like['aic']:.2f} ({like['parameters']} parameters)")
        assert like["parameters"] == (4 if error == "constant" else 5)
        assert like["aic"] == pytest.approx(2 * like["nll"] + 2 * like["parameters"])
    # the combined model nests the constant one (sigma_rel -> 0): its maximum likelihood is at least as high
    assert results["combined"].metrics["likelihood"]["nll"] <= results["constant"].metrics["likelihood"]["nll"] + 1e-6


def test_orange_trees_pooled_reproduces_nls():
    result = fit(load_config(REPO / "configs/orange_trees.yaml"))
    v = result.values
    print("orange pooled:", {k: round(x, 3) for k, x in v.items()})
    assert (round(v["Asym"], 1), round(v["xmid"], 1), round(v["scal"], 1)) == (192.7, 728.8, 353.5)
    # nls's residual standard error is sqrt(RSS / 32); the ML sigma is sqrt(RSS / 35)
    rss = result.metrics["train_mse"]["y"] * 35
    assert v["sigma_circumference"] == pytest.approx(np.sqrt(rss / 35), rel=1e-3)


def test_orange_trees_per_tree_reproduces_nlslist():
    result = fit(load_config(REPO / "configs/orange_trees_per_tree.yaml"))
    v = result.values
    nlslist = {"1": (154, 627, 363), "2": (219, 700, 332), "3": (159, 735, 401), "4": (225, 711, 303),
               "5": (207, 861, 380)}
    for tree, ref in nlslist.items():
        got = tuple(round(v[f"{p}[{tree}]"]) for p in ("Asym", "xmid", "scal"))
        print(f"tree {tree}: {got}, nlsList {ref}")
        assert got == ref
