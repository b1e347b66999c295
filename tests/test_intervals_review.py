"""Intervals and multistart against known answers, from a pharmacometrician's review: a structurally
non-identifiable pair (only V/F determined), a profile whose inner fit fails, flip-flop kinetics (two exact optima)."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from ude_cli import fit, load_config
from ude_cli.identifiability import profile as profile_module
from ude_cli.identifiability.function import Target
from ude_cli.identifiability.profile import _flat

# the reviewer's oral PK simulation (/tmp/pkuser/c1/sim.py): one compartment, first-order absorption
KA, KE, V, SIGMA = 1.2, 0.15, 20.0, 0.15
SUBJECTS = {
    "s1": {"doses": [(0, 100), (12, 100), (24, 100)], "obs": [0.5, 1, 2, 4, 8, 11.9, 13, 16, 24, 25, 30, 36, 48]},
    "s2": {"doses": [(0, 200), (24, 200)], "obs": [1, 2, 3, 6, 12, 24, 26, 30, 36, 48, 60]},
    "s3": {"doses": [(0, 50), (8, 50), (16, 50), (24, 50), (32, 50)], "obs": [1, 4, 8, 9, 12, 20, 28, 33, 36, 44, 56]},
    "s4": {"doses": [(0, 150), (36, 75)], "obs": [0.5, 2, 5, 10, 20, 36, 37, 40, 48, 60, 72]},
}


def oral_conc(t: float, doses, ka: float = KA, ke: float = KE, v: float = V) -> float:
    """The closed form: superposed doses D ka / (V (ka - ke)) (exp(-ke t) - exp(-ka t)); symmetric under
    (ka, ke, V) -> (ke, ka, V ke/ka) (flip-flop)."""
    return sum(d * ka / (v * (ka - ke)) * (math.exp(-ke * (t - tau)) - math.exp(-ka * (t - tau)))
               for tau, d in doses if tau <= t)


def write_pk(path) -> None:
    """pk.csv exactly as the reviewer's sim.py wrote it (same seed, same draws, 5 significant digits)."""
    rng = np.random.default_rng(20261202)
    lines = ["id,time,amt,conc"]
    for s, info in SUBJECTS.items():
        dd = dict(info["doses"])
        for t in sorted(set(dd) | set(info["obs"])):
            y = f"{oral_conc(t, info['doses']) * np.exp(SIGMA * rng.standard_normal()):.5g}" if t in info["obs"] else ""
            lines.append(f"{s},{t},{dd.get(t, '')},{y}")
    path.write_text("\n".join(lines) + "\n")


ORAL = """
    name: oral
    data: {{file: pk.csv, time: time, experiment: id}}
    model:
      states: [gut, A]
      equations: {{gut: -ka*gut, A: ka*gut - ke*A}}
      parameters:
{parameters}
      initial: {{gut: 0, A: 0}}
      t0: 0
      events:
        - {{column: amt, set: {{gut: "gut + {dose}"}}}}
    observables:
      conc: {{formula: A/V, column: conc}}
    noise: lognormal
    uncertainty: {uncertainty}
    """


def oral_config(write, tmp_path, parameters: str, *, dose: str = "amt", uncertainty: str = "{bands: false}"):
    write_pk(tmp_path / "pk.csv")
    indented = "\n".join("        " + line for line in textwrap.dedent(parameters).strip().splitlines())
    return write("oral.yaml", ORAL.format(parameters=indented, dose=dose, uncertainty=uncertainty))


# -- 1. a flat profile (only V/F determined) is open, and a failed inner fit does not close an interval ---------------

