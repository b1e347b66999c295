"""The statistical model: noise models against scipy.stats, the likelihood of a fit against an independent
scipy implementation, the same likelihood from both engines, and fits whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import solve_ivp
from scipy.optimize import minimize

from ude_cli import api
from ude_cli.likelihood.noise import REGISTRY, noise_class, noise_model

from .helpers import config, problem, write_csv

# -- each noise model against scipy.stats (an independent implementation of the same densities) ------------

Y = np.array([0.0, 1.0, 3.0, 7.0, 20.0, 55.0])
MU = np.array([0.4, 1.7, 2.5, 9.0, 18.0, 60.0])


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("error,sd", [("constant", lambda mu: 0.7 + 0 * mu), ("proportional", lambda mu: 0.7 * mu),
                                      ("combined", lambda mu: 0.7 + 0.2 * mu),
                                      ("combined2", lambda mu: np.sqrt(0.7**2 + (0.2 * mu) ** 2))])
def test_normal_matches_scipy(error, sd):
    p = {"sigma": _t(0.7), "sigma_rel": _t(0.2)}
    got = noise_model("normal", error).nll(_t(Y), _t(MU), p).numpy()
    np.testing.assert_allclose(got, -stats.norm.logpdf(Y, MU, sd(MU)), rtol=1e-13, atol=1e-13)


def test_lognormal_matches_scipy_density_of_y():
    y = Y[1:]
    got = noise_model("lognormal").nll(_t(y), _t(MU[1:]), {"sigma": _t(0.3)}).numpy()
    np.testing.assert_allclose(got, -stats.lognorm.logpdf(y, s=0.3, scale=MU[1:]), rtol=1e-13)


def test_poisson_matches_scipy():
    got = noise_model("poisson").nll(_t(Y), _t(MU), {}).numpy()
    np.testing.assert_allclose(got, -stats.poisson.logpmf(Y, MU), rtol=1e-13)


def test_negative_binomial_matches_scipy():
    phi = 3.5  # scipy's nbinom(n=phi, p=phi/(phi+mu)) has mean mu and variance mu + mu^2/phi
    got = noise_model("negative_binomial").nll(_t(Y), _t(MU), {"dispersion": _t(phi)}).numpy()
    np.testing.assert_allclose(got, -stats.nbinom.logpmf(Y, phi, phi / (phi + MU)), rtol=1e-12)
    sd = noise_model("negative_binomial").sd(_t(MU), {"dispersion": _t(phi)}).numpy()
    np.testing.assert_allclose(sd, stats.nbinom.std(phi, phi / (phi + MU)), rtol=1e-12)


def test_laplace_matches_scipy():
    got = noise_model("laplace").nll(_t(Y), _t(MU), {"sigma": _t(0.8)}).numpy()
    np.testing.assert_allclose(got, -stats.laplace.logpdf(Y, MU, 0.8), rtol=1e-13)
    sd = noise_model("laplace").sd(_t(MU), {"sigma": _t(0.8)}).numpy()
    np.testing.assert_allclose(sd, stats.laplace.std(MU, 0.8), rtol=1e-13)


def test_loglaplace_matches_scipy_density_of_y():
    """scipy's loglaplace(c, scale=mu) is log(y/mu) ~ Laplace(0, 1/c)."""
    y, b = Y[1:], 0.3
    got = noise_model("loglaplace").nll(_t(y), _t(MU[1:]), {"sigma": _t(b)}).numpy()
    np.testing.assert_allclose(got, -stats.loglaplace.logpdf(y, 1 / b, scale=MU[1:]), rtol=1e-12)
    sd = noise_model("loglaplace").sd(_t(MU[1:]), {"sigma": _t(b)}).numpy()
    np.testing.assert_allclose(sd, stats.loglaplace.std(1 / b, scale=MU[1:]), rtol=1e-12)


LAPLACE_CONFIG = """
name: decay_laplace
data: {file: decay.csv, time: t, columns: {x: x}}
model:
  states: [x]
  parameters: {k: {init: 0.3, positive: true}}
  equations: {x: -k*x}
  initial: {x: 5}
  t0: 0
noise: laplace
solver: {rtol: 1.0e-10, atol: 1.0e-10}
"""


