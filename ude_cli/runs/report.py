"""``ude report``: one self-contained ``report.html`` a scientist can hand on.

Every figure is drawn again from the saved run (:mod:`ude_cli.runs.replay`, no refitting) and
embedded as a base64 PNG (the PDFs are written beside them for papers); equations are LaTeX drawn
by matplotlib's mathtext as SVG images (:mod:`ude_cli.discovery.typeset`). The page has no script, no
stylesheet or font to fetch, and no link that needs a network: it opens offline.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..discovery.extrapolate import late_time_text
from .rundir import atomic_write_text

#: Verdict -> (background, border) colours of its banner.
VERDICT_COLOURS = {
    "recovered": ("#e8f5e9", "#2e7d32"),
    "approximation": ("#fff8e1", "#b26a00"),
    "none": ("#fff8e1", "#b26a00"),
    "worse": ("#ffebee", "#c62828"),
    "failed": ("#ffebee", "#c62828"),
}

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1a1a1a;
       max-width: 1000px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.4em; }
.meta { color: #555; font-size: 0.92em; } .meta dt { font-weight: 600; float: left; clear: left; width: 9em; }
.meta dd { margin-left: 9.5em; margin-bottom: 0.15em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
.verdict { border-left: 6px solid; padding: 0.7em 1em; margin: 1.2em 0; border-radius: 3px; }
.verdict strong { font-size: 1.1em; }
.equation { margin: 0.5em 0 0.5em 1em; } .equation img { height: auto; vertical-align: middle; }
code, pre { font-family: "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.6em 0.8em; overflow-x: auto; }
.note { color: #555; font-size: 0.9em; } details { margin: 0.6em 0; } summary { cursor: pointer; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return _e(x)
    return f"{x:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(header)
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if n else f"<td>{c}</td>"
                                    for c, n in zip(row, numeric, strict=True)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figure(png: Path, caption: str, alt: str, root: Path | None = None) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    pdf = png.with_suffix(".pdf")
    shown = pdf.relative_to(root) if root is not None else Path(pdf.parent.name) / pdf.name
    also = f" (also as <code>{_e(shown.as_posix())}</code>)" if pdf.is_file() else ""
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{caption}{also}</figcaption></figure>")


def _equation_image(latex: str, text: str) -> str:
    from ..discovery.typeset import latex_svg

    try:
        svg = latex_svg(latex.replace("\\frac{d", "\\dfrac{d"), fontsize=15)
    except (ValueError, RuntimeError):  # mathtext cannot draw it: show the plain text
        return f'<div class="equation"><code>{_e(text)}</code></div>'
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<div class="equation"><img src="data:image/svg+xml;base64,{data}" alt="{_e(text)}"></div>'


# -- sections ----------------------------------------------------------------------------------

def _header(run, generated: str) -> str:
    info, cfg = run.info, run.config
    files = "".join(f"<div><code>{_e(f['path'])}</code> <span class='note'>sha256 {_e(f['sha256'][:12])}…</span></div>"
                    for f in info.get("data_files", []))
    exps = ", ".join(f"{_e(x['name'])} ({x['points']} points" + (f", {x['validation_points']} held out" if
                                                                 x.get("validation_points") else "") + ")"
                     for x in info.get("experiments", []))
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (info.get("versions") or {}).items() if v)
    command = " ".join(info.get("command") or [])
    parts = [f"<h1>{_e(run.name)}</h1>"]
    if cfg.description:
        parts.append(f"<p>{_e(cfg.description)}</p>")
    parts.append('<dl class="meta">')
    jumps = []
    if run.problem.events:
        from ..fitting.events import summary

        jumps = [("events", _e(summary(run.problem)))]
    for label, value in (("config", f"<code>{_e(info.get('config_file') or '')}</code>"), ("data", files),
                         ("experiments", exps), *jumps, ("command", f"<code>{_e(command)}</code>"),
                         ("seed", _e(info.get("seed"))), ("versions", versions),
                         ("report", f"generated {generated} from the run directory "
                                    f"<code>{_e(run.path)}</code>; figures redrawn from the saved run")):
        parts.append(f"<dt>{label}</dt><dd>{value}</dd>")
    parts.append("</dl>")
    return "".join(parts)


def _verdict(discovery: Mapping | None) -> str:
    if discovery is None:
        return ('<div class="verdict" style="background:#f5f5f5;border-color:#9e9e9e"><strong>No symbolic recovery '
                "yet.</strong> Run <code>ude discover RUN</code> to recover equations for the learned terms, then "
                "<code>ude report RUN</code> again.</div>")
    v = discovery["verdict"]
    bg, border = VERDICT_COLOURS.get(v, ("#f5f5f5", "#9e9e9e"))
    extra = "" if discovery.get("success", True) else " <strong>Do not present the recovered model as a result.</strong>"
    return (f'<div class="verdict" style="background:{bg};border-color:{border}"><strong>Symbolic recovery: '
            f"{_e(v.upper())}</strong> — {_e(discovery['messages'][0])}{extra}</div>")


def _quality(metrics: Mapping) -> str:
    """The fit-quality line (metrics.json ``fit_quality``), highlighted when the fit is poor."""
    q = metrics.get("fit_quality")
    if not q:
        return ""
    bg, border = ("#fdecea", "#c62828") if q["poor"] else ("#f5f5f5", "#9e9e9e")
    rows = "".join(f"<li>{_e(s)}: MSE {_num(v['mse'], 3)}, noise {_num(v['noise'], 3)}, "
                   f"{_num(v['ratio'], 3)}x its floor; runs test p = {_num(v['runs_p'], 3)}</li>"
                   for s, v in q["per_observable"].items())
    return (f'<div class="verdict" style="background:{bg};border-color:{border}"><strong>'
            f"{'Poor fit' if q['poor'] else 'Fit quality'}</strong> — {_e(q['line'].split(': ', 1)[-1])}<ul>{rows}</ul>"
            f'<span class="note">{_e(q["method"])}</span></div>')


def _identifiability(metrics: Mapping) -> str:
    """The values the data cannot identify (metrics.json ``uncertainty.not_identifiable``), in a red box."""
    bad = (metrics.get("uncertainty") or {}).get("not_identifiable") or []
    if not bad:
        return ""
    rows = "".join(f"<li><code>{_e(b['name'])}</code>: {_e(b['reason'])}</li>" for b in bad)
    return ('<div class="verdict" style="background:#fdecea;border-color:#c62828"><strong>Not identifiable: '
            f"{len(bad)} value(s)</strong> — the data do not pin them; do not read their estimates as results.<ul>"
            f"{rows}</ul></div>")


def _interval(r: Mapping) -> str:
    if _missing(r.get("ci_method")):
        return ""

    def end(x, infinite: str) -> str:
        return infinite if _missing(x) or not math.isfinite(float(x)) else _num(x, 4)

    flag = " <strong>not identifiable</strong>" if r.get("identifiable") is False else ""
    return f"[{end(r.get('ci_lower'), '-inf')}, {end(r.get('ci_upper'), 'inf')}]{flag}"


def _parameters(run) -> str:
    frame = run.parameters
    rows = []
    level = (run.metrics.get("uncertainty") or {}).get("level")
    for r in frame.to_dict(orient="records"):
        lo, hi = r.get("lower"), r.get("upper")
        bounds = "" if _missing(lo) and _missing(hi) else f"[{_num(None if _missing(lo) else lo)}, " \
                                                          f"{_num(None if _missing(hi) else hi)}]"
        rows.append([f"<code>{_e(r['name'])}</code>", _num(r["value"], 6), _interval(r),
                     _e("" if _missing(r.get("ci_method")) else r["ci_method"]), _num(r["init"], 6),
                     "yes" if r["learned"] else "fixed", bounds, _e("" if _missing(r.get("unit")) else r["unit"]),
                     _e("" if _missing(r.get("description")) else r["description"])])
    interval = f"{level * 100:g} % interval" if level else "interval"
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in (run.metrics.get("uncertainty") or {}).get("notes") or [])
    return _table(["parameter", "value", interval, "method", "initial", "learned", "bounds", "unit", "meaning"], rows,
                  [False, True, False, False, True, False, False, False, False]) + _derived(run, interval) + notes


def _derived(run, interval: str) -> str:
    """uncertainty.derived: each quantity's formula, value and interval, as ``ude fit`` prints them."""
    derived = (run.metrics.get("uncertainty") or {}).get("derived") or {}
    if not derived:
        return ""
    rows = [[f"<code>{_e(name)}</code>", f"<code>{_e(d.get('formula', ''))}</code>", _num(d["value"], 6),
             _interval({"ci_method": d.get("method"), "ci_lower": d.get("lower"), "ci_upper": d.get("upper")}),
             _e(d.get("method") or "")] for name, d in derived.items()]
    return ("<h3>Derived quantities (uncertainty.derived)</h3>"
            + _table(["quantity", "formula", "value", interval, "method"], rows, [False, False, True, False, False]))


