"""Fabricate run folders in the results format (for tests, demos and documentation).

``write_run`` writes exactly what a training run leaves behind (DESIGN.md, "Results
on disk"): ``run.json``, ``.hydra/config.yaml``, ``.hydra/hydra.yaml``,
``.hydra/overrides.yaml``, ``metrics.csv`` and optional ``arrays/<name>.npz`` —
with values the caller chooses, so analyses can be checked against hand-computed
numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml


def _metrics_csv(metrics, steps_per_task: int) -> str:
    """metrics: {name: per-task values} or {name: {layer: per-task values}}."""
    lines = ["task,step,metric,layer,value"]
    for name, values in metrics.items():
        per_layer = values if isinstance(values, dict) else {"": values}
        for layer, series in per_layer.items():
            for task, value in enumerate(np.asarray(series, dtype=float).tolist()):
                if value != value:  # NaN: task without a measurement
                    continue
                lines.append(f"{task},{(task + 1) * steps_per_task},{name},{layer},{value!r}")
    return "\n".join(lines) + "\n"


def write_run(
    path,
    config: dict,
    metrics: dict,
    *,
    status: str = "completed",
    choices: dict | None = None,
    overrides: list[str] | None = None,
    arrays: dict[str, dict[int, np.ndarray]] | None = None,
    steps_per_task: int = 10_000,
    member_index: int = 0,
    population_id: str = "pop-0",
    error: str | None = None,
    diverged_at_task: int | None = None,
) -> Path:
    """Write one run folder at ``path`` and return it.

    ``config`` is the nested composed config (must hold ``seed``); ``metrics`` maps a
    metric name to per-task values, or to {layer: per-task values}; ``arrays`` maps a
    name to {task: matrix}, saved as ``arrays/<name>.npz`` with keys ``task_<t>``.
    """
    path = Path(path)
    (path / ".hydra").mkdir(parents=True, exist_ok=True)
    choices = dict(choices or {})
    overrides = list(overrides or [])
    tasks_done = max((len(v) for values in metrics.values()
                      for v in (values.values() if isinstance(values, dict) else [values])), default=0)
    num_tasks = int(config.get("num_tasks", tasks_done))
    dump = lambda obj: yaml.safe_dump(obj, sort_keys=False)  # noqa: E731
    (path / ".hydra" / "config.yaml").write_text(dump(config))
    hydra_choices = {**choices, "hydra/launcher": "basic", "hydra/output": "default"}
    (path / ".hydra" / "hydra.yaml").write_text(
        dump({"hydra": {"runtime": {"choices": hydra_choices, "output_dir": str(path)},
                        "overrides": {"task": overrides}}})
    )
    (path / ".hydra" / "overrides.yaml").write_text(dump(overrides))
    info = {
        "format_version": 1,
        "status": status,
        "seed": config.get("seed"),
        "member_index": member_index,
        "population_id": population_id,
        "population_size": 1,
        "start_time": "2026-01-01T00:00:00",
        "end_time": None if status == "running" else "2026-01-01T01:00:00",
        "git_commit": None,
        "git_dirty": None,
        "versions": {"python": "3.11"},
        "device": "cpu",
        "choices": choices,
        "overrides": overrides,
        "num_tasks": num_tasks,
        "tasks_completed": tasks_done,
        "diverged_at_task": diverged_at_task,
        "error": error,
    }
    for metric, key in (("accuracy", "mean_accuracy"), ("error", "mean_error")):  # as the training side writes
        if isinstance(metrics.get(metric), (list, tuple, np.ndarray)) and status in ("completed", "diverged"):
            info[key] = float(np.nanmean(np.asarray(metrics[metric], dtype=float)))
    (path / "run.json").write_text(json.dumps(info, indent=1))
    (path / "metrics.csv").write_text(_metrics_csv(metrics, steps_per_task))
    for name, per_task in (arrays or {}).items():
        (path / "arrays").mkdir(exist_ok=True)
        np.savez(path / "arrays" / f"{name}.npz", **{f"task_{t}": np.asarray(a) for t, a in per_task.items()})
    return path