def test_laplace_fit_is_the_least_absolute_deviation_fit(tmp_path):
    """Exponential decay with Laplace noise and two gross outliers: the fitted k and scale, and the NLL, are those
    of scipy minimising the same likelihood on the closed-form solution (an independent implementation); the
    outliers move k far less than a normal fit's."""
    t = np.linspace(0.25, 6.0, 24)
    y = 5 * np.exp(-0.7 * t) + np.random.default_rng(3).laplace(0, 0.05, t.size)
    y[[5, 15]] += [1.5, -1.0]
    write_csv(tmp_path / "decay.csv", "t,x", list(zip(t, y, strict=True)))
    result = api.fit(config(LAPLACE_CONFIG, tmp_path))

    def nll(theta):
        k, log_b = theta
        return -stats.laplace.logpdf(y, 5 * np.exp(-k * t), math.exp(log_b)).sum()

    r = minimize(nll, [0.3, math.log(0.1)], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    k, b = r.x[0], math.exp(r.x[1])
    assert result.values["k"] == pytest.approx(k, rel=1e-4)
    assert result.metrics["likelihood"]["nll"] == pytest.approx(r.fun, abs=1e-5)
    sigma = next(v for name, v in result.values.items() if name.startswith("sigma"))
    assert sigma == pytest.approx(b, rel=1e-3)
    assert abs(result.values["k"] - 0.7) < 0.02  # the outliers barely move it


def test_every_registered_noise_model_is_in_the_schema():
    from ude_cli.config import NOISE_DISTRIBUTIONS

    assert set(REGISTRY) == set(NOISE_DISTRIBUTIONS)
    for name in REGISTRY:  # each module holds its class, which answers to its name
        assert noise_class(name).name == name


# -- a synthetic epidemic observed as Poisson counts of rho * incidence ---------------------------------------

BETA, GAMMA, RHO, N = 0.6, 0.25, 0.4, 1000.0


def _sir(beta, gamma, t):
    def f(_, u):
        return [-beta * u[0] * u[1] / N, beta * u[0] * u[1] / N - gamma * u[1]]

    return solve_ivp(f, (0, t[-1]), [995.0, 5.0], t_eval=t, rtol=1e-11, atol=1e-11).y


POISSON_CONFIG = """
name: poisson_cases
data: {file: cases.csv, time: day}
model:
  states: [S, I]
  parameters:
    beta: {init: 0.4, bounds: [0.01, 5]}
    gamma: {init: 0.2, bounds: [0.01, 5]}
    rho: {init: 0.6, bounds: [0.01, 1]}
  constants: {N: 1000}
  equations:
    S: -beta*S*I/N
    I: beta*S*I/N - gamma*I
  initial: {S: 995, I: 5}
observables:
  cases: rho*beta*S*I/N
noise: poisson
solver: {rtol: 1.0e-9, atol: 1.0e-9}
"""


@pytest.fixture
def cases_dir(tmp_path):
    t = np.arange(1.0, 31.0)
    s, i = _sir(BETA, GAMMA, t)
    counts = np.random.default_rng(1).poisson(RHO * BETA * s * i / N)
    write_csv(tmp_path / "cases.csv", "day,cases", [(0.0, None)] + list(zip(t, counts.astype(int), strict=True)))
    return tmp_path, t, counts


def _scipy_poisson_mle(t, counts):
    """The same likelihood written independently (scipy's ODE solver, scipy.stats' Poisson pmf)."""

    def nll(theta):
        beta, gamma, rho = theta
        s, i = _sir(beta, gamma, t)
        return -stats.poisson.logpmf(counts, rho * beta * s * i / N).sum()

    r = minimize(nll, [0.4, 0.2, 0.6], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 4000})
    return r.x, r.fun, nll


def test_poisson_counts_of_rho_times_incidence(cases_dir):
    """rho and beta recovered within 10 % from 30 counts; the maximum-likelihood values and the NLL those of
    an independent scipy implementation of the same likelihood."""
    directory, t, counts = cases_dir
    result = api.fit(config(POISSON_CONFIG, directory))
    v = result.values
    assert v["rho"] == pytest.approx(RHO, rel=0.10)
    assert v["beta"] == pytest.approx(BETA, rel=0.10)
    (beta, gamma, rho), best, nll = _scipy_poisson_mle(t, counts)
    assert v["beta"] == pytest.approx(beta, rel=1e-4)
    assert v["gamma"] == pytest.approx(gamma, rel=1e-4)
    assert v["rho"] == pytest.approx(rho, rel=1e-4)
    like = result.metrics["likelihood"]
    assert like["nll"] == pytest.approx(nll([v["beta"], v["gamma"], v["rho"]]), abs=1e-5)
    assert like["nll"] == pytest.approx(best, abs=1e-5)
    assert like["observations"] == 30 and like["parameters"] == 3
    assert like["aic"] == pytest.approx(2 * like["nll"] + 6)
    assert like["bic"] == pytest.approx(2 * like["nll"] + 3 * math.log(30))
    rows = result.parameters.set_index("name")
    assert rows.loc["rho", "kind"] == "observation" and rows.loc["beta", "kind"] == "parameter"
    pred = result.predictions.dropna(subset=["cases_observed"])
    mu = pred["cases_predicted"].to_numpy()
    np.testing.assert_allclose(pred["cases_standardised"], (pred["cases_observed"] - mu) / np.sqrt(mu), rtol=1e-10)