def _noise_model(run) -> str:
    """What each CSV column measures and its noise model (metrics.json's likelihood section and the config)."""
    like = (run.metrics.get("likelihood") or {}).get("noise_model") or {}
    rows = []
    for name, o in run.problem.observables.items():
        what = f"state {o.state}" if o.state is not None else o.expression.text
        rows.append([f"<code>{_e(name)}</code>", f"<code>{_e(o.column)}</code>", f"<code>{_e(what)}</code>",
                     _e(like.get(name, ""))])
    return _table(["observable", "column", "measures", "noise model"], rows, [False, False, False, False])


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x == ""


def _metrics(run) -> str:
    from ..plots import given_label

    m = run.metrics
    rows = [["training loss (" + _e(m.get("loss_kind", "")) + ")", _num(m.get("loss"))],
            ["validation loss", _num(m.get("validation_loss"))]]
    for split in ("train", "validation"):
        for s, v in (m.get(f"{split}_mse") or {}).items():
            given = given_label(run.problem, s, run.problem.dataset.columns.get(s))  # the config's data.labels
            rows.append([f"{split} MSE of {_e(s)}" + (f" ({_e(given)})" if given else "") + " (data units)", _num(v)])
    n = m.get("n_parameters") or {}
    obs = m.get("observations") or {}
    like = m.get("likelihood") or {}
    if like:
        rows += [["negative log-likelihood (training)", _num(like.get("nll"), 8)],
                 *([["negative log-likelihood (validation)", _num(like.get("validation_nll"), 8)]]
                   if like.get("validation_nll") is not None else []),
                 ["AIC", _num(like.get("aic"), 8)], ["BIC", _num(like.get("bic"), 8)],
                 ["parameters counted in AIC/BIC", _num(like.get("parameters"))],
                 ["how", _e(like.get("method", "")) + "; " + _e(like.get("counted", ""))]]
        for name, value in (like.get("noise") or {}).items():
            rows.append([f"noise parameter <code>{_e(name)}</code>", _num(value, 6)])
    kinds = [f"{n[k]} {k}" for k in ("mechanistic", "observation", "noise", "initial", "network") if n.get(k)]
    rows += [["fitted values", ", ".join(kinds) if kinds else "none"],
             ["observations", f"{obs.get('train', '–')} training, {obs.get('validation', '–')} validation"],
             ["iterations", _num(m.get("iterations"))], ["wall time", f"{_num(m.get('wall_seconds'), 3)} s"],
             ["solver evaluations", _num(m.get("solver_evaluations"), 8)],
             ["solver engine", _e(m.get("solver_engine", "torchdiffeq"))],
             *([["solver method", _e(f"{m['solver_method']}: {m.get('solver_method_reason', '')}")]]
               if m.get("solver_method") else []),
             *([["native code", _e(m["native_code_note"])]] if m.get("native_code_note") else []),
             ["stopped", _e(m.get("stop_reason"))],
             ["starts", _num(m.get("starts"))]]
    return _table(["metric", "value"], rows, [False, True])


