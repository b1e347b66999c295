"""``ude discover``'s numpy refits on the whole statistical model: observables given by a formula (with their
observation parameters), per-experiment parameters and initial values given by a formula.

- the refit's objective (:class:`~ude_cli.discovery.refit.DataObjective`) equals the fit's (the torch
  :class:`~ude_cli.likelihood.objective.Objective`) at the same values: to 1e-10 on the same solutions, and to
  1e-8 (relative) through the refit's own solver (scipy LSODA, tolerances tightened) against the fit's engine;
- the refits reproduce published estimates (R's ``nls`` / ``nlsList`` on the orange trees and the theophylline
  subjects: per-experiment parameters and an initial formula);
- ``ude discover`` recovers the missing interaction of a Lotka-Volterra UDE whose predators are seen through an
  index ``q*y`` and of one fitted to three sites with a per-site ``alpha`` (exact terms standing in for the
  network here; fitted UDEs in the slow tests).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.integrate import solve_ivp

from ude_cli.config import load_config
from ude_cli.discovery import refit as refit_module
from ude_cli.discovery.refit import DataObjective, OdeSystem, refit, score
from ude_cli.problem import resolve

from .helpers import problem as problem_of
from .helpers import write_csv

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "discover_refit"


# -- synthetic problems with each feature ----------------------------------------------------------------------

def _sir_counts(directory: Path) -> None:
    def f(_, u):
        return [-0.6 * u[0] * u[1] / 1000, 0.6 * u[0] * u[1] / 1000 - 0.25 * u[1]]

    t = np.arange(1.0, 31.0)
    s, i = solve_ivp(f, (0, 30), [995.0, 5.0], t_eval=t, rtol=1e-11, atol=1e-11).y
    counts = np.random.default_rng(1).poisson(0.4 * 0.6 * s * i / 1000)
    write_csv(directory / "cases.csv", "day,cases", [(0.0, None)] + list(zip(t, counts.astype(int), strict=True)))


POISSON = """
data: {file: cases.csv, time: day}
model:
  states: [S, I]
  parameters: {beta: {init: 0.55, bounds: [0.01, 5]}, gamma: {init: 0.22, bounds: [0.01, 5]},
               rho: {init: 0.45, bounds: [0.01, 1]}}
  constants: {N: 1000}
  equations: {S: -beta*S*I/N, I: beta*S*I/N - gamma*I}
  initial: {S: 995, I: 5}
observables: {cases: rho*beta*S*I/N}
noise: poisson
solver: {method: dopri5, rtol: 1.0e-11, atol: 1.0e-11}
"""


def _lv_sites(directory: Path) -> None:
    """Two experiments (sites) of a Lotka-Volterra system, the prey seen directly, the total through a scale."""
    rows = []
    rng = np.random.default_rng(4)
    for site, alpha, x0 in (("A", 1.2, 0.5), ("B", 1.4, 0.8)):
        def f(_, u, alpha=alpha):
            return [alpha * u[0] - 0.9 * u[0] * u[1], -0.8 * u[1] + 1.8 * u[0] * u[1]]

        t = np.linspace(0, 4, 17)
        x, y = solve_ivp(f, (0, 4), [x0, 2.0 * x0 + 3.5], t_eval=t, rtol=1e-11, atol=1e-11).y
        rows += [(site, ti, a * (1 + 0.03 * rng.standard_normal()), 2.0 * (a + b) + 0.05 * rng.standard_normal(), x0)
                 for ti, a, b in zip(t, x, y, strict=True)]
    write_csv(directory / "sites.csv", "site,t,prey,total,x0", rows)


SITES = """
data: {file: sites.csv, time: t, experiment: site, columns: {x: prey}}
model:
  states: [x, y]
  parameters:
    alpha: {init: 1.25, bounds: [0.1, 5], per_experiment: true}
    beta: {init: 0.85, bounds: [0.1, 5]}
    gamma: {init: 0.8, fixed: true}
    delta: {init: 1.8, fixed: true}
    scale: {init: 1.7, bounds: [0.1, 10]}
    c: {init: 3.2}
  constants: {x_start: {column: x0}}
  equations: {x: alpha*x - beta*x*y, y: -gamma*y + delta*x*y}
  initial: {x: {column: x0}, y: {formula: 2*x_start + c}}