# -- the same likelihood from both engines and from an independent numpy computation -------------------------

def _lv_sum_csv(path, sigma=0.05, seed=3):
    from .conftest import lv_truth

    t = np.linspace(0, 6, 31)
    y = lv_truth(t)
    total = 2.0 * (y[:, 0] + y[:, 1]) + np.random.default_rng(seed).normal(0, sigma, len(t))
    return write_csv(path, "t,prey,total", list(zip(t, y[:, 0] * (1 + 0.02 * np.sin(7 * t)), total, strict=True)))


SUM_CONFIG = """
data: {file: lv.csv, time: t, columns: {x: prey}}
model:
  states: [x, y]
  parameters:
    alpha: {init: 1.2, bounds: [0.1, 5]}
    beta: {init: 0.9, fixed: true}
    gamma: {init: 0.7, bounds: [0.1, 5]}
    delta: {init: 1.8, fixed: true}
    scale: {init: 1.5, bounds: [0.1, 10]}
  equations:
    x: alpha*x - beta*x*y
    y: -gamma*y + delta*x*y
  initial: {y: {value: 4.6, learn: true}}
observables:
  total: scale*(x + y)
noise: {distribution: normal}
solver: {method: rk4, step: 0.01, engine: ENGINE}
training: {stages: [{optimizer: lbfgs, iterations: 200}]}
"""


def test_both_engines_and_numpy_give_one_likelihood(tmp_path):
    """A directly observed state and a sum with a learned scale, normal noise with a sigma each: the NLL at
    the initial guess from the compiled engine, from torchdiffeq, and recomputed in numpy/scipy from the
    predictions agree to 1e-10."""
    from ude_cli.fitting.model import UDEModel
    from ude_cli.likelihood.objective import Objective

    _lv_sum_csv(tmp_path / "lv.csv")
    values = {}
    for engine in ("compiled", "torchdiffeq"):
        prob = problem(SUM_CONFIG.replace("ENGINE", engine), tmp_path)
        model = UDEModel(prob)
        assert model.engine == engine
        objective = Objective(model)
        with torch.no_grad():
            sols = model()
            objective.sync_noise(sols)  # each sigma (estimated) at its maximum-likelihood value, as after a fit
            values[engine] = float(objective.nll(sols)[0])
            observed = objective.observed(sols)[0][:, 0, 0].numpy()  # (T, n_observables)
    e = prob.dataset.experiments[0]
    sigma = model.noise.numpy()
    ref = 0.0
    for k, name in enumerate(prob.dataset.observables):
        y = e.observations[:, k]
        ok = np.isfinite(y)
        ref -= stats.norm.logpdf(y[ok], observed[ok, k], sigma[f"sigma_{name}"][0]).sum()
    assert values["compiled"] == pytest.approx(values["torchdiffeq"], abs=1e-10)
    assert values["compiled"] == pytest.approx(ref, abs=1e-10)


def test_observable_sum_with_a_learned_scale(tmp_path):
    """`total: scale*(x + y)` observed with noise sd 0.05: scale, alpha and gamma recovered, sigma estimated."""
    _lv_sum_csv(tmp_path / "lv.csv")
    result = api.fit(config(SUM_CONFIG.replace("ENGINE", "auto"), tmp_path))
    v = result.values
    assert v["scale"] == pytest.approx(2.0, rel=0.02)
    assert v["alpha"] == pytest.approx(1.3, rel=0.03)
    assert v["gamma"] == pytest.approx(0.8, rel=0.03)
    noise = result.metrics["likelihood"]["noise"]
    assert 0.03 < noise["sigma_total"] < 0.08
    assert set(result.parameters["kind"]) >= {"parameter", "observation", "noise", "initial"}


# -- squared-error fits: the likelihood reported beside them ------------------------------------------------------

