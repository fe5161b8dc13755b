"""python -m multirun_analysis, end to end in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multirun_analysis.cli import main
from multirun_analysis.report import build_report
from multirun_analysis.synthetic import write_run

REPO = Path(__file__).resolve().parents[1]
T = 10


def cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "multirun_analysis", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_main(capsys, monkeypatch, tmp_path):
    """The same CLI in-process (fast): returns returncode, stdout, stderr."""
    monkeypatch.chdir(tmp_path)

    def call(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # --help
            code = e.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return call


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multirun")
    for act in ("relu", "tanh"):
        for learner, a in (("bp", 0.5), ("cbp", 0.8)):
            for seed in range(2):
                write_run(root / f"{act}_{learner}_{seed}",
                          {"seed": seed, "learner": {"name": learner}, "network": {"activation": act}},
                          {"accuracy": np.full(T, a + (0.05 if act == "relu" else 0.0) + seed / 100),
                           "dead_fraction": {"1": np.linspace(0, 0.5, T), "2": np.linspace(0, 0.2, T)}},
                          choices={"learner": learner, "activation": act})
    write_run(root / "crashed", {"seed": 5, "learner": {"name": "bp"}, "network": {"activation": "relu"}},
              {"accuracy": [0.1]}, status="failed", error="ValueError: nan loss",
              choices={"learner": "bp", "activation": "relu"})
    return root


@pytest.mark.slow
def test_report_end_to_end(runs, tmp_path):
    result = cli("report", runs, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    match = re.search(r"report written to (\S+)", result.stdout)
    assert match, result.stdout
    report = tmp_path / match.group(1)
    assert report.name == "report.md" and report.parent.parent == tmp_path / "reports"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", report.parent.name)
    text = report.read_text()
    assert "| Continual Backprop, ReLU | **85.5 ± 0.7** | **85.5 ± 0.7** | 2 |" in text
    assert "## Excluded runs (1)" in text and "`crashed`" in text and "nan loss" in text
    assert "learner=cbp activation=relu" in text  # the best configuration as overrides
    assert "Activation x Learner" in text  # pivot of the two varying keys
    assert "excluded 1 of 9 runs" in result.stderr
    # every file the report links to exists; every figure is a real PNG/PDF
    links = re.findall(r"\]\(((?:figures|tables)/[^)]+)\)", text)
    assert {"figures/accuracy.png", "figures/accuracy.pdf", "figures/dead_fraction.png",
            "tables/summary.md", "tables/summary.tex", "tables/summary.csv"} <= set(links)
    for link in links:
        path = report.parent / link
        assert path.is_file() and path.stat().st_size > 0, link
        if link.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if link.endswith(".pdf"):
            assert path.read_bytes()[:5] == b"%PDF-"
    # a second report never overwrites the first
    again = cli(runs, cwd=tmp_path)  # no subcommand means report
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "reports").iterdir())) == 2


def test_method_sweep_report_has_no_diagonal_pivot(tmp_path):
    """A `method` sweep varies method and learner together (cbp, cbp_layer_1 -> cbp; bp -> bp):
    a method x learner pivot would be the summary's diagonal, so the report has none."""
    root = tmp_path / "sweep"
    methods = {"bp": ("bp", 0.0005, 0.6), "l2": ("l2", 0.005, 0.7), "cbp": ("cbp", 0.005, 0.8),
               "cbp_layer_1": ("cbp", 0.005, 0.9)}
    for num, (method, (learner, step, a)) in enumerate(methods.items()):
        for seed in range(2):
            cfg = {"seed": seed, "learner": {"name": learner, **({"layers": [1] if method == "cbp_layer_1" else "all"}
                                                                 if learner == "cbp" else {})},
                   "optimizer": {"name": "sgd", "step_size": step}}
            write_run(root / f"{num}{seed}", cfg, {"accuracy": np.full(T, a + seed / 100)},
                      choices={"learner": learner, "method": method})
    report = build_report([root], out=tmp_path / "report")
    text = report.read_text()
    assert "| Continual Backprop, method=cbp_layer_1 | **90.5 ± 0.7** |" in text  # the summary table is there
    assert not list((report.parent / "tables").glob("pivot_*")) and " x " not in text
    assert not list((report.parent / "figures").glob("grid_*"))


def test_report_refuses_existing_out(runs, tmp_path, run_main):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = run_main("report", runs, "--out", out)
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert (out / "keep.txt").read_text() == "precious" and len(list(out.iterdir())) == 1


def test_clear_error_without_runs(tmp_path):
    (tmp_path / "nothing").mkdir()
    result = cli("report", tmp_path / "nothing", cwd=tmp_path)
    assert result.returncode == 2
    assert "no runs found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()


def test_table_best_and_plot_subcommands(runs, tmp_path, run_main):
    table = run_main("table", runs, "--rows", "choice.activation", "--cols", "choice.learner", "--stat", "last15")
    assert table.returncode == 0, table.stderr
    assert "| ReLU | 55.5 ± 0.7 | **85.5 ± 0.7** |" in table.stdout
    latex = run_main("table", runs, "--format", "latex")
    assert latex.returncode == 0 and r"\begin{tabular}" in latex.stdout
    csv = run_main("table", runs, "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.startswith("row,column,mean,std,ddof,n_seeds,text,is_best")
    best = run_main("best", runs, "--by", "last15", "-q")
    assert best.returncode == 0 and best.stdout.strip() == "learner=cbp activation=relu"
    included = run_main("best", runs, "--include", "all")
    assert included.returncode == 0 and "overrides: learner=cbp activation=relu" in included.stdout
    plot = run_main("plot", runs, "--metric", "dead_fraction", "--out", tmp_path / "figs")
    assert plot.returncode == 0, plot.stderr
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["dead_fraction.pdf", "dead_fraction.png"]
    bad = run_main("plot", runs, "--kind", "grid")
    assert bad.returncode == 2 and "--x and --y" in bad.stderr
    unknown = run_main("table", runs, "--metric", "nope")
    assert unknown.returncode == 2 and "no metric 'nope'" in unknown.stderr


def test_table_states_and_switches_the_std_convention(runs, tmp_path, run_main):
    """Sample std by default (these runs are no Jucas preset); --ddof 0 gives numpy's population std."""
    sample = run_main("table", runs, "--rows", "choice.activation", "--cols", "choice.learner", "--stat", "last15")
    population = run_main("table", runs, "--rows", "choice.activation", "--cols", "choice.learner", "--stat", "last15",
                          "--ddof", "0")
    assert "sample std, ddof=1" in sample.stdout and "| ReLU | 55.5 ± 0.7 |" in sample.stdout
    assert "population std, ddof=0" in population.stdout and "| ReLU | 55.5 ± 0.5 |" in population.stdout  # 0.707 / sqrt 2
    report = run_main("report", runs, "--ddof", "0", "--out", tmp_path / "rep")
    assert report.returncode == 0, report.stderr
    assert "std over seeds: population std, ddof=0" in (tmp_path / "rep" / "report.md").read_text()


def test_help_documents_every_subcommand(run_main):
    top = run_main("--help")
    assert top.returncode == 0
    for sub in ("report", "table", "plot", "best"):
        assert sub in top.stdout
        result = run_main(sub, "--help")
        assert result.returncode == 0 and "--include" in result.stdout
