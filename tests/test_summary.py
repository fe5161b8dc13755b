"""What a run says after its first task and at its end, and what a sweep says at its end (summary.py)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest

from multirun_analysis.synthetic import write_run
from plasticity_lab.summary import format_duration, projection, run_line, sweep_lines


@pytest.mark.parametrize("seconds,text", [(0.123, "0.12 s"), (12.34, "12.3 s"), (245, "4 min 05 s"),
                                          (3599.6, "1 h 00 min"), (7620, "2 h 07 min"), (90000, "25 h 00 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_projection_is_the_first_tasks_time_times_the_tasks_left():
    now = dt.datetime(2026, 1, 1, 12, 0)
    line = projection(2.0, 10_000, 499, now=now)
    assert "first task trained in 2.0 s (5,000 network-steps/s)" in line
    assert "remaining 499 tasks will take about 16 min 38 s" in line  # 998 s
    assert "done around 2026-01-01 12:16" in line
    assert "remaining 1 bin will take about 1.5 s" in projection(1.5, 200, 1, unit="bins", now=now)


def test_run_line_has_status_score_tasks_time_speed_and_folder(tmp_path):
    info = {"status": "completed", "mean_accuracy": 0.83125, "tasks_completed": 500, "num_tasks": 500}
    line = run_line(info, tmp_path, wall_seconds=1500.0, network_steps=5_000_000, training_seconds=1250.0)
    assert line == (f"run completed: mean accuracy 83.12% over 500/500 tasks, wall time 25 min 00 s, "
                    f"4,000 network-steps/s; results in {tmp_path} (run.json, metrics.csv)")
    diverged = {"status": "diverged", "diverged_at_task": 3, "mean_error": 0.25, "tasks_completed": 4, "num_tasks": 50}
    line = run_line(diverged, tmp_path, 10.0, 800, 8.0, unit="bins")
    assert line.startswith("run diverged at bin 3: mean error 0.25 over 4/50 bins, wall time 10.0 s, 100 network-steps/s")
    finished = run_line(info, tmp_path)  # a folder that had finished before: nothing trained now
    assert "nothing trained now" in finished and "network-steps/s" not in finished


def _sweep(root: Path, runs) -> Path:
    for num, (method, learner, seed, acc, status) in enumerate(runs):
        write_run(root / str(num), {"seed": seed, "learner": {"name": learner}},
                  {"accuracy": np.full(4, acc)}, status=status, choices={"learner": learner, "method": method},
                  overrides=[f"method={method}", f"seed={seed}"])
    return root


def test_sweep_lines_count_statuses_name_the_best_condition_and_the_report_command(tmp_path):
    sweep = _sweep(tmp_path / "sweep dir", [
        ("cbp", "cbp", 0, 0.90, "completed"), ("cbp", "cbp", 1, 0.88, "completed"),
        ("cbp_layer_1", "cbp", 0, 0.92, "completed"), ("cbp_layer_1", "cbp", 1, 0.99, "diverged"),
        ("bp", "bp", 0, 0.95, "failed"), ("bp", "bp", 1, 0.70, "completed")])
    lines = sweep_lines(sweep)
    assert lines[0] == f"sweep finished: 6 runs in {sweep}: 4 completed, 1 diverged, 1 failed"
    # completed runs only: cbp_layer_1 92.00% (1 run) beats cbp 89.00% (2 runs) and bp 70.00%
    assert re.fullmatch(r"best condition \(highest mean accuracy over all tasks, mean of 1 completed run\(s\)\): "
                        r".*method=cbp_layer_1.*: 92\.00%", lines[1]), lines[1]
    assert lines[2] == f"report: python -m multirun_analysis report '{sweep}'"


def test_sweep_lines_without_runs_or_with_one_condition(tmp_path):
    assert sweep_lines(tmp_path) == [f"sweep finished: no run wrote a run.json under {tmp_path}"]
    sweep = _sweep(tmp_path / "s", [("bp", "bp", 0, 0.9, "completed"), ("bp", "bp", 1, 0.8, "completed")])
    assert [line.split(":")[0] for line in sweep_lines(sweep)] == ["sweep finished", "report"]