def test_squared_error_fit_reports_the_profiled_normal_likelihood(tmp_path, lv_csv):
    """Without a noise model the NLL is the normal one at sigma^2 = RSS/n (R's logLik of an nls fit)."""
    raw = {"data": {"file": str(lv_csv), "columns": {"x": "prey", "y": "predator"}},
           "model": {"builtin": "lotka_volterra", "parameters": {"alpha": {"init": 1.2}}},
           "training": {"stages": [{"optimizer": "lbfgs", "iterations": 30}], "warm_start": "none"}}
    result = api.fit(config(raw, tmp_path))
    pred = result.predictions
    # every observed cell counts, the first ones too (they are the initial states: residual 0), as in the loss
    r = np.concatenate([(pred[f"{s}_observed"] - pred[f"{s}_predicted"]).dropna().to_numpy() for s in "xy"])
    sigma2 = np.mean(r ** 2)
    like = result.metrics["likelihood"]
    assert like["observations"] == r.size == 42
    assert like["nll"] == pytest.approx(0.5 * r.size * (math.log(2 * math.pi * sigma2) + 1), rel=1e-9)
    assert like["noise"]["sigma"] == pytest.approx(math.sqrt(sigma2), rel=1e-9)
    assert like["parameters"] == 5  # alpha, beta, gamma, delta and the profiled sigma


def test_discovery_refits_minimise_the_same_likelihood(tmp_path, lv_csv):
    """The numpy refits' objective (deviance residuals of the same noise models) equals the torch objective at
    the same predictions to 1e-10, for normal and log-normal noise, and sum(r^2)/2 + its constant is the NLL."""
    from ude_cli.discovery.refit import DataObjective
    from ude_cli.fitting.model import UDEModel
    from ude_cli.likelihood.objective import Objective

    for noise in ({"distribution": "normal", "sigma": 0.07}, {"distribution": "lognormal", "sigma": 0.2},
                  {"distribution": "normal", "error": "combined", "sigma": 0.05, "sigma_rel": 0.1}):
        raw = {"data": {"file": str(lv_csv), "columns": {"x": "prey", "y": "predator"}},
               "model": {"builtin": "lotka_volterra", "parameters": {"alpha": {"init": 1.2}}}, "noise": noise}
        prob = problem(raw, tmp_path)
        model = UDEModel(prob)
        with torch.no_grad():
            sols = model()
            torch_loss = float(Objective(model).loss(sols)[0])
            torch_nll = float(Objective(model).nll(sols)[0])
        g = model.groups[0]
        preds = [sols[0][g.positions[0], 0, 0, :].numpy()]
        numpy_objective = DataObjective(prob, noise={n: p.init for n, p in prob.noise_parameters.items()})
        r = numpy_objective.residuals(preds)
        assert numpy_objective.loss(preds) == pytest.approx(torch_loss, abs=1e-10), noise
        assert 0.5 * float(np.sum(r * r)) + numpy_objective.constant("train") == pytest.approx(torch_nll, abs=1e-9)
        assert numpy_objective.criterion(r, 3) == pytest.approx(2 * torch_nll + 3 * math.log(r.size), abs=1e-8)


def _scipy_nll(prob, objective, sols) -> float:
    """The NLL recomputed with scipy.stats from the observable predictions and the noise estimates."""
    noise = objective.model.noise.numpy()
    total = 0.0
    for k, pred in enumerate(objective.observed(sols)):
        g = objective.model.groups[k]
        for c, name in enumerate(prob.dataset.observables):
            o = prob.observables[name]
            y, ok = g.observations[..., c], g.obs_train[..., c]
            mu = pred[:, 0, :, objective.columns[c]].numpy()
            mu = np.maximum(mu, objective.floor[c].item()) if o.noise.distribution != "normal" else mu
            p = {role: noise[pname][0] for role, pname in o.noise_parameters.items()}
            y, mu = y[ok], mu[ok]
            if o.noise.distribution == "normal":
                sd = {"constant": p["sigma"], "proportional": p["sigma"] * np.abs(mu),
                      "combined": p["sigma"] + p.get("sigma_rel", 0) * np.abs(mu),
                      "combined2": np.sqrt(p["sigma"] ** 2 + (p.get("sigma_rel", 0) * mu) ** 2)}[o.noise.error]
                total -= stats.norm.logpdf(y, mu, sd).sum()
            elif o.noise.distribution == "lognormal":
                total -= stats.lognorm.logpdf(y, s=p["sigma"], scale=mu).sum()
            elif o.noise.distribution == "poisson":
                total -= stats.poisson.logpmf(y, mu).sum()
            else:
                phi = p["dispersion"]
                total -= stats.nbinom.logpmf(y, phi, phi / (phi + mu)).sum()
    return total