def _beside(discovery: Mapping, parameters) -> str:
    """The recovered model's own profile intervals beside the UDE's intervals of the same values."""
    own = discovery.get("recovered_intervals") or {}
    if not own.get("intervals"):
        return f'<p class="note">{_e(own["note"])}</p>' if own.get("note") else ""
    ude = {r["name"]: r for r in parameters.to_dict(orient="records")} if parameters is not None else {}
    rows = []
    for name, iv in own["intervals"].items():
        u = ude.get(name)
        mine = {"ci_lower": iv["lower"], "ci_upper": iv["upper"], "ci_method": iv["method"],
                "identifiable": iv["identifiable"]}
        rows.append([f"<code>{_e(name)}</code>", _num(u["value"], 5) if u is not None else "–",
                     _interval(u) if u is not None else "not in the UDE", _num(iv["value"], 5), _interval(mine)])
    level = f"{100 * own['level']:g} %"
    return ("<h3>The recovered model's values beside the UDE's</h3>" + _table(
        ["value", "UDE", f"UDE {level} interval", "recovered", f"recovered {level} interval"], rows,
        [False, True, False, True, False]) + f'<p class="note">Recovered: {_e(own["method"])}. UDE: as in the '
        "parameters table.</p>")


def _discovery_section(discovery: Mapping, directory: Path, parameters=None) -> str:
    parts = ["<h2>Recovered equations</h2>"]
    for s, form in discovery["equations"].items():
        parts.append(_equation_image(form["latex"], f"d{s}/dt = {form['numeric']}"))
    plain = "\n".join(f"d{s}/dt = {f['numeric']}" for s, f in discovery["equations"].items())
    named = "\n".join(f"d{s}/dt = {f['text']}" for s, f in discovery["equations"].items())
    parts.append(f"<p>As plain text, and with parameter names as in <code>discovery/recovered.yaml</code> "
                 f"(a config <code>ude fit</code> runs as a purely mechanistic model):</p><pre>{_e(plain)}</pre>"
                 f"<pre>{_e(named)}</pre>")
    parts.append(f"<details><summary>LaTeX</summary><pre>{_e(chr(10).join(f['latex'] for f in discovery['equations'].values()))}"
                 "</pre></details>")
    rows = []
    for t in discovery["terms"]:
        rec, fid = t["recovered"], t["recovered"]["fidelity_to_network"]
        rows.append([f"<code>{_e(t['term'])}</code>", _e(", ".join(f"d{s}/dt" for s in t["states"])),
                     f"<code>{_e(rec['expression'])}</code>", _num(fid["r2"]), _num(fid["max_error"], 3),
                     f"<code>{_e(t['pysindy']['expression'])}</code>",
                     _num(t["pysindy"]["fidelity_to_network"]["r2"])])
    parts.append("<h3>Learned terms</h3>" + _table(
        ["term", "in", "recovered (refitted to the data)", "R² vs network", "max error", "pysindy on the network",
         "its R²"], rows, [False, False, False, True, True, False, True]))
    parts.append('<p class="note">The network proposes, the data decide: candidates proposed from the network are '
                 "refitted to the data by ODE least squares and kept only while they lower the BIC. A network "
                 "fitted to noisy data can be far from the true term, so a low R² against the network is not by "
                 "itself a failure; the verdict rests on the fit to the data and the extrapolation.</p>")
    for line in discovery["messages"][1:]:
        parts.append(f"<p>{_e(line)}</p>")
    chosen, mech, ude = discovery["chosen"], discovery["mechanistic_only"], discovery["ude"]
    rows = [["UDE (network)", _num(ude.get("train_loss")), _num(ude.get("validation_loss")), "–", "–"],
            ["recovered", _num(chosen["train_loss"]), _num(chosen["validation_loss"]), _num(chosen["bic"], 5),
             _num(chosen["n_fitted"])],
            ["mechanistic only", _num(mech["train_loss"]), _num(mech["validation_loss"]), _num(mech["bic"], 5),
             _num(mech["n_fitted"])]]
    parts.append("<h3>Scores</h3>" + _table(["model", "training loss", "validation loss", "BIC", "fitted values"],
                                            rows, [False, True, True, True, True]))
    parts.append(_beside(discovery, parameters))
    intervals = {n: iv for t in discovery["terms"] for n, iv in t["recovered"].get("intervals", {}).items()}

    def band(name):
        iv = intervals.get(name)
        if iv is None:
            return ""
        if iv["lower"] is None and iv["upper"] is None:
            return "unbounded"
        return (f"[{'-inf' if iv['lower'] is None else _num(iv['lower'])}, "
                f"{'inf' if iv['upper'] is None else _num(iv['upper'])}]")

    rows = [[f"<code>{_e(label)}</code>", _num(x, 6), band(n)] for n, v in chosen["parameters"].items()
            for label, x in (((f"{n}[{e}]", x) for e, x in v.items()) if isinstance(v, dict) else [(n, v)])]
    for e, states in chosen["initial"].items():
        for s, v in states.items():
            label = f"{s}(t0)" if len(chosen["initial"]) == 1 else f"{s}(t0)[{e}]"
            if label in chosen["fitted"]:
                rows.append([f"<code>{_e(label)}</code>", _num(v, 6), ""])
    method = next((iv["method"] for iv in intervals.values()), None)
    level = next((f"{100 * iv['level']:g} % interval" for iv in intervals.values()), "interval")
    parts.append("<h3>Parameters of the recovered model</h3>"
                 + _table(["name", "value", level], rows, [False, True, True])
                 + (f'<p class="note">Intervals: {_e(method)}.</p>' if method else ""))
    selection = discovery.get("selection") or {}
    if selection.get("runner_ups"):
        rows = [[f"<code>{_e(c['model'])}</code>", _num(c["n_terms"]), _num(c["bic"], 5), _num(c["train_loss"]),
                 "–" if c["halves_won"] is None else f"{100 * c['halves_won']:.0f} %"] for c in selection["runner_ups"]]
        checks = "".join(f"<li><code>{_e(c['term'])}</code> <code>{_e(c['feature'])}</code>: "
                         f"{'kept' if c['kept'] else 'dropped'}, {_e(c['why'])}</li>" for c in selection.get("checks", []))
        parts.append(f"<h3>Selection</h3><p>{_e(selection['method'])}.</p>"
                     + _table(["structure (best BIC first)", "terms", "BIC", "training loss", "halves won"], rows,
                              [False, True, True, True, False]) + (f"<ul>{checks}</ul>" if checks else ""))
    items = []
    for name, ext in discovery["extrapolation"].items():
        text = f"stays bounded to t = {_num(ext['horizon'])}" if ext["bounded"] else \
            f"<strong>diverges before t = {_num(ext['horizon'])}</strong>: {_e(ext['message'])}"
        late = late_time_text((ext.get("oscillations") or [{}])[0]) if ext["bounded"] else ""
        items.append(f"<li>{_e(name)}: {text}" + (f" (late time: {_e(late)})" if late else "") + "</li>")
    parts.append("<h3>Beyond the data</h3><ul>" + "".join(items) + "</ul>")
    cands = sorted(discovery["candidates"], key=lambda c: c["bic"] if c["bic"] is not None else math.inf)
    rows = [[_e(c["source"]), f"<code>{_e(c['model'])}</code>", _num(c["train_loss"]), _num(c["bic"], 5),
             "yes" if c["success"] else _e(c["message"] or "no")] for c in cands[:12]]
    parts.append(f"<details><summary>Candidates refitted to the data ({len(cands)}; the best 12 by BIC)</summary>"
                 + _table(["proposed by", "model", "training loss", "BIC", "solved"], rows,
                          [False, False, True, True, False]) + "</details>")
    for t in discovery["terms"]:
        rows = [[_num(p["threshold"], 3), _num(p["n_terms"]), _num(p["r2"]), _num(p["bic"], 5),
                 f"<code>{_e(p['expression'])}</code>"] for p in t["pysindy"]["path"]]
        parts.append(f"<details><summary>pysindy's threshold path for {_e(t['term'])}</summary>"
                     + _table(["threshold", "terms", "R² vs network", "BIC vs network", "model"], rows,
                              [True, True, True, True, False]) + "</details>")
    figs = directory / "figures"
    for stem, caption in (("terms", "Learned terms along the fitted trajectories: the network, the recovered "
                                    "expression and pysindy's proposal."),
                          ("recovered_fit", "The data with the UDE, the recovered and the mechanistic-only models."),
                          ("extrapolation", "The models simulated far beyond the data (grey: the data window).")):
        if (figs / f"{stem}.png").is_file():
            parts.append(_figure(figs / f"{stem}.png", caption, caption, directory.parent))
    return "".join(parts)