observables: {total: scale*(x + y)}
solver: {method: dopri5, rtol: 1.0e-11, atol: 1.0e-11}
"""

#: a per-site scale in the observable (which reads t too) and a per-site constant in the initial formula
SITES_PER_SITE = SITES.replace("scale: {init: 1.7, bounds: [0.1, 10]}", "scale: {init: 1.7, bounds: [0.1, 10], "
                               "per_experiment: true}").replace("c: {init: 3.2}", "c: {init: 3.2, per_experiment: true}"
                                                                ).replace("scale*(x + y)}", "scale*(x + y) + 0.01*t}")

#: name -> (writer of its data or None, config text or bundled config path, overrides of the config)
CASES = {
    "orange pooled (initial formula, normal noise)": (None, "configs/orange_trees.yaml", {}),
    "orange per tree (per experiment, initial formula)": (None, "configs/orange_trees_per_tree.yaml", {}),
    "theophylline per subject (per experiment)": (None, "configs/theophylline_per_subject.yaml", {}),
    "Poisson counts of rho*incidence": (_sir_counts, POISSON, {}),
    "sites, mse": (_lv_sites, SITES, {}),
    "sites, scaled mse": (_lv_sites, SITES, {"training": {"loss": {"scale": "std"}}}),
    "sites, log loss": (_lv_sites, SITES, {"training": {"loss": {"log": True}}}),
    "sites, normal noise per observable": (_lv_sites, SITES, {"noise": "normal"}),
    "sites, combined error": (_lv_sites, SITES, {"noise": {"distribution": "normal", "error": "combined"}}),
    "sites, log-normal": (_lv_sites, SITES, {"noise": "lognormal"}),
    "sites, Laplace": (_lv_sites, SITES, {"noise": "laplace"}),
    "sites, per-site scale and initial constant, normal noise": (_lv_sites, SITES_PER_SITE, {"noise": "normal"}),
    "sites, per-site scale and initial constant, mse": (_lv_sites, SITES_PER_SITE, {}),
    "sites, log-Laplace": (_lv_sites, SITES, {"noise": "loglaplace"}),
}


def _problem(case: str, tmp_path: Path):
    writer, source, overrides = CASES[case]
    if writer is None:
        raw = yaml.safe_load((REPO / source).read_text())
        raw["data"]["file"] = str((REPO / source).parent / raw["data"]["file"])
    else:
        writer(tmp_path)
        raw = yaml.safe_load(source)
    raw.update(overrides)
    return problem_of(raw, tmp_path)


def _at_distinct_values(prob):
    """The fit's model with each per-experiment parameter moved apart per experiment (so that a mix-up of
    experiments shows), its solutions, and the values in the refit's layout (a per-experiment one ``(B,)``)."""
    from ude_cli.fitting.model import UDEModel
    from ude_cli.fitting.parameters import to_unconstrained

    model = UDEModel(prob)
    n = len(prob.dataset.experiments)
    with torch.no_grad():
        for name, raw in model.parameters_.raw.items():
            spec = model.parameters_.specs[name]
            if name in model.parameters_.per_experiment:
                values = [spec.init * (1 + 0.04 * ((b % 5) - 2)) for b in range(n)]
                raw.copy_(torch.tensor([[to_unconstrained(spec, v) for v in values]], dtype=raw.dtype))
        solutions = model()
    values = {k: (v[0] if v.ndim == 2 else float(v[0])) for k, v in model.parameter_values().items()}
    states: list = [None] * n
    for k, g in enumerate(model.groups):
        for i, b in enumerate(g.experiments):
            states[b] = solutions[k][g.positions[i], 0, i, :].numpy()
    return model, solutions, values, states