@pytest.mark.parametrize("name", ["flu_sir_negbin", "lynx_hare_lognormal", "theophylline_per_subject",
                                  "orange_trees_per_tree"])
def test_bundled_likelihoods_agree_across_engines_and_scipy(name):
    """Each bundled likelihood config at its initial values, solved with rk4 by the compiled engine and by
    torchdiffeq, then recomputed with scipy.stats: one NLL to 1e-10 (relative)."""
    from ude_cli import load_config
    from ude_cli.fitting.model import UDEModel
    from ude_cli.likelihood.objective import Objective
    from ude_cli.problem import resolve

    from .conftest import REPO

    values = {}
    for engine in ("compiled", "torchdiffeq"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        cfg.solver.method, cfg.solver.engine = "rk4", engine
        prob = resolve(cfg)
        model = UDEModel(prob)
        assert model.engine == engine
        objective = Objective(model)
        with torch.no_grad():
            sols = model()
            objective.sync_noise(sols)
            values[engine] = float(objective.nll(sols)[0])
            values[f"scipy ({engine})"] = _scipy_nll(prob, objective, sols)
    assert values["compiled"] == pytest.approx(values["torchdiffeq"], rel=1e-10)
    assert values["compiled"] == pytest.approx(values["scipy (compiled)"], rel=1e-10)


def test_per_experiment_parameter_with_one_experiment_is_a_warning(tmp_path, lv_csv):
    raw = {"data": {"file": str(lv_csv), "columns": {"x": "prey", "y": "predator"}},
           "model": {"builtin": "lotka_volterra", "parameters": {"alpha": {"init": 1.2, "per_experiment": True}}}}
    prob = problem(raw, tmp_path)
    assert any("per_experiment with one experiment" in w for w in prob.warnings)
    assert prob.parameters["alpha"].per_experiment


def test_per_experiment_parameters_are_one_value_each(tmp_path):
    """Two experiments of exponential decay with rates 0.3 and 0.7: a per-experiment rate recovers both, a shared
    one their compromise; params.csv names each experiment's value."""
    t = np.linspace(0, 4, 9)
    rows = [(e, ti, 2.0 * math.exp(-k * ti)) for e, k in (("a", 0.3), ("b", 0.7)) for ti in t]
    write_csv(tmp_path / "d.csv", "run,t,y", rows)
    raw = {"data": {"file": "d.csv", "experiment": "run", "columns": {"y": "y"}},
           "model": {"states": ["y"], "equations": {"y": "-k*y"},
                     "parameters": {"k": {"init": 0.5, "per_experiment": True, "bounds": [0, 5]}}},
           "noise": {"distribution": "normal", "sigma": 0.01},
           "training": {"stages": [{"optimizer": "lbfgs", "iterations": 100}], "warm_start": "none"}}
    result = api.fit(config(raw, tmp_path))
    assert result.values["k[a]"] == pytest.approx(0.3, rel=1e-4)
    assert result.values["k[b]"] == pytest.approx(0.7, rel=1e-4)
    rows = result.parameters.set_index("name")
    assert rows.loc["k[a]", "experiment"] == "a"
    assert result.metrics["n_parameters"]["mechanistic"] == 2


def test_the_fit_table_prints_per_experiment_names_as_they_are(tmp_path):
    """`k[r1]` is a name, not rich markup: the terminal table shows it whole."""
    from typer.testing import CliRunner

    from ude_cli.cli import app

    t = np.linspace(0, 4, 9)
    write_csv(tmp_path / "d.csv", "run,t,y", [(e, ti, 2.0 * math.exp(-k * ti)) for e, k in (("r1", 0.3), ("r2", 0.7))
                                              for ti in t])
    (tmp_path / "c.yaml").write_text(
        "data: {file: d.csv, experiment: run, columns: {y: y}}\n"
        "model: {states: [y], equations: {y: '-k*y'}, parameters: {k: {init: 0.5, per_experiment: true}}}\n"
        "training: {stages: [{optimizer: lbfgs, iterations: 20}], warm_start: none}\noutput: {plots: false}\n")
    result = CliRunner().invoke(app, ["fit", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")],
                                env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "k[r1]" in result.stdout and "k[r2]" in result.stdout
