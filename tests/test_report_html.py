"""report.html (multirun_analysis/html.py): the report as ONE self-contained file, checked by what
it holds and by a screenshot in a real headless browser (Debian's chromium: apt-get install
chromium; .ci/run installs it)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import missing_data
from multirun_analysis.report import build_report
from multirun_analysis.synthetic import write_run

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report of a 2 x 2 grid (learner.c_low x learner.c_high) x 2 seeds, with a per-layer metric."""
    root = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(0)
    k = 0
    for c_low in (-0.5, 0.5):
        for c_high in (0.2, 1.0):
            for seed in (0, 1):
                acc = 0.8 - 0.1 * c_low + 0.05 * c_high + 0.01 * rng.standard_normal(20)
                write_run(root / "sweep" / str(k), {"seed": seed, "learner": {"name": "adapted", "c_low": c_low,
                                                                             "c_high": c_high}},
                          {"accuracy": acc, "rank": {1: np.linspace(90, 60, 20), 2: np.linspace(80, 40, 20)}},
                          choices={"learner": "adapted"})
                k += 1
    md = build_report([root / "sweep"], out=root / "report")
    return md.with_suffix(".html")


def test_report_html_is_one_file_with_every_figure_and_table_embedded(report):
    html = report.read_text()
    folder = report.parent
    pngs = sorted((folder / "figures").glob("*.png"))
    assert len(pngs) >= 4  # accuracy, rank, a grid heatmap, metric vs rate
    embedded = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(pngs)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith("data:") for r in refs), [r[:60] for r in refs if not r.startswith("data:")]
    downloads = dict(re.findall(r'<a download="([^"]+)" href="data:([^;"]+);base64,', html))
    assert downloads["summary.csv"] == "text/csv" and downloads["accuracy.pdf"] == "application/pdf"
    assert "http://" not in html and "https://" not in html and "<script" not in html
    tables = re.findall(r"<table>.*?</table>", html, flags=re.S)
    assert len(tables) >= 3  # the summary, the pivots, the shared settings
    summary = next(t for t in tables if ">Condition</th>" in t)
    cells = [c.strip() for line in (folder / "tables" / "summary.md").read_text().splitlines()
             if line.startswith("|") and not line.startswith("|:") for c in line.strip("|").split("|")]
    rendered = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", summary, re.S)]
    assert cells and [c.replace("**", "") for c in cells if c] == [c for c in rendered if c]  # every cell, as HTML
    details = re.search(r"<details>\s*<summary>Settings shared by all runs</summary>(.*?)</details>", html, re.S)
    assert details and "<table>" in details.group(1) and "learner.name" in details.group(1)  # rendered, not raw
    assert "| ---" not in html and "|:--" not in html  # no Markdown table left unrendered


def _screenshot(html: Path, out: Path) -> np.ndarray:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_data("chromium not installed (apt-get install chromium; .ci/run installs it)")
    proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={out.parent / (out.stem + '-profile')}",
                           "--window-size=1200,4000", f"--screenshot={out}", html.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    import matplotlib.image

    return matplotlib.image.imread(str(out))[..., :3]


def test_report_html_renders_its_figures_in_headless_chromium(report, tmp_path):
    """The file alone (copied into an empty folder, as over SSH) renders with its figures: the
    screenshot holds the curves' colour, and differs from a render of the same page without images."""
    alone = tmp_path / "copied" / "report.html"
    alone.parent.mkdir()
    shutil.copy(report, alone)
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<img [^>]*>", "", report.read_text()))
    full = _screenshot(alone, tmp_path / "full.png")
    without = _screenshot(bare, tmp_path / "bare.png")
    assert full.shape == without.shape and full.shape[0] >= 3000
    import seaborn as sns

    blue = np.array(sns.color_palette("colorblind")[0])  # the first condition's curve colour (plots._palette)

    def curve_pixels(img):
        return int((np.abs(img - blue).max(axis=-1) < 0.06).sum())

    assert curve_pixels(full) > 2000  # the figures' curves are on the page
    assert curve_pixels(without) < 50  # and come only from the images
    changed = np.abs(full - without).max(axis=-1) > 0.1
    assert changed.mean() > 0.05  # the images fill a visible part of the page
    text_rows = (without < 0.5).any(axis=(1, 2))
    assert text_rows[:600].sum() > 50  # the headings and tables render too (dark text near the top)
