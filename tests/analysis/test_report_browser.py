"""The HTML report renders in headless Chromium: it loads without errors, its tables and images are there."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _synthetic_records import PNG_MAGIC, make_runs

from erasablemask.analysis.collect import collect_run_dirs
from erasablemask.analysis.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                                          "(Debian: apt-get install chromium)")

# Injected first in <head> of a copy of the page: records errors (scripts, and resources that fail to load,
# captured), then on load writes what the page holds into a body attribute that --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src) || e.type)),
                        true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.setAttribute('data-probe', JSON.stringify({
    tables: document.querySelectorAll('table.results').length,
    rows: document.querySelectorAll('table.results tbody tr').length,
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    errors: window.__errors}));
});
</script>"""


def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={user_dir}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    collect_run_dirs([make_runs(root / "runs")], root / "ds")
    return write_report(root / "ds", root / "out", n_boot=100).index_html


def test_report_loads_in_chromium_with_its_tables_and_images_and_no_errors(report: Path, tmp_path: Path):
    probe = report.with_name("probe.html")
    probe.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    done = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), user_dir=tmp_path / "profile")
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found, f"the page did not finish loading in Chromium (rc {done.returncode}): {done.stderr[-2000:]}"
    state = json.loads(html.unescape(found.group(1)))
    assert state["tables"] == 3 and state["rows"] >= 10
    assert state["images"] == 4 and state["broken"] == []
    assert state["errors"] == []


def test_report_screenshot_is_a_rendered_page(report: Path, tmp_path: Path):
    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1400,2000", "--hide-scrollbars", report.as_uri(),
                     user_dir=tmp_path / "profile")
    assert shot.is_file(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 50_000  # a blank page of this size is a few kB