def test_the_profile_of_v_with_f_free_is_flat_and_open(write, tmp_path):
    """F and V both free: only V/F is determined, so V's profile is exactly flat (F = V (F/V) re-optimised at every
    point). Before, the steps grew to a factor 31 and the warm-started inner fit failed at V = 0.00116 and 88893
    (2 (PL - L_min) 222 and 121 after 0.0003), which closed the interval at [0.031, 18918] with identifiable=True."""
    path = oral_config(write, tmp_path, """
        ka: {init: 0.5, positive: true}
        ke: {init: 0.3, positive: true}
        V: {init: 10, positive: true}
        F: {init: 0.5, positive: true}
        """, dose="F*amt", uncertainty="{bands: false, profile: [V]}")
    result = fit(load_config(path))
    unc = result.metrics["uncertainty"]
    (p,) = unc["profiles"]
    assert unc["intervals"]["V"]["identifiable"] is False
    assert p["lower"] is None and p["upper"] is None and not p["identifiable"]
    assert "stays below the threshold" in p["lower_open"] and "stays below the threshold" in p["upper_open"]
    values = np.array([v for v, _ in p["points"]])
    assert values.min() < p["value"] / 999 and values.max() > 999 * p["value"]  # followed over the factor 1000 on each side
    assert max(s for _, s in p["points"]) < 0.05 * p["threshold"]  # flat: the inner fit found V/F every time
    assert "V" in {b["name"] for b in unc["not_identifiable"]}


def _product_config(write, tmp_path, profile: str = "[a]"):
    """dx/dt = -a b x from x(0) = 10, log-normal noise: only a*b (truth 0.6) is determined."""
    t = np.linspace(0, 5, 11)
    rng = np.random.default_rng(4)
    x = 10 * np.exp(-0.6 * t) * np.exp(0.1 * rng.standard_normal(len(t)))
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{b:.12g}\n" for a, b in zip(t, x, strict=True)))
    return write("ab.yaml", f"""
        data: {{file: d.csv, time: t, columns: {{x: x}}}}
        model:
          states: [x]
          parameters: {{a: {{init: 1.0, positive: true}}, b: {{init: 0.5, positive: true}}}}
          equations: {{x: -a*b*x}}
          initial: {{x: 10.0}}
        noise: lognormal
        training: {{stages: [{{optimizer: lbfgs, iterations: 200}}]}}
        uncertainty: {{bands: false, hessian: "off", profile: {profile}}}
        """)


def test_an_inner_fit_that_never_moves_is_rescued_by_the_extrapolated_warm_start(write, tmp_path, monkeypatch):
    """Past a = 3 the re-optimisation does nothing at all (stuck at its warm start). The straight-line extrapolation
    of the last two optima is exact here (log b = log 0.6 - log a), so the retry's start alone is on the ridge:
    the side stays open and every point is flat."""
    original = profile_module.reoptimise
    stuck: list[float] = []

    def never_moves(f, objective, free, iterations):
        a = float(f.model.parameter_values()["a"][0])
        if a > 3:
            stuck.append(a)
            return False
        return original(f, objective, free, iterations)

    monkeypatch.setattr(profile_module, "reoptimise", never_moves)
    result = fit(load_config(_product_config(write, tmp_path)))
    (p,) = result.metrics["uncertainty"]["profiles"]
    assert stuck and p["upper"] is None and "stays below the threshold" in p["upper_open"]
    assert max(s for _, s in p["points"]) < 0.01 and not p["rejected"]  # without it: jumps, rejected


def _failing_inner_fit(monkeypatch, fails):
    """reoptimise that runs off (b multiplied by 1.5, a*b 50 % off) and stops, not converged, at the points
    ``fails(value of a, failures so far)`` says: an inner fit that fails as LBFGS did at V = 88893 (ka ran to 845)."""
    original = profile_module.reoptimise
    seen: list[float] = []

    def stuck(f, objective, free, iterations):
        a = float(f.model.parameter_values()["a"][0])
        if fails(a, seen):
            seen.append(a)
            with torch.no_grad():
                f.model.parameters_.raw["b"] += math.log(1.5)
            return False
        return original(f, objective, free, iterations)

    monkeypatch.setattr(profile_module, "reoptimise", stuck)
    return seen


def test_an_inner_fit_that_fails_once_is_retried_and_the_profile_stays_open(write, tmp_path, monkeypatch):
    """The first re-optimisation past a = 3 fails (the statistic jumps past the threshold). The old code closed the
    interval there; the retry from the neighbour's optimum finds a*b again, and the side stays open (a is not
    identifiable: the truth)."""
    seen = _failing_inner_fit(monkeypatch, lambda a, seen: a > 3 and not seen)
    result = fit(load_config(_product_config(write, tmp_path)))
    (p,) = result.metrics["uncertainty"]["profiles"]
    assert len(seen) == 1  # the failure happened
    assert p["upper"] is None and "stays below the threshold" in p["upper_open"]
    assert max(s for _, s in p["points"]) < 0.01 and not p["rejected"]
    assert result.metrics["uncertainty"]["intervals"]["a"]["identifiable"] is False


