"""Resume after preemption or a kill (DESIGN, "Runs are resumable").

Each member's folder holds ``checkpoint.pt`` while it runs: the member's whole state at the
start of a task (weights, optimiser and learner state, generator states, probe state, the
metrics rows so far), written atomically. Re-running the same command (same output
folders) finds it and continues from that task; the data of task t depends on (seed, t)
alone, so the resumed run ends with exactly the metrics of an uninterrupted one. The
state is cut per member (engine/state.py), so a member resumes in any population of the
same settings. The file is removed when the member completes or diverges.

What a folder holds decides what happens to its member:

- nothing (no run.json): a fresh start;
- run.json ``completed`` or ``diverged``: finished, left untouched, not trained again;
- run.json ``running`` / ``failed`` and a checkpoint: resumed from the checkpoint;
- run.json without a checkpoint and not finished: refused (nothing is overwritten).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .recording import atomic_write

CHECKPOINT = "checkpoint.pt"
FORMAT_VERSION = 1
FINISHED = ("completed", "diverged")


@dataclass
class Prior:
    """What a member's folder already holds: ``kind`` fresh | finished | resume."""

    kind: str
    info: dict | None = None
    state: dict | None = None


def inspect(out_dir: Path) -> Prior:
    """Classify a member's folder (see the module docstring); raises if it must not be touched."""
    run_json = Path(out_dir) / "run.json"
    if not run_json.exists():
        return Prior("fresh")
    info = json.loads(run_json.read_text())
    if info.get("status") in FINISHED:
        return Prior("finished", info)
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        raise FileExistsError(f"{run_json} exists (status {info.get('status')!r}) without a {CHECKPOINT} to resume "
                              f"from: refusing to overwrite an earlier run's results")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state.get('format_version')} is not {FORMAT_VERSION}")
    return Prior("resume", info, state)


def save(out_dir: Path, state: dict) -> None:
    """Write ``state`` to out_dir/checkpoint.pt atomically (temporary file, fsync, rename)."""
    atomic_write(Path(out_dir) / CHECKPOINT, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f),
                 binary=True)


def remove(out_dir: Path) -> None:
    (Path(out_dir) / CHECKPOINT).unlink(missing_ok=True)
