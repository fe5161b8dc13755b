"""Summary statistics and tables against hand-computed numbers.

Accuracy of seed s on task t (T = 20 tasks) is a + t/100 + s/10, so per run
- mean over all tasks (Purice 2025) = a + 0.095 + s/10   (mean of 0..19 is 9.5)
- last 15% (Jucas 2025): floor(0.15 * 20) = 3 tasks (17, 18, 19) -> a + 0.18 + s/10
and over seeds {0, 1, 2}: mean adds 0.1, sample std is 0.1.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from multirun_analysis import condition_summaries, last_count, load_runs, pivot_table, run_summaries, summary_table
from multirun_analysis.summaries import parse_stat, stat_names
from multirun_analysis.tables import is_grid
from multirun_analysis.synthetic import write_run

T = 20
BASE = {("relu", "bp"): 0.30, ("relu", "cbp"): 0.50, ("tanh", "bp"): 0.20, ("tanh", "cbp"): 0.60}


def _acc(a, seed):
    return a + np.arange(T) / 100 + seed / 10


@pytest.fixture
def runs_dir(tmp_path):
    for (act, learner), a in BASE.items():
        for seed in range(3):
            write_run(tmp_path / f"{act}-{learner}-{seed}",
                      {"seed": seed, "learner": {"name": learner}, "network": {"activation": act}},
                      {"accuracy": _acc(a, seed), "dead_fraction": {"1": np.full(T, 0.25), "2": np.full(T, 0.5)}},
                      choices={"learner": learner, "activation": act})
    # a condition with a single seed: std must be NaN (blank)
    write_run(tmp_path / "relu-l2-0", {"seed": 0, "learner": {"name": "l2"}, "network": {"activation": "relu"}},
              {"accuracy": _acc(0.1, 0)}, choices={"learner": "l2", "activation": "relu"})
    return tmp_path


@pytest.mark.parametrize("n, k", [(1100, 165), (500, 75), (20, 3), (800, 120), (10, 1), (7, 1), (1, 1), (100, 15)])
def test_last_count(n, k):
    assert last_count(n) == k


def test_stat_names_and_parsing():
    assert stat_names() == ("mean_accuracy", "last15")
    assert stat_names("loss", 0.1) == ("mean_loss", "last10_loss")
    assert parse_stat("last15") == ("last", "accuracy", 0.15)
    assert parse_stat("mean_effective_rank") == ("mean", "effective_rank", 0.15)
    with pytest.raises(ValueError):
        parse_stat("median")


def test_run_summaries_hand_computed(runs_dir):
    runs = run_summaries(load_runs(runs_dir)).set_index("run_id")
    assert len(runs) == 13
    for (act, learner), a in BASE.items():
        for seed in range(3):
            row = runs.loc[f"{act}-{learner}-{seed}"]
            assert row["n_tasks"] == T
            assert row["mean_accuracy"] == pytest.approx(a + 0.095 + seed / 10)
            assert row["last15"] == pytest.approx(a + 0.18 + seed / 10)


def test_condition_summaries_hand_computed(runs_dir):
    summary = condition_summaries(load_runs(runs_dir)).set_index("condition")
    for (act, learner), a in BASE.items():
        row = summary.loc[f"learner={learner}, activation={act}"]
        assert row["n_seeds"] == 3 and row["seeds"] == (0, 1, 2)
        assert row["mean_accuracy"] == pytest.approx(a + 0.195)
        assert row["mean_accuracy_std"] == pytest.approx(0.1)  # sample std (ddof=1)
        assert row["last15"] == pytest.approx(a + 0.28)
        assert row["last15_std"] == pytest.approx(0.1)
    single = summary.loc["learner=l2, activation=relu"]
    assert single["n_seeds"] == 1 and math.isnan(single["last15_std"])
    assert single["last15"] == pytest.approx(0.1 + 0.18)


def test_population_std_on_request(runs_dir):
    summary = condition_summaries(load_runs(runs_dir), ddof=0).set_index("condition")
    assert summary.loc["learner=bp, activation=relu", "last15_std"] == pytest.approx(0.1 * np.sqrt(2 / 3))
    assert (summary["std_ddof"] == 0).all()
    table = summary_table(load_runs(runs_dir), ddof=0)
    assert "population std, ddof=0" in table.title and table.to_frame()["ddof"].eq(0).all()


def _jucas_runs(root, experiment="jucas/relu"):
    for learner in ("cbp", "bp"):
        for seed in range(3):
            write_run(root / f"{learner}-{seed}", {"seed": seed, "learner": {"name": learner}},
                      {"accuracy": _acc(0.5, seed)}, choices={"learner": learner, "experiment": experiment})
    return load_runs(root)


def test_jucas_presets_default_to_the_population_std_of_his_table(tmp_path):
    """[J]'s table script used np.nanstd (ddof=0) over seeds; runs of experiment=jucas/... get it by
    default, and say so; ddof=1 is one argument away. Other runs: the sample std (ddof=1)."""
    df = _jucas_runs(tmp_path / "j")
    summary = condition_summaries(df).set_index("condition")
    assert summary["last15_std"].tolist() == pytest.approx([np.std([0.0, 0.1, 0.2])] * 2)  # ddof=0: 0.0816
    assert summary["std_ddof"].tolist() == [0, 0]
    table = summary_table(df)
    assert "population std, ddof=0" in table.title and table.text().iloc[0, 1] == "78.0 ± 8.2"
    pivot = pivot_table(df, rows="choice.learner", cols="choice.experiment", stat="last15")
    assert "population std, ddof=0" in pivot.title
    sample = summary_table(df, ddof=1)
    assert "sample std, ddof=1" in sample.title and sample.text().iloc[0, 1] == "78.0 ± 10.0"
    mixed = _jucas_runs(tmp_path / "p", experiment="purice/main_relu")
    assert "sample std, ddof=1" in summary_table(mixed).title


def test_last_fraction_other_than_15(runs_dir):
    df = load_runs(runs_dir)
    summary = condition_summaries(df, last_fraction=0.5).set_index("condition")
    # last 10 tasks: mean of t/100 for t = 10..19 is 0.145
    assert summary.loc["learner=cbp, activation=tanh", "last50"] == pytest.approx(0.6 + 0.145 + 0.1)


def test_per_layer_metric_needs_a_layer(runs_dir):
    df = load_runs(runs_dir)
    with pytest.raises(ValueError, match="per layer"):
        run_summaries(df, "dead_fraction")
    runs = run_summaries(df, "dead_fraction", layer=2)
    assert runs["mean_dead_fraction"].tolist() == pytest.approx([0.5] * 12)
    with pytest.raises(KeyError, match="no metric"):
        run_summaries(df, "nonexistent")


def test_summary_table_formats(runs_dir):
    table = summary_table(load_runs(runs_dir))
    text = table.text()
    row = "Continual Backprop, Tanh"
    assert text.loc[row].tolist() == ["79.5 ± 10.0", "88.0 ± 10.0"]  # percent, one decimal
    assert text.loc["L2, ReLU"].tolist() == ["19.5", "28.0"]  # one seed: no std
    md = table.to_markdown()
    assert "| Continual Backprop, Tanh | **79.5 ± 10.0** | **88.0 ± 10.0** | 3 |" in md
    assert md.count("**") == 2 * 2 + 2  # two bold cells + the bold title
    latex = table.to_latex()
    assert r"\textbf{79.5 $\pm$ 10.0}" in latex and r"\toprule" in latex and r"\begin{tabular}{lrrr}" in latex
    csv = pd.read_csv(io.StringIO(table.to_csv()))
    assert set(csv.columns) >= {"row", "column", "mean", "std", "ddof", "n_seeds", "text", "is_best"}
    assert "mean ± std (sample std, ddof=1) over 1/3 seed(s)" in table.title and csv["ddof"].eq(1).all()
    best = csv[csv["is_best"]]
    assert best["row"].tolist() == [row, row]
    assert best["mean"].tolist() == pytest.approx([79.5, 88.0])


def test_pivot_table_rows_and_columns(runs_dir, tmp_path):
    df = load_runs(runs_dir)
    table = pivot_table(df, rows="choice.activation", cols="choice.learner", stat="last15")
    assert table.mean.index.tolist() == ["ReLU", "Tanh"]
    assert table.mean.columns.tolist() == ["Backprop", "L2", "Continual Backprop"]
    assert table.mean.loc["ReLU", "Backprop"] == pytest.approx(100 * (0.3 + 0.28))
    assert table.mean.loc["Tanh", "Continual Backprop"] == pytest.approx(100 * (0.6 + 0.28))
    assert math.isnan(table.mean.loc["Tanh", "L2"])
    # best per row
    assert table.is_best.loc["ReLU"].tolist() == [False, False, True]
    assert table.is_best.loc["Tanh"].tolist() == [False, False, True]
    md = table.to_markdown()
    assert "| Tanh | 48.0 ± 10.0 | – | **88.0 ± 10.0** |" in md
    assert "28.0 (n=1)" in md  # a cell with fewer seeds than the rest says so
    out = tmp_path / "t.csv"
    table.to_csv(out)
    assert pd.read_csv(out)["is_best"].sum() == 2


def test_pivot_keeps_best_of_remaining_keys(tmp_path):
    # c_low x c_high with rho varying too: each cell shows the best rho
    values = {}
    for c_low in (-0.5, 0.5):
        for c_high in (0.5, 1.0):
            for rho in (1e-4, 1e-5):
                a = 0.5 + c_low / 10 + c_high / 20 + (0.01 if rho == 1e-5 else 0.0)
                values[(c_low, c_high, rho)] = a
                write_run(tmp_path / f"{c_low}_{c_high}_{rho}",
                          {"seed": 0, "learner": {"name": "adapted", "c_low": c_low, "c_high": c_high,
                                                  "rho_low": rho}},
                          {"accuracy": np.full(T, a)})
    df = load_runs(tmp_path)
    table = pivot_table(df, rows="learner.c_high", cols="learner.c_low", stat="mean_accuracy", best="table")
    assert table.mean.loc["1", "0.5"] == pytest.approx(100 * values[(0.5, 1.0, 1e-5)])
    assert table.chosen.loc["1", "0.5"] == "c_low=0.5, c_high=1, rho_low=1e-05"
    assert int(table.is_best.to_numpy().sum()) == 1 and bool(table.is_best.loc["1", "0.5"])
    assert any("best over rho_low" in n for n in table.notes)


def test_is_grid_only_when_both_keys_vary_independently():
    def runs(pairs):
        return pd.DataFrame({"run_id": [str(i) for i in range(len(pairs))],
                             "r": [p[0] for p in pairs], "c": [p[1] for p in pairs]})

    full = [(a, b) for a in ("relu", "tanh") for b in ("bp", "cbp", "l2")]
    assert is_grid(runs(full), "r", "c") and is_grid(runs(full), "c", "r")
    diagonal = [("bp", "bp"), ("l2", "l2"), ("cbp", "cbp"), ("cbp_layer_1", "cbp")]  # method x learner
    assert not is_grid(runs(diagonal), "r", "c") and not is_grid(runs(diagonal), "c", "r")
    side_by_side = [(None, "bp"), (None, "l2"), ("relu", "adapted"), ("tanh", "adapted")]  # strategy x learner
    assert not is_grid(runs(side_by_side), "r", "c")
    assert not is_grid(runs(side_by_side + [("relu", "bp")]), "r", "c")
    assert is_grid(runs(side_by_side + [("relu", "bp"), ("relu", "l2")]), "r", "c")  # (None|relu) x (bp|l2)