def test_an_inner_fit_that_always_fails_leaves_the_end_unknown(write, tmp_path, monkeypatch):
    """Every re-optimisation past a = 3 fails: after the retries and 4 smaller steps the side is open with
    'the end of the interval is not known', never closed at the failed points."""
    seen = _failing_inner_fit(monkeypatch, lambda a, seen: a > 3)
    result = fit(load_config(_product_config(write, tmp_path)))
    (p,) = result.metrics["uncertainty"]["profiles"]
    assert seen and p["upper"] is None and "the end of the interval is not known" in p["upper_open"]
    assert len(p["rejected"]) == profile_module.MAX_HALVINGS + 1
    assert all(v > 3 and s > p["threshold"] for v, s in p["rejected"])  # kept apart from the profile's points
    assert all(v <= 3 for v, _ in p["points"] if v > p["value"])
    assert result.metrics["uncertainty"]["intervals"]["a"]["identifiable"] is False


def _positive_target() -> Target:
    return Target("V", "parameter", torch.zeros(1, dtype=torch.float64), (0,), None, positive=True)


def test_a_closed_profile_interval_too_wide_or_flat_is_not_identifiable():
    """The rules on a closed interval (stepping on log scale): a quadratic profile over [v0/2, 2 v0] identifies the
    value; one that closes only at a factor 10^4 does not (Wald's WIDE_FACTOR, 1000); nor one flat (< 1 % of the
    threshold) from v0/5 to 5 v0 with walls at v0/6 and 6 v0."""
    t, thr, v0 = _positive_target(), 3.84, 10.0
    w = math.log(2.0)
    grid = v0 * np.exp(np.linspace(-1.2 * w, 1.2 * w, 25))
    quadratic = [(float(v), thr * (math.log(v / v0) / w) ** 2) for v in grid]
    assert _flat(t, quadratic, v0, v0 / 2, v0 * 2, thr) == ""
    assert "spans more than a factor 1000" in _flat(t, quadratic, v0, v0 / 100, v0 * 100, thr)
    flat = [(float(v), 0.0) for v in v0 * np.exp(np.linspace(-math.log(5), math.log(5), 9))]
    flat += [(v0 / 6, thr * 1.1), (v0 * 6, thr * 1.1)]
    why = _flat(t, sorted(flat), v0, v0 / 5.9, v0 * 5.9, thr)
    assert why.startswith("the profile is flat") and "from 2 to 50" in why


# -- 2. starts at distinct, equally good optima -----------------------------------------------------------------------

FLIP = """
    ka: {init: 0.2, positive: true}
    ke: {init: 1.0, positive: true}
    V: {init: 10, positive: true}
    """


def test_flip_flop_optima_are_both_reported(write, tmp_path):
    """Flip-flop: (ka, ke, V) and (ke, ka, V ke/ka) give the same curve exactly (the closed form's symmetry,
    checked here on the data times), so their likelihoods are equal. From the reviewer's starts (ka 0.2, ke 1.0) 3
    starts reach the flipped optimum (V 2.49) and one the truth's (V 20.5); before, nothing said so. The warning
    names the other optimum, metrics.json holds it, and its values are the best's swapped."""
    for info in SUBJECTS.values():  # the known answer: the two parameter sets give one curve
        for t in info["obs"]:
            a, b = oral_conc(t, info["doses"]), oral_conc(t, info["doses"], KE, KA, V * KE / KA)
            assert a == pytest.approx(b, rel=1e-12)
    result = fit(load_config(oral_config(write, tmp_path, FLIP)), n_starts=4)
    unc = result.metrics["uncertainty"]
    found = unc["distinct_optima"]
    assert found is not None and len(found["optima"]) == 1
    (other,) = found["optima"]
    best = {n: result.values[n] for n in ("ka", "ke", "V")}
    alt = other["values"]
    assert alt["ka"] == pytest.approx(best["ke"], rel=1e-4) and alt["ke"] == pytest.approx(best["ka"], rel=1e-4)
    assert alt["V"] == pytest.approx(best["V"] * best["ke"] / best["ka"], rel=1e-4)
    assert 0 <= other["delta_nll"] < 1e-4 < found["tolerance"]
    assert set(other["outside"]) == {"ka", "ke", "V"}
    (line,) = unc["warnings"]
    assert line.startswith("the starts reached distinct, equally good optima") and "describe one of them" in line
    assert f"V = {alt['V']:.4g}" in line and f"V = {best['V']:.4g}" in line
    assert {"ka", "ke", "V"} <= {b["name"] for b in unc["not_identifiable"]}
    # the table's rows say it too
    rows = result.parameters.set_index("name")
    assert "another start reached an optimum as good" in rows.loc["V", "identifiability"]


