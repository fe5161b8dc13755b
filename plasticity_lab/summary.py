"""What a run and a sweep say when they end, and what a run says after its first task.

The one place these lines are worded:

- ``projection``: after the first task of a single run, its training speed and the projected
  training time of the remaining tasks (computed from that task, never a hard-coded figure);
- ``run_line``: the last line of a single run: status, mean accuracy (regression: mean error),
  tasks, wall time, network-steps/s and the folder holding run.json / metrics.csv;
- ``sweep_lines``: the end of a sweep (every launcher): runs by status, the best condition by
  run.json's mean over all tasks (mean over seeds; conditions as ``multirun_analysis`` defines
  them), and the command that writes its report.

A network-step is one SGD step of one network on one batch (``make bench``'s unit).
"""

from __future__ import annotations

import datetime as _dt
import shlex
from pathlib import Path

STATUS_ORDER = ("completed", "diverged", "failed", "running")


def format_duration(seconds: float) -> str:
    """``0.84 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 07 min``."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _rate(network_steps: int, seconds: float) -> str:
    return f"{network_steps / seconds:,.0f} network-steps/s" if seconds > 0 else "n/a network-steps/s"


def _score(info: dict) -> str:
    if info.get("mean_error") is not None:
        return f"mean error {info['mean_error']:.4g}"
    if info.get("mean_accuracy") is not None:
        return f"mean accuracy {100 * info['mean_accuracy']:.2f}%"
    return "no task finished"


def projection(seconds: float, network_steps: int, tasks_left: int, unit: str = "tasks",
               now: _dt.datetime | None = None) -> str:
    """The first task's speed and the projected training time of the ``tasks_left`` remaining
    tasks at that speed (probes and checkpoints come on top)."""
    rest = seconds * tasks_left
    done = (now or _dt.datetime.now()) + _dt.timedelta(seconds=rest)
    return (f"first {unit[:-1]} trained in {format_duration(seconds)} ({_rate(network_steps, seconds)}): "
            f"the remaining {tasks_left} {unit if tasks_left != 1 else unit[:-1]} will take about "
            f"{format_duration(rest)} of training (done around {done:%Y-%m-%d %H:%M})")


def run_line(info: dict, out_dir: Path, wall_seconds: float | None = None, network_steps: int = 0,
             training_seconds: float = 0.0, unit: str = "tasks") -> str:
    """One line for a finished run (``info`` = its run.json). ``wall_seconds`` None: nothing
    was trained in this process (the run had finished before)."""
    status = info.get("status", "unknown")
    if status == "diverged":
        status = f"diverged at {unit[:-1]} {info.get('diverged_at_task')}"
    tasks = f"{info.get('tasks_completed')}/{info.get('num_tasks')} {unit}"
    timing = ("nothing trained now" if wall_seconds is None else
              f"wall time {format_duration(wall_seconds)}, {_rate(network_steps, training_seconds)}")
    return f"run {status}: {_score(info)} over {tasks}, {timing}; results in {out_dir} (run.json, metrics.csv)"


def sweep_lines(sweep_dir: Path) -> list[str]:
    """The end of a sweep: its runs by status, the best condition, the report command."""
    from multirun_analysis.loading import NoRunsError, find_run_dirs, read_run

    sweep_dir = Path(sweep_dir)
    report = f"report: python -m multirun_analysis report {shlex.quote(str(sweep_dir))}"
    try:
        records = [read_run(d, run_id=str(d.relative_to(sweep_dir))) for d in find_run_dirs(sweep_dir)]
    except NoRunsError:
        return [f"sweep finished: no run wrote a run.json under {sweep_dir}"]
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = sorted(counts, key=lambda s: (STATUS_ORDER.index(s) if s in STATUS_ORDER else len(STATUS_ORDER), s))
    lines = [f"sweep finished: {len(records)} runs in {sweep_dir}: "
             + ", ".join(f"{counts[s]} {s}" for s in order)]
    best = _best_condition([r for r in records if not r.problem])
    if best:
        lines.append(best)
    return lines + [report]


def _best_condition(records) -> str | None:
    """The best condition by run.json's mean over all tasks (accuracy: highest, error: lowest),
    averaged over its completed runs; None with fewer than two conditions."""
    from multirun_analysis.loading import run_table

    if not records:
        return None
    table, _ = run_table(records)
    key = "mean_error" if any(r.info.get("mean_error") is not None for r in records) else "mean_accuracy"
    table["score"] = [r.info.get(key) if r.status == "completed" else None for r in records]
    scores = table.dropna(subset=["score"]).groupby("condition")["score"].agg(["mean", "size"])
    if table["condition"].nunique() < 2 or scores.empty:
        return None
    label = scores["mean"].idxmin() if key == "mean_error" else scores["mean"].idxmax()
    mean, n = scores.loc[label, "mean"], int(scores.loc[label, "size"])
    value = f"{mean:.4g}" if key == "mean_error" else f"{100 * mean:.2f}%"
    what = "lowest mean error" if key == "mean_error" else "highest mean accuracy"
    return f"best condition ({what} over all tasks, mean of {n} completed run(s)): {label}: {value}"