def _torch_objective(model, solutions):
    from ude_cli.likelihood.objective import Objective

    objective = Objective(model)
    with torch.no_grad():
        objective.sync_noise(solutions)  # a profiled sigma at its maximum-likelihood value, as after a fit
        nll = float(objective.nll(solutions)[0])
        loss = float(objective.loss(solutions)[0])
    noise = {k: float(v[0]) for k, v in model.noise.numpy().items()}
    return nll, loss, noise


@pytest.mark.parametrize("case", list(CASES))
def test_refit_objective_equals_the_fits_on_the_same_solutions(case, tmp_path):
    """The same states, the same values: the numpy refit's NLL (and loss) is the torch objective's to 1e-10."""
    prob = _problem(case, tmp_path)
    model, solutions, values, states = _at_distinct_values(prob)
    nll, loss, noise = _torch_objective(model, solutions)
    objective = DataObjective(prob, noise=noise)
    r = objective.residuals(states, "train", values)
    assert r.size == objective.count("train")
    assert objective.loss_of(r) == pytest.approx(loss, rel=1e-12, abs=1e-10)
    if prob.likelihood:
        assert objective.nll_of(r) == pytest.approx(nll, rel=1e-12, abs=1e-10)
        assert objective.criterion(r, 4) == pytest.approx(2 * nll + 4 * math.log(r.size), rel=1e-12, abs=1e-9)
    # the observables through the fit's observation model, in torch and in the refit: one computation
    from ude_cli.likelihood.objective import Objective

    with torch.no_grad():
        torch_observed = Objective(model).observed(solutions)
    observed = objective.observed(states, values)
    for k, g in enumerate(model.groups):
        for i, b in enumerate(g.experiments):
            expected = torch_observed[k][g.positions[i], 0, i, :].numpy()
            if Objective(model).state_layout:  # a legacy loss on states compares the states themselves
                expected = expected[:, [prob.states.index(o) for o in objective.names]]
            np.testing.assert_allclose(observed[b], expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", list(CASES))
def test_refit_objective_equals_the_fits_through_its_own_solver(case, tmp_path, monkeypatch):
    """The refit's whole model (its ODE solve, initial formulas, per-experiment values, observables, likelihood)
    against the fit's engine at the same values: the initial states to 1e-12, the NLL (or loss) to 1e-8 relative
    (the solvers' tolerances tightened to 1e-11 on both sides, where the bundled configs allow it)."""
    monkeypatch.setattr(refit_module, "RTOL", 1e-12)
    monkeypatch.setattr(refit_module, "ATOL", 1e-12)
    prob = _problem(case, tmp_path)
    model, solutions, values, _ = _at_distinct_values(prob)
    nll, loss, noise = _torch_objective(model, solutions)
    with torch.no_grad():
        y0 = model.initial().numpy()[0]
    system = OdeSystem(prob)
    objective = DataObjective(prob, noise=noise)
    initial = system.with_formulas(values, system.initial)
    np.testing.assert_allclose(initial, y0, rtol=1e-12, atol=1e-12)
    fitted = score(system, objective, values, system.initial)
    assert fitted.success, fitted.message
    assert fitted.train_loss == pytest.approx(loss, rel=1e-8)
    if prob.likelihood:
        assert objective.nll_of(fitted.residuals) == pytest.approx(nll, rel=1e-8)


# -- refits with known answers ----------------------------------------------------------------------------------

# R: nlsList(circumference ~ SSlogis(age, Asym, xmid, scal) | Tree, data = Orange) (Pinheiro & Bates 2000, ch. 8),
# rounded as printed; and nls on all trees: Asym 192.7, xmid 728.8, scal 353.5 (configs/orange_trees*.yaml)
NLSLIST_ORANGE = {"1": (154, 627, 363), "2": (219, 700, 332), "3": (159, 735, 401), "4": (225, 711, 303),
                  "5": (207, 861, 380)}


def test_refit_of_per_tree_parameters_with_an_initial_formula_reproduces_nlslist():
    """Three parameters per tree (15 in the refit's vector), the initial circumference a formula of them: the
    numpy refit from the config's starting values lands on R's nlsList estimates."""
    prob = resolve(load_config(REPO / "configs/orange_trees_per_tree.yaml"))
    system = OdeSystem(prob)
    fitted = refit(system, DataObjective(prob))
    assert fitted.success, fitted.message
    trees = [e.name for e in prob.dataset.experiments]
    assert fitted.free == [f"{p}[{tree}]" for p in ("Asym", "xmid", "scal") for tree in trees]
    for b, tree in enumerate(trees):
        got = tuple(round(float(fitted.values[p][b])) for p in ("Asym", "xmid", "scal"))
        assert got == NLSLIST_ORANGE[str(tree)], tree
        v = {p: float(fitted.values[p][b]) for p in ("Asym", "xmid", "scal")}
        t0 = prob.dataset.experiments[b].t[0]
        assert fitted.initial[b, 0] == pytest.approx(v["Asym"] / (1 + math.exp((v["xmid"] - t0) / v["scal"])),
                                                     rel=1e-12)


def test_refit_of_the_pooled_orange_model_reproduces_nls():
    prob = resolve(load_config(REPO / "configs/orange_trees.yaml"))
    fitted = refit(OdeSystem(prob), DataObjective(prob))
    assert fitted.success
    assert tuple(round(fitted.values[p], 1) for p in ("Asym", "xmid", "scal")) == (192.7, 728.8, 353.5)


def test_refit_of_per_subject_pk_reproduces_nlslist():
    """36 per-subject values (ka, ke, V for 12 subjects): R's nlsList lKe, lKa, lCl to their printed digits."""
    from .test_statistical_models import NLSLIST_THEOPH, _printed

    prob = resolve(load_config(REPO / "configs/theophylline_per_subject.yaml"))
    fitted = refit(OdeSystem(prob), DataObjective(prob), max_evaluations=500)
    assert fitted.success, fitted.message
    assert len(fitted.free) == 36
    for b, e in enumerate(prob.dataset.experiments):
        ke, ka, volume = (float(fitted.values[p][b]) for p in ("ke", "ka", "V"))
        got = (math.log(ke), math.log(ka), math.log(ke * volume))
        for g, ref, name in zip(got, NLSLIST_THEOPH[str(e.name)], ("lKe", "lKa", "lCl"), strict=True):
            assert _printed(g, ref), f"subject {e.name} {name}: {g:.4f}, nlsList {ref}"


def test_observation_parameters_are_refitted_with_the_mechanism(tmp_path):
    """``total: scale*(x + y)`` with a learned scale (truth 2) and per-site alpha (1.2, 1.4): the refit
    estimates them from the data (from 1.7 and 1.25)."""
    prob = _problem("sites, normal noise per observable", tmp_path)
    fitted = refit(OdeSystem(prob), DataObjective(prob))
    assert fitted.success, fitted.message
    assert "scale" in fitted.free and "alpha[A]" in fitted.free and "alpha[B]" in fitted.free
    assert fitted.values["scale"] == pytest.approx(2.0, rel=0.02)
    np.testing.assert_allclose(fitted.values["alpha"], [1.2, 1.4], rtol=0.03)
    assert fitted.values["c"] == pytest.approx(3.5, rel=0.05)  # through the initial formula y(0) = 2 x0 + c


# -- ude discover end to end -------------------------------------------------------------------------------------

LV_TERMS = {("U", 0): "-0.9*x*y", ("U", 1): "1.8*x*y"}


def _exact_discovery(config: Path, values: dict, tmp_path: Path):
    """``discover`` on the config's problem with the network replaced by the true interaction (the values given
    standing in for the fitted ones), its files written."""
    from ude_cli.discovery.discover import DiscoverSettings, discover
    from ude_cli.discovery.files import write_discovery
    from ude_cli.discovery.refit import predict_all

    from .discover_helpers import ExactModel

    prob = resolve(load_config(config))
    model = ExactModel(prob, LV_TERMS)
    model.values = model.system.values(values)
    objective = DataObjective(prob)
    preds, _ = predict_all(model.system, model.values, model.system.initial)
    metrics = {"loss": objective.loss(preds, "train", model.values), "validation_loss": None}
    d = discover(prob, model, metrics, DiscoverSettings(samples=40, horizon=40.0))
    write_discovery(d, tmp_path / "discovery", plots=False)
    return d


def _assert_interaction_recovered(d, beta_tol: float = 0.03, delta_tol: float = 0.03) -> None:
    assert d.verdict == "recovered", d.messages
    terms = {t.label: t for t in d.terms}
    assert [f.text for f in terms["U[0]"].model.features] == ["x*y"]
    assert [f.text for f in terms["U[1]"].model.features] == ["x*y"]
    assert terms["U[0]"].coefficients["U0_x_y"] == pytest.approx(-0.9, rel=beta_tol)
    assert terms["U[1]"].coefficients["U1_x_y"] == pytest.approx(1.8, rel=delta_tol)


def test_discover_recovers_the_interaction_seen_through_an_index(tmp_path):
    """Predators observed only as ``q*y`` (q = 0.5): x*y recovered in both equations, q refitted beside the
    coefficients (from the fit's 1.0)."""
    d = _exact_discovery(DATA / "lv_index.yaml", {"q": 0.5}, tmp_path)
    _assert_interaction_recovered(d)
    assert "q" in d.chosen.refit.free
    assert d.chosen.refit.values["q"] == pytest.approx(0.5, rel=0.02)
    assert d.mechanistic.refit.train_loss > 100 * d.chosen.refit.train_loss
    assert set(d.chosen.refit.train_mse) == {"x", "predator_index"}
    # the figures' observable, along each model's extrapolation at that model's own q
    import pandas as pd

    ext = pd.read_csv(tmp_path / "discovery" / "extrapolation.csv")
    for model, q in (("recovered", d.chosen.refit.values["q"]), ("mechanistic only", d.mechanistic.refit.values["q"]),
                     ("UDE", 0.5)):
        rows = ext[ext["model"] == model]
        assert len(rows) > 100
        np.testing.assert_allclose(rows["predator_index"], q * rows["y"], rtol=1e-12)
    record = yaml.safe_load((tmp_path / "discovery" / "recovered.yaml").read_text())
    assert record["observables"]["predator_index"]["formula"] == "q*y"
    assert record["model"]["parameters"]["q"]["init"] == pytest.approx(d.chosen.refit.values["q"])


def test_discover_recovers_the_interaction_with_a_per_site_alpha(tmp_path):
    """Three sites with their own alpha (1.1, 1.3, 1.5): x*y recovered, each site's alpha refitted; the outputs
    list every site's value as params.csv does (``alpha[A]``)."""
    import json

    d = _exact_discovery(DATA / "lv_three_sites.yaml", {"alpha": [1.1, 1.3, 1.5]}, tmp_path)
    _assert_interaction_recovered(d, beta_tol=0.05)
    r = d.chosen.refit
    assert [n for n in r.free if n.startswith("alpha")] == ["alpha[A]", "alpha[B]", "alpha[C]"]
    np.testing.assert_allclose(r.values["alpha"], [1.1, 1.3, 1.5], rtol=0.05)
    # the same model form least-squares fitted by an independent implementation (scipy DOP853 + least_squares)
    reference = _sites_least_squares()
    got = [*r.values["alpha"], -r.values["U0_x_y"], r.values["U1_x_y"]]
    np.testing.assert_allclose(got, reference, rtol=1e-4)
    record = json.loads((tmp_path / "discovery" / "discovery.json").read_text())
    assert set(record["chosen"]["parameters"]["alpha"]) == {"A", "B", "C"}
    assert record["chosen"]["parameters"]["alpha"]["C"] == pytest.approx(float(r.values["alpha"][2]))
    equations = (tmp_path / "discovery" / "equations.md").read_text()
    for site in "ABC":
        assert f"| `alpha[{site}]` |" in equations
    recovered = yaml.safe_load((tmp_path / "discovery" / "recovered.yaml").read_text())
    assert recovered["model"]["parameters"]["alpha"]["per_experiment"] is True
    # the recovered equations keep alpha by name: it has one value per site
    assert "alpha*x" in d.chosen.equations["x"].replace(" ", "")


def _sites_least_squares() -> np.ndarray:
    """alpha per site, beta and delta of dx/dt = alpha x - beta x y, dy/dt = -0.8 y + delta x y least-squares fitted
    to lv_three_sites.csv, written without ude_cli."""
    import pandas as pd
    from scipy.optimize import least_squares

    data = pd.read_csv(DATA / "lv_three_sites.csv")
    sites = [g for _, g in data.groupby("site", sort=True)]

    def residuals(theta):
        out = []
        for k, g in enumerate(sites):
            def f(_, u, a=theta[k]):
                return [a * u[0] - theta[3] * u[0] * u[1], -0.8 * u[1] + theta[4] * u[0] * u[1]]

            sol = solve_ivp(f, (0, g.t.max()), [g.x0.iloc[0], g.y0.iloc[0]], t_eval=g.t.to_numpy(), method="DOP853",
                            rtol=1e-11, atol=1e-11)
            out += [sol.y[0] - g.prey.to_numpy(), sol.y[1] - g.predator.to_numpy()]
        return np.concatenate(out)

    return least_squares(residuals, [1.2, 1.2, 1.2, 0.9, 1.8], xtol=1e-12, ftol=1e-12).x


def test_observables_that_use_a_network_are_refused_in_one_line(tmp_path):
    from ude_cli.discovery.discover import discover
    from ude_cli.errors import ConfigError

    raw = yaml.safe_load((DATA / "lv_index.yaml").read_text())
    raw["data"]["file"] = str(DATA / "lv_index.csv")
    raw["observables"]["predator_index"] = {"formula": "q*y + 0*U[0]"}
    prob = problem_of(raw, tmp_path)
    with pytest.raises(ConfigError, match=r"observables that use a network \(predator_index\)"):
        discover(prob, None, {})


def _fit_and_discover(config: Path, tmp_path: Path):
    from ude_cli.api import run_fit
    from ude_cli.discovery.files import discover_run

    _, run = run_fit(config, out=tmp_path / "run", plots=False)
    d, _ = discover_run(run, plots=False)
    return d


@pytest.mark.slow
def test_fit_then_discover_a_ude_observed_through_an_index(tmp_path):
    """``ude fit`` + ``ude discover`` on lv_index.yaml: the UDE itself fits poorly (no collocation start: y has no
    column), yet its network proposes x*y, and the refits to the data recover it with q."""
    d = _fit_and_discover(DATA / "lv_index.yaml", tmp_path)
    _assert_interaction_recovered(d, delta_tol=0.05)
    assert d.chosen.refit.values["q"] == pytest.approx(0.5, rel=0.02)


@pytest.mark.slow
def test_fit_then_discover_a_ude_with_a_per_site_alpha(tmp_path):
    d = _fit_and_discover(DATA / "lv_three_sites.yaml", tmp_path)
    _assert_interaction_recovered(d, beta_tol=0.05)
    np.testing.assert_allclose(d.chosen.refit.values["alpha"], [1.1, 1.3, 1.5], rtol=0.05)