def test_starts_at_one_optimum_give_no_warning(write, tmp_path):
    """The same data from the config's starts (ka 0.5, ke 0.3): every start reaches the truth's optimum (V 20.5),
    within its intervals, and nothing is said."""
    result = fit(load_config(oral_config(write, tmp_path, """
        ka: {init: 0.5, positive: true}
        ke: {init: 0.3, positive: true}
        V: {init: 10, positive: true}
        """)), n_starts=4)
    unc = result.metrics["uncertainty"]
    assert result.values["V"] == pytest.approx(20.54, rel=1e-3)
    assert unc["distinct_optima"] is None and unc["warnings"] == [] and not unc["not_identifiable"]


def test_distinct_optima_rules():
    """The rule itself: a start within the tolerance outside an interval is listed (once for two starts at the same
    point); one outside the tolerance, or inside every interval, is not; a value without an interval counts when it
    moves by more than 1 %."""
    from ude_cli.fitting.multistart import distinct_optima

    values = {"a": np.array([1.0, 5.0, 5.000001, 1.005, 9.0]), "b": np.array([2.0, 2.0, 2.0, 2.0, 2.0])}
    nll = np.array([0.0, 0.3, 0.31, 0.1, 3.0])
    found = distinct_optima(values, nll, 0, {"a": (0.5, 1.5), "b": (1.0, 3.0)}, tolerance=1.0)
    assert [(o["start"], o["also"]) for o in found] == [(1, [2])] and found[0]["outside"] == {"a": [0.5, 1.5]}
    assert distinct_optima(values, nll, 0, {"a": (0.5, 1.5), "b": (1.0, 3.0)}, tolerance=0.2) == []
    assert distinct_optima(values, nll, 0, {"a": (0.5, 10.0), "b": (1.0, 3.0)}, tolerance=10.0) == []
    no_interval = distinct_optima(values, nll, 0, {}, tolerance=0.2)  # start 3: 0.5 % from the best
    assert [o["start"] for o in no_interval] == [] and [o["start"] for o in distinct_optima(
        values, nll, 0, {}, tolerance=0.5)] == [1]


# -- 3. a singular information matrix names the values in its null directions ----------------------------------------

