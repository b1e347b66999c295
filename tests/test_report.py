"""``ude report``: one self-contained report.html, its figures redrawn from the saved run; checked
in a real headless browser (slow, needs Debian's chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from ude_cli.cli import app, exits
from ude_cli.runs.report import write_report

from .discover_helpers import exact_lv_discovery, tiny_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("report"))


def _discovered(run):
    """The run with a discovery (exact terms) and a forecast, made once."""
    if not (run / "forecast" / "forecast.csv").is_file():
        exact_lv_discovery(run, propose=1)
        result = runner.invoke(app, ["predict", str(run), "--until", "12", "--points", "60"])
        assert result.exit_code == 0, result.output
    return run


def _external_references(html: str) -> list[str]:
    """src/href values that would need a network (data: URIs and fragments are fine)."""
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    return [r for r in refs if not r.startswith(("data:", "#"))]


def test_report_without_discovery(run_dir, tmp_path):
    run_dir = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("discovery", "forecast"))
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "No symbolic recovery yet." in html and "ude discover RUN" in html
    assert html.count('<img src="data:image/png;base64,') == 4  # fit, residuals, loss, terms
    assert _external_references(html) == []
    assert "<script" not in html
    # every figure was redrawn from the saved run, as PNG and PDF
    for stem in ("fit", "residuals", "loss", "terms"):
        assert (run_dir / "figures" / f"{stem}.png").is_file()
        assert (run_dir / "figures" / f"{stem}.pdf").is_file()
    assert "<td><code>alpha</code></td><td class=\"num\">1.3</td>" in html


def test_report_with_discovery_and_forecast(run_dir):
    html = write_report(_discovered(run_dir)).read_text()
    assert "Symbolic recovery: RECOVERED" in html
    assert html.count('src="data:image/svg+xml;base64,') == 2  # one drawn equation per state
    assert 'alt="dx/dt = 1.3*x - 0.9023*x*y"' in html
    assert "<code>-0.902312*x*y</code>" in html
    for caption in ("Learned terms along the fitted trajectories", "The models simulated far beyond the data",
                    "Forecast to t = 12"):
        assert caption in html
    assert html.count('<img src="data:image/png;base64,') == 4 + 3 + 1
    assert _external_references(html) == []


def test_cli_report(run_dir, tmp_path):
    out = tmp_path / "elsewhere" / "r.html"
    result = runner.invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"written: {out}"
    assert out.is_file()
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == exits.OUTPUT
    assert result.stderr.strip() == f"error: {tmp_path / 'missing'}: no such run directory"


# -- a real browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
</script>"""


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-extensions", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
            or "Failed to load resource" in line]


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_report_in_a_headless_browser(run_dir, tmp_path):
    """The report loads offline (network resolution disabled), shows every image, logs no errors."""
    discovered = _discovered(run_dir)
    html = write_report(discovered).read_text()
    probe = tmp_path / "probe.html"  # the report plus a script that counts the images that loaded
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    done = _chromium("--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    n = html.count("<img ")
    assert f'data-images="{n}/{n}"' in done.stdout
    assert _console_errors(done.stderr) == []
    # the check sees errors when there are some
    bad = tmp_path / "bad.html"
    bad.write_text(html.replace("</body>", "<script>console.error('boom')</script></body>"))
    assert _console_errors(_chromium("--dump-dom", bad.as_uri()).stderr)
    # the report itself (no probe) renders to a screenshot
    shot = tmp_path / "shot.png"
    done = _chromium("--hide-scrollbars", "--window-size=1100,4000", f"--screenshot={shot}",
                     (discovered / "report.html").as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 50_000
    assert _console_errors(done.stderr) == []


def test_the_report_holds_the_derived_quantities(tmp_path):
    """uncertainty.derived (printed by ude fit, in metrics.json) has its table in the report, with the numbers of
    metrics.json."""
    import json

    import numpy as np

    from ude_cli.api import run_fit

    t = np.linspace(0, 5, 16)
    x = 5 * np.exp(-0.6 * t) * np.exp(0.05 * np.sin(7 * t))
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a:g},{b:.9g}\n" for a, b in zip(t, x, strict=True)))
    (tmp_path / "c.yaml").write_text("""
data: {file: d.csv, time: t, columns: {x: x}}
model: {states: [x], parameters: {k: {init: 0.3, positive: true}}, equations: {x: -k*x}, initial: {x: 5}}
noise: lognormal
uncertainty: {derived: {half_life: log(2)/k}}
""")
    _, out = run_fit(tmp_path / "c.yaml", out=tmp_path / "run", plots=False, command=["ude", "fit"])
    d = json.loads((out / "metrics.json").read_text())["uncertainty"]["derived"]["half_life"]
    html = write_report(out).read_text()
    assert "Derived quantities (uncertainty.derived)" in html and "<code>log(2)/k</code>" in html
    assert f"{d['value']:.6g}" in html and f"[{d['lower']:.4g}, {d['upper']:.4g}]" in html
