"""Results on disk (DESIGN, "Results on disk"): run.json and metrics.csv, written atomically.

``run.json`` holds status (running / completed / failed / diverged), seed, member index,
population id, times, git commit, package versions, device and Hydra choices.
``metrics.csv`` is tidy long format ``task,step,metric,layer,value`` (layer empty for
network-level metrics). Both are replaced atomically (write a temporary file in the
same folder, fsync, ``os.replace``), so a reader or a crash never sees half a file, and
both are rewritten at every flush (metrics first), so run.json's ``tasks_completed`` is
never more than metrics.csv holds, and at most one flush behind it after a kill.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import faults

FORMAT_VERSION = 1
METRICS_HEADER = ("task", "step", "metric", "layer", "value")
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it onto
    ``path``: readers and crashes see the old or the new file, never a mix. The one place
    every result file (run.json, metrics.csv, arrays/*.npz, checkpoint.pt) is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        faults.point("atomic_write")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_state(start: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding this package, or (None, None)."""
    where = Path(start or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("plasticity_lab", "torch", "numpy", "hydra-core", "omegaconf", "submitit"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class RunRecorder:
    """One run's files: run.json (status and provenance) and metrics.csv (rows so far)."""

    def __init__(self, out_dir: Path, info: dict, flush_seconds: float = 10.0):
        self.out_dir = Path(out_dir)
        self.info = {"format_version": FORMAT_VERSION, "status": "running", **info}
        self.rows: list[tuple] = []
        self.flush_seconds = flush_seconds
        self._last_flush = 0.0

    @property
    def run_json(self) -> Path:
        return self.out_dir / "run.json"

    def start(self) -> None:
        """Write run.json (status running); refuse to overwrite another run's results."""
        if self.run_json.exists():
            raise FileExistsError(f"{self.run_json} exists: refusing to overwrite an earlier run's results")
        self.info.setdefault("start_time", now_iso())
        self.info["end_time"] = None
        self._write_info()

    def resume(self) -> None:
        """Continue a run from its checkpoint: run.json back to running, resumes counted."""
        self.info.update(status="running", end_time=None, error=None, resumes=self.info.get("resumes", 0) + 1)
        self._write_info()

    def add(self, task: int, step: int, metric: str, value: float, layer: int | str = "") -> None:
        self.rows.append((task, step, metric, layer, value))

    def flush(self, force: bool = False) -> None:
        """Rewrite metrics.csv, then run.json (progress so far), atomically, at most every
        ``flush_seconds`` unless forced."""
        if not force and time.monotonic() - self._last_flush < self.flush_seconds:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(METRICS_HEADER)
        writer.writerows((t, s, m, l, repr(float(v))) for t, s, m, l, v in self.rows)
        atomic_write_text(self.out_dir / "metrics.csv", buf.getvalue())
        faults.point("flush")
        self._write_info()
        self._last_flush = time.monotonic()

    def finish(self, status: str, **fields) -> None:
        self.info.update(status=status, end_time=now_iso(), **fields)
        self.flush(force=True)

    def _write_info(self) -> None:
        atomic_write_text(self.run_json, json.dumps(self.info, indent=2, default=str) + "\n")