def test_the_null_direction_of_the_information_is_named_and_flagged(write, tmp_path):
    """dx/dt = -a b x observed as c x: the residuals depend on a and b only through a*b, so the information matrix
    has the null direction (1, -1) in (log a, log b) exactly, and c is determined. a and b are flagged, the note
    names them (it was generic), and c keeps its own interval. The fit is least squares of log y on t (known)."""
    t = np.linspace(0, 4, 12)
    rng = np.random.default_rng(8)
    y = 3 * np.exp(-0.6 * t) * np.exp(0.05 * rng.standard_normal(len(t)))
    (tmp_path / "d.csv").write_text("t,y\n" + "".join(f"{a},{b:.12g}\n" for a, b in zip(t, y, strict=True)))
    path = write("abc.yaml", """
        data: {file: d.csv, time: t}
        model:
          states: [x]
          parameters: {a: {init: 1.0, positive: true}, b: {init: 0.5, positive: true}, c: {init: 2, positive: true}}
          equations: {x: -a*b*x}
          initial: {x: 1.0}
        observables: {y: {formula: c*x, column: y}}
        noise: lognormal
        training: {stages: [{optimizer: lbfgs, iterations: 300}]}
        uncertainty: {bands: false}
        """)
    result = fit(load_config(path))
    unc = result.metrics["uncertainty"]
    slope, intercept = np.polyfit(t, np.log(y), 1)  # log-normal noise: the fit is least squares of log y on t
    assert result.values["a"] * result.values["b"] == pytest.approx(-slope, rel=1e-4)
    assert result.values["c"] == pytest.approx(np.exp(intercept), rel=1e-4)
    assert {b["name"] for b in unc["not_identifiable"]} == {"a", "b"}
    (note,) = [n for n in unc["notes"] if n.startswith("the information matrix is not positive definite")]
    assert "involving a, b (" in note and "c" not in note.split("involving", 1)[1].split("(")[0]
    c = unc["intervals"]["c"]
    assert c["identifiable"] is True and c["lower"] < np.exp(intercept) < c["upper"] and c["upper"] / c["lower"] < 1.2


def _seirs_early(tmp_path):
    """The ecologist's SEIRS data (/tmp/ecouser/gen_seirs.py: negative binomial cases, rho 0.3), first 31 days."""
    from scipy.integrate import solve_ivp

    n, beta, sig, gam, om, rho, phi = 10000.0, 0.5, 1 / 3, 0.2, 0.01, 0.3, 20.0

    def f(_, u):
        s, e, i, r = u
        return [-beta * s * i / n + om * r, beta * s * i / n - sig * e, sig * e - gam * i, gam * i - om * r]

    t = np.arange(0, 201.0)
    sol = solve_ivp(f, (0, 200), [9990, 0, 10, 0], t_eval=t, rtol=1e-10, atol=1e-8)
    mu = rho * sig * sol.y[1]
    cases = np.random.default_rng(7).negative_binomial(phi, phi / (phi + mu))
    (tmp_path / "seirs_early.csv").write_text("day,cases\n" + "".join(f"{a},{b}\n" for a, b in zip(t[:30], cases[:30],
                                                                                                    strict=True)))


@pytest.mark.slow
def test_rho_of_an_early_epidemic_is_caught_by_its_profile_not_its_curvature(write, tmp_path):
    """30 days of an SEIRS epidemic: the fit drives om to 0 (the only null direction of the information, named in
    the note and flagged), and rho's Wald interval [0.009, 0.16] excludes the truth 0.3 though rho is in no null
    direction: the likelihood is quadratic near the fit and flat further away, which only its profile sees (it
    reaches rho's bound 1 below the threshold: not identifiable, the truth inside)."""
    _seirs_early(tmp_path)
    path = write("seirs.yaml", """
        data: {file: seirs_early.csv, time: day}
        model:
          states: [S, E, I, R]
          constants: {N: 10000}
          parameters:
            beta: {init: 0.4, positive: true}
            gam: {init: 0.25, positive: true}
            om: {init: 0.02, positive: true}
            rho: {init: 0.5, bounds: [0, 1]}
            sig: {init: 0.5, positive: true}
          equations:
            S: -beta*S*I/N + om*R
            E: beta*S*I/N - sig*E
            I: sig*E - gam*I
            R: gam*I - om*R
          initial: {t0: 0, S: 9990, E: 0, I: 10, R: 0}
        observables:
          cases: {formula: rho*sig*E, noise: negative_binomial}
        uncertainty: {bands: false, profile: [rho]}
        """)
    result = fit(load_config(path))
    unc = result.metrics["uncertainty"]
    (note,) = [n for n in unc["notes"] if n.startswith("the information matrix is not positive definite")]
    assert "involving om (" in note
    wald = {w["name"]: w for w in unc["wald"]["intervals"]}
    assert wald["om"]["identifiable"] is False
    assert wald["rho"]["upper"] < 0.3  # the curvature's interval misses the truth
    rho = unc["intervals"]["rho"]
    assert rho["method"] == "profile likelihood" and rho["identifiable"] is False
    assert rho["lower"] < 0.3 and rho["upper"] is None and "bound" in rho["reason"]