def _forecast_section(directory: Path) -> str:
    import json

    png = directory / "figures" / "forecast.png"
    if not png.is_file():
        return ""
    meta = {}
    if (directory / "forecast.json").is_file():
        meta = json.loads((directory / "forecast.json").read_text(encoding="utf-8"))
    notes = "".join(f"<li>{_e(n)}</li>" for n in meta.get("notes", []))
    return ("<h2>Forecast</h2>" + (f"<ul>{notes}</ul>" if notes else "")
            + _figure(png, f"Forecast to t = {_num(meta.get('until'))} (<code>ude predict</code>).", "forecast",
                      directory.parent))


# -- the whole report ----------------------------------------------------------------------------

def redraw(run) -> None:
    """Draw every figure of a saved run again (run, discovery, forecast), as PNG and PDF."""
    import pandas as pd

    from .. import plots
    from ..discovery import plots as discover_plots
    from ..discovery.files import DISCOVERY_DIR
    from ..forecast import FORECAST_DIR, forecast_figure
    from .replay import result_from_run

    dpi = run.config.output.dpi
    plots.write_all(result_from_run(run), run.path / "figures", dpi=dpi)
    if (run.path / DISCOVERY_DIR / "discovery.json").is_file():
        discover_plots.write_all(run.problem, run.path / DISCOVERY_DIR, dpi=dpi)
    fdir = run.path / FORECAST_DIR
    if (fdir / "forecast.csv").is_file():
        import json

        meta = json.loads((fdir / "forecast.json").read_text(encoding="utf-8")) if (fdir / "forecast.json").is_file() \
            else {}
        frame = pd.read_csv(fdir / "forecast.csv", dtype={"experiment": str})
        plots.save_figure(forecast_figure(run.problem, frame, meta, meta.get("notes")), fdir / "figures",
                          "forecast", dpi)


