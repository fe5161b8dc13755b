"""Damaged files never make a silently wrong statistic (issue 10, item 5).

Each case damages one run of a small sweep the way copies and crashes do, then checks that
the statistics equal those of the undamaged runs alone (or of the run cut to its complete
lines), and that the damage is named in ``df.attrs``, the log, the report and the CLI.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from multirun_analysis import condition_summaries, load_runs
from multirun_analysis.loading import KNOWN_METRICS
from multirun_analysis.report import build_report
from multirun_analysis.synthetic import write_run

T = 10


def _sweep(root):
    """Two conditions x 3 seeds; run a0 (condition a, seed 0) is the one the cases damage."""
    for cond, level in (("a", 0.5), ("b", 0.8)):
        for seed in range(3):
            cfg = {"seed": seed, "num_tasks": T, "learner": {"name": "l2", "weight_decay": level}}
            acc = np.linspace(level, level - 0.1, T) + seed / 100
            path = write_run(root / f"{cond}{seed}", cfg, {"accuracy": acc, "loss": 1 - acc}) / "metrics.csv"
            header, *lines = path.read_text().splitlines(keepends=True)
            path.write_text(header + "".join(sorted(lines, key=lambda line: int(line.split(",")[0]))))  # as runs write
    return root / "a0" / "metrics.csv"


def _expected_mean(root, without=("a0",)):
    """Mean accuracy of condition a over its undamaged runs, computed here from the numbers."""
    values = [np.linspace(0.5, 0.4, T) + seed / 100 for seed in range(3) if f"a{seed}" not in without]
    return float(np.mean([v.mean() for v in values]))


def _truncate_mid_line(path):
    text = path.read_text()
    cut = text.rfind(",accuracy,") + len(",accuracy,") + 2  # "5,50000,accuracy,,0." : a value read as 0
    path.write_text(text[:cut])


def _truncate_on_a_line(path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))


def _cut_in_a_metric_name(path):
    text = path.read_text()
    cut = text.rfind(",loss,") + 4  # "...,lo": a bogus metric name
    path.write_text(text[:cut])


def _nan_accuracy(path):
    lines = path.read_text().splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if ",accuracy," in line)
    lines[i] = lines[i].rsplit(",", 1)[0] + ",nan\n"
    path.write_text("".join(lines))


def _text_value(path):
    path.write_text(path.read_text().replace(",accuracy,,0.5\n", ",accuracy,,oops\n", 1))


def _extra_column(path):
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",note", *[line + ",x" for line in lines[1:]]]) + "\n")


def _extra_field(path):
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].rstrip("\n") + ",7\n"
    path.write_text("".join(lines))


def _repeated_rows(path):
    text = path.read_text()
    path.write_text(text + "".join(text.splitlines(keepends=True)[1:4]))


def _empty(path):
    path.write_text("")


def _missing_run_json(path):
    (path.parent / "run.json").unlink()


def _no_metrics(path):
    path.unlink()


EXCLUDED = {  # case -> words the reason must contain
    "truncated_on_a_line": "holds 5 task(s) of accuracy, but run.json says the run completed 10",
    "nan": "accuracy of task 0 is not a finite number",
    "text_value": "value 'oops' is not a number",
    "extra_column": "header is 'task,step,metric,layer,value,note'",
    "extra_field": "Expected 5 fields in line 4, saw 6",
    "repeated_rows": "repeated row for task 0, metric accuracy",
    "empty": "empty file",
    "missing_run_json": "run.json missing",
    "no_metrics": "no metrics.csv",
}
DAMAGE = {"truncated_on_a_line": _truncate_on_a_line, "nan": _nan_accuracy, "text_value": _text_value,
          "extra_column": _extra_column, "extra_field": _extra_field, "repeated_rows": _repeated_rows,
          "empty": _empty, "missing_run_json": _missing_run_json, "no_metrics": _no_metrics}


@pytest.mark.parametrize("case", list(EXCLUDED))
def test_a_damaged_run_is_excluded_and_named(tmp_path, caplog, case):
    DAMAGE[case](_sweep(tmp_path))
    with caplog.at_level(logging.WARNING, logger="multirun_analysis"):
        df = load_runs(tmp_path)
    (entry,) = [e for e in df.attrs["excluded"] if e["run_id"] == "a0"]
    assert EXCLUDED[case] in entry["reason"]
    assert "a0" in caplog.text
    assert "a0" not in set(df["run_id"])
    summary = condition_summaries(df)
    a = summary[summary["condition"].str.contains("0.5")].iloc[0]
    assert a["n_seeds"] == 2
    assert a["mean_accuracy"] == pytest.approx(_expected_mean(tmp_path))


@pytest.mark.parametrize("damage", [_truncate_mid_line, _cut_in_a_metric_name])
def test_a_file_cut_mid_line_loses_that_line_and_says_so(tmp_path, caplog, damage):
    """A partial copy of a running run: complete lines are kept; a completed run cut this way is excluded."""
    path = _sweep(tmp_path)
    info = (path.parent / "run.json").read_text().replace('"completed"', '"running"').replace(
        '"tasks_completed": 10', '"tasks_completed": 9')
    (path.parent / "run.json").write_text(info)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="multirun_analysis"):
        df = load_runs(tmp_path, include=("completed", "running"))
    (problem,) = df.attrs["problems"]
    assert problem["run_id"] == "a0" and "ends mid-line" in problem["problem"]
    assert "a0" in caplog.text and "ends mid-line" in caplog.text
    run = df[df["run_id"] == "a0"]
    assert set(run["metric"]) == {"accuracy", "loss"}  # no bogus metric from the cut line
    acc = run[run["metric"] == "accuracy"].sort_values("task")["value"].to_numpy()
    np.testing.assert_allclose(acc, np.linspace(0.5, 0.4, T)[: len(acc)])  # nothing read as 0
    assert len(acc) == (9 if damage is _truncate_mid_line else 10)
    completed = tmp_path / "completed"
    damage(_sweep(completed))
    df = load_runs(completed)
    assert "a0" not in set(df["run_id"])
    assert any(e["run_id"] == "a0" and "ends mid-line although run.json says the run finished" in e["reason"]
               for e in df.attrs["excluded"])


def test_the_same_run_twice_counts_once(tmp_path):
    _sweep(tmp_path / "first")
    _sweep(tmp_path / "again")  # e.g. a sweep re-launched into a new folder
    df = load_runs(tmp_path)
    assert df["run_id"].nunique() == 6
    assert sum("the same run twice" in e["reason"] for e in df.attrs["excluded"]) == 6
    assert condition_summaries(df)["n_seeds"].tolist() == [3, 3]


def test_the_report_and_the_cli_name_damaged_runs(tmp_path):
    runs = tmp_path / "runs"
    _nan_accuracy(_sweep(runs))
    report = build_report([runs], out=tmp_path / "report")
    text = report.read_text()
    assert "## Excluded runs (1)" in text and "not a finite number" in text
    cli = subprocess.run([sys.executable, "-m", "multirun_analysis", "table", str(runs)], capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "run a0 excluded: metrics.csv damaged: accuracy of task 0 is not a finite number" in cli.stderr


@pytest.mark.slow
@pytest.mark.data
def test_every_metric_a_run_writes_is_known(tmp_path, mnist_root, monkeypatch):
    """KNOWN_METRICS covers what real runs write: full probes, every reset learner, regression."""
    from conftest import compose_config
    from plasticity_lab.run import MemberJob, run_population

    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    variants = [("probes=full", "learner=cbp", "dataset.images_per_task=150", "probes.examples=50",
                 "probes.forgetting.holdout=100"),
                ("learner=adapted", "probes=timing"), ("learner=redo",),
                ("dataset=bit_flipping", "dataset.flip_after=100", "network_depth=width_5_depth_1")]
    names = set()
    for k, variant in enumerate(variants):
        folder = tmp_path / str(k)
        run_population([MemberJob(compose_config("debug=smoke", *variant), folder)])
        names |= {line.split(",")[2] for line in (folder / "metrics.csv").read_text().splitlines()[1:]}
    unknown = sorted(n for n in names if not KNOWN_METRICS.fullmatch(n))
    assert not unknown
    assert {"accuracy", "effective_rank", "units_reset", "units_rescaled_low", "error", "period_error",
            "time_update_b1"} <= names
