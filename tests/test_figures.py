"""What the fit figure shows: labels from the config, a legend that explains every mark, one panel per
experiment when there are many, unobserved states left out on request, coinciding curves said, titles that
fit."""

from __future__ import annotations

import numpy as np
import pytest

from ude_cli import fit
from ude_cli.plots import fit_figure, title_text

from .helpers import config


def _decay_csv(path, subjects: int, same: bool = False):
    rows = ["id,t,conc"]
    for s in range(subjects):
        y0 = 2.0 if same else 2.0 + 0.3 * s
        rows += [f"{s + 1},{t:g},{y0 * np.exp(-0.7 * t):.6f}" for t in np.linspace(0, 3, 7)]
    path.write_text("\n".join(rows) + "\n")


def _fit(tmp_path, subjects=1, same=False, **extra):
    _decay_csv(tmp_path / "d.csv", subjects, same)
    raw = {"data": {"file": "d.csv", "experiment": "id" if subjects > 1 else None, "columns": {"y": "conc"},
                    **extra.pop("data", {})},
           "model": {"states": ["y", "z"], "equations": {"y": "-k*y", "z": "k*y"},
                     "parameters": {"k": {"init": 0.5, "positive": True}}, "initial": {"z": 0}},
           "solver": {"method": "rk4", "step": 0.05},
           "training": {"warm_start": "none", "stages": [{"optimizer": "lbfgs", "iterations": 3}]}, **extra}
    if subjects == 1:
        raw["data"].pop("experiment")
    return fit(config(raw, tmp_path))


def _legend_texts(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def test_labels_from_the_config_name_the_axes(tmp_path):
    result = _fit(tmp_path, data={"labels": {"y": "Concentration", "t": "Time"}, "units": {"conc": "mg/L", "t": "h"}})
    fig = fit_figure(result)
    assert [ax.get_ylabel() for ax in fig.axes] == ["Concentration\n[mg/L]", "z (not observed)"]
    assert fig.axes[-1].get_xlabel() == "Time [h]"
    from ude_cli.plots import residual_figure

    (ax,) = residual_figure(result).axes  # standardised: no unit
    assert ax.get_ylabel() == "Concentration\n(standardised)"


def test_one_experiment_legend_has_data_even_when_the_first_panel_has_none(tmp_path):
    result = _fit(tmp_path)
    assert set(_legend_texts(fit_figure(result))) == {"fit", "data", "95 % confidence band", "95 % prediction band"}
    result = _fit(tmp_path, uncertainty={"bands": False})
    assert set(_legend_texts(fit_figure(result))) == {"fit", "data"}


def test_unobserved_states_are_left_out_on_request(tmp_path):
    result = _fit(tmp_path, output={"unobserved": False, "plots": False})
    fig = fit_figure(result)
    assert [ax.get_ylabel() for ax in fig.axes] == ["conc (y)"]


@pytest.mark.parametrize(("subjects", "panels"), [(3, False), (9, True)])
def test_many_experiments_get_one_panel_each(tmp_path, subjects, panels):
    result = _fit(tmp_path, subjects=subjects)
    fig = fit_figure(result)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    if panels:
        assert [ax.get_title() for ax in visible] == [f"id {s + 1}" for s in range(subjects)]
    else:
        assert len(visible) == 2  # a panel per state, a colour per experiment
        assert _legend_texts(fig)[:3] == ["1", "2", "3"]


def test_coinciding_curves_are_said_and_dashed(tmp_path):
    result = _fit(tmp_path, subjects=3, same=True)
    texts = _legend_texts(fit_figure(result))
    assert texts[:3] == ["1", "2 (same curve as 1)", "3 (same curve as 1)"]


def test_long_titles_are_wrapped():
    name = "lotka_volterra/networks.U.hidden=16_16,training.weight_decay=0.001,training.seed=3: data and fit"
    wrapped = title_text(name)
    assert all(len(line) <= 60 for line in wrapped.splitlines()) and len(wrapped.splitlines()) == 2
    assert wrapped.replace("\n", "").replace(" ", "") == name.replace(" ", "")


def test_many_experiments_get_residual_panels_too(tmp_path):
    from ude_cli.plots import residual_figure

    result = _fit(tmp_path, subjects=9)
    visible = [ax for ax in residual_figure(result).axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [f"id {s + 1}" for s in range(9)]


def test_noise_variants_of_one_observable_share_a_panel():
    """A PEtab observable whose rows carry different noise parameters is imported as OBS__1, OBS__2, ... labelled
    OBS with one formula (Fujita_SciSignal2010: 28 of them for 3 observables): one panel each, not 28 repeats."""
    from types import SimpleNamespace

    from ude_cli.expressions import parse_expression
    from ude_cli.plots import _observable_groups

    def obs(label, formula, column):
        return SimpleNamespace(state=None, label=label, column=column, unit=None, expression=parse_expression(formula))

    observables = {"A__1": obs("A", "s*x", "A__1"), "A__2": obs("A", "s*x", "A__2"), "B": obs("B", "x + y", "B"),
                   "A_other": obs("A", "2*s*x", "A_other"), "C": obs(None, "s*x", "C"), "D": obs(None, "s*x", "D")}
    problem = SimpleNamespace(observables=observables, config=SimpleNamespace(data=SimpleNamespace(labels={})))
    assert _observable_groups(problem, list(observables)) == [["A__1", "A__2"], ["B"], ["A_other"], ["C"], ["D"]]


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_a_band_far_beyond_the_data_is_cut_at_the_axis_and_says_so(scale):
    """A band of a barely constrained value (Wald draws over decades: Gause's immigration iP) reaching 1e9 would
    flatten the curve and the data to a line: the axis keeps them, with one span beyond, and says the band is cut.
    A band within that is drawn whole."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ude_cli.plots import _bands_in_view

    t = np.linspace(0, 10, 50)
    y = 1 + np.sin(t) ** 2  # in [1, 2]
    for upper, cut in ((1e9, True), (2.5, False)):
        fig, ax = plt.subplots()
        ax.set_yscale(scale)
        ax.plot(t, y)
        ax.plot(t[::5], y[::5], "o")
        ax.fill_between(t, 0.8 * y, upper)
        assert _bands_in_view(ax) is cut
        low, high = ax.get_ylim()
        if cut:
            lo, hi = y.min(), y.max()  # one span beyond the data and curves (on a log axis: a factor hi/lo)
            assert high == pytest.approx(2 * hi - lo if scale == "linear" else hi * hi / lo, rel=1e-9)
            assert any("bands cut at the axis" in text.get_text() for text in ax.texts)
        else:
            assert high >= 2.5 and not ax.texts
        plt.close(fig)