def render(run) -> str:
    """The HTML of the report of a saved run whose figures are drawn."""
    from ..discovery.files import DISCOVERY_DIR, read_discovery
    from ..forecast import FORECAST_DIR

    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    discovery = read_discovery(run.path)
    figs = run.path / "figures"
    body = [_header(run, generated), _quality(run.metrics), _identifiability(run.metrics), _verdict(discovery),
            "<h2>Parameters</h2>", _parameters(run),
            "<h2>Observation and noise model</h2>", _noise_model(run),
            "<h2>Metrics</h2>", _metrics(run), "<h2>Figures</h2>"]
    held_out = any(not e.train.all() for e in run.problem.dataset.experiments)
    fit_caption = "Data (dots" + ("; open: held out, in the shaded validation window" if held_out else "") + \
        ") and the fitted trajectories."
    for stem, caption in (("fit", fit_caption),
                          ("residuals", "Standardised residuals: observed minus predicted, over the noise "
                                        "model's standard deviation (dashed: ±2)."),
                          ("loss", "Training loss per iteration."),
                          ("terms", "Learned terms (network outputs) along the fitted trajectories."),
                          ("profiles", "Profile likelihoods: 2 (PL - min) against each value, everything else "
                                       "re-optimised at each point; dashed: the interval's threshold.")):
        if (figs / f"{stem}.png").is_file():
            body.append(_figure(figs / f"{stem}.png", caption, caption))
    if discovery is not None:
        body.append(_discovery_section(discovery, run.path / DISCOVERY_DIR, run.parameters))
    body.append(_forecast_section(run.path / FORECAST_DIR))
    from .. import __version__

    body.append(f'<hr><p class="note">Written by ude {_e(__version__)}. Every image is embedded; the page needs '
                "no network.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(run.name)}: ude report</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Redraw the figures of a saved run and write its ``report.html``; return the file's path.

    Arguments:
        run_dir: the run directory.
        out: the HTML file (default: ``RUN/report.html``).

    Raises:
        RunDirError: not a complete run directory, or the report cannot be written.
    """
    from ..errors import RunDirError
    from .load import load_run

    run = load_run(run_dir)
    target = Path(out) if out is not None else run.path / "report.html"
    try:
        redraw(run)
        text = render(run)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
    except OSError as exc:
        raise RunDirError(f"cannot write the report: {exc.strerror or exc}", where=str(target)) from None
    return target
