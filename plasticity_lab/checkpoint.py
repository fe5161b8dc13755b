"""Resume after preemption or a kill (DESIGN, "Runs are resumable").

Each member's folder holds ``checkpoint.pt`` while it runs: the member's whole state at the
start of a task (weights, optimiser and learner state, generator states, probe state, the
metrics rows so far), written atomically. Re-running the same command (same output
folders) finds it and continues from that task; the data of task t depends on (seed, t)
alone, so the resumed run ends with exactly the metrics of an uninterrupted one. The
state is cut per member (engine/state.py), so a member resumes in any population of the
same settings: a population whose members' checkpoints are at different tasks (killed
during a checkpoint round) resumes as one population per task (run.py). The file is
removed when the member completes or diverges. Which folder state leads to what:
run_folder.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .recording import atomic_write

CHECKPOINT = "checkpoint.pt"
FORMAT_VERSION = 1


def save(out_dir: Path, state: dict) -> None:
    """Write ``state`` to out_dir/checkpoint.pt atomically (temporary file, fsync, rename)."""
    atomic_write(Path(out_dir) / CHECKPOINT, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f),
                 binary=True)


def load(path: Path) -> dict:
    """The state in ``path``; a damaged or foreign file is an error naming it and what to do."""
    from .run_folder import RunFolderError

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise RunFolderError(f"{path} is damaged and cannot be read ({type(err).__name__}: {err}); checkpoints "
                             f"are written atomically, so this is usually an incomplete copy: copy it again, or "
                             f"move the run's folder away to train it afresh") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise RunFolderError(f"{path}: checkpoint format {version} is not {FORMAT_VERSION} (written by another "
                             f"version of plasticity_lab): resume it with that version, or use a new folder")
    return state


def remove(out_dir: Path) -> None:
    (Path(out_dir) / CHECKPOINT).unlink(missing_ok=True)
