"""Results on disk (DESIGN, "Results on disk"): run.json and metrics.csv, written atomically.

``run.json`` holds status (running / completed / failed / diverged), seed, member index,
population id, times, git commit, package versions, device and Hydra choices.
``metrics.csv`` is tidy long format ``task,step,metric,layer,value`` (layer empty for
network-level metrics). Both are replaced atomically (write a temporary file in the
same folder, fsync, ``os.replace``), so a reader or a crash never sees half a file, and
both are rewritten at every flush (metrics first), so run.json's ``tasks_completed`` is
never more than metrics.csv holds, and at most one flush behind it after a kill.

While a run trains, every run.json write (each flush and checkpoint) also says how far it is:
``tasks_completed``, ``last_accuracy`` / ``last_error`` (set by run.py), ``updated_time``,
``seconds_per_task`` (wall time per task in this process so far, probes and checkpoints
included) and ``eta_time``, when the run should end at that pace; and ``slurm_job_id`` when
it runs in a SLURM job (``python -m multirun_analysis status`` reads them). A recorder may
carry loggers (``attach``, plasticity_lab/loggers.py): each flush first hands them the rows
added since the last one, ``finish`` closes them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

from . import faults

FORMAT_VERSION = 1
METRICS_HEADER = ("task", "step", "metric", "layer", "value")
_UMASK = os.umask(0)
os.umask(_UMASK)
# the signals that stop a run: Ctrl-C, SLURM's SIGTERM, and SIGUSR2 (before preemption or a time limit)
HELD_DURING_WRITES = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR2}


def atomic_write(path: Path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it onto
    ``path``: readers and crashes see the old or the new file, never a mix. The one place
    every result file (run.json, metrics.csv, arrays/*.npz, checkpoint.pt) is written.

    The signals that stop a run (``HELD_DURING_WRITES``) are held until the file is in place, and
    their handlers run after it: a handler raises in whatever Python code is running (submitit's
    checkpoint-and-requeue on SIGUSR2 exits), and raised inside torch.save's writer it broke the
    write ("unexpected pos") and failed the job instead of requeueing it."""
    if threading.current_thread() is not threading.main_thread():  # (handlers run in the main thread only)
        return _write_and_replace(Path(path), write, binary)
    pending = []
    held = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in HELD_DURING_WRITES
            if signal.getsignal(s) is not None}  # (None: a handler not set from Python, left alone)
    try:
        _write_and_replace(Path(path), write, binary)
    finally:
        for s, handler in held.items():
            signal.signal(s, handler)
        for s in pending:
            signal.raise_signal(s)  # now its own handler runs


def _write_and_replace(path: Path, write, binary: bool) -> None:
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


def slurm_job_id() -> str | None:
    """The SLURM job this process runs in (an array task as ``<array job>_<index>``, as squeue
    shows it), or None outside SLURM."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID") or None


class RunRecorder:
    """One run's files: run.json (status and provenance) and metrics.csv (rows so far)."""

    def __init__(self, out_dir: Path, info: dict, flush_seconds: float = 10.0):
        self.out_dir = Path(out_dir)
        self.info = {"format_version": FORMAT_VERSION, "status": "running", **info}
        self.rows: list[tuple] = []
        self.flush_seconds = flush_seconds
        self._last_flush = 0.0
        self.sinks: list = []  # loggers (loggers.py), handed each flush's new rows
        self._forwarded = 0  # rows handed to the sinks so far
        self._pace: tuple[float, int] | None = None  # (monotonic time, tasks_completed) when this process began
        self._first: tuple[float, int] | None = None  # the same at its first write after a task

    def attach(self, sinks: list) -> None:
        """Hand every row added from now on to ``sinks`` (each has ``log_rows(rows)``,
        ``finish(status, info)`` and, if it buffers, ``flush()``, called before metrics.csv is
        written); the rows already here (a resumed run's) are theirs to handle."""
        self.sinks = list(sinks)
        self._forwarded = len(self.rows)

    @property
    def run_json(self) -> Path:
        return self.out_dir / "run.json"

    def start(self) -> None:
        """Write run.json (status running); refuse to overwrite another run's results."""
        if self.run_json.exists():
            raise FileExistsError(f"{self.run_json} exists: refusing to overwrite an earlier run's results")
        self.info.setdefault("start_time", now_iso())
        self.info["end_time"] = None
        self._begin()
        self._write_info()

    def resume(self) -> None:
        """Continue a run from its checkpoint: run.json back to running, resumes counted."""
        self.info.update(status="running", end_time=None, error=None, resumes=self.info.get("resumes", 0) + 1)
        self._begin()
        self._write_info()

    def _begin(self) -> None:
        self.info["slurm_job_id"] = slurm_job_id()
        self._pace, self._first = (time.monotonic(), self.info.get("tasks_completed") or 0), None

    def add(self, task: int, step: int, metric: str, value: float, layer: int | str = "") -> None:
        self.rows.append((task, step, metric, layer, value))

    def flush(self, force: bool = False) -> None:
        """Rewrite metrics.csv, then run.json (progress so far), atomically, at most every
        ``flush_seconds`` unless forced. The loggers get the new rows at every call."""
        if self._forwarded < len(self.rows):
            new, self._forwarded = self.rows[self._forwarded:], len(self.rows)
            for sink in self.sinks:
                sink.log_rows(new)
        if not force and time.monotonic() - self._last_flush < self.flush_seconds:
            return
        for sink in self.sinks:  # loggers that buffer (TensorBoard) are never behind metrics.csv
            if hasattr(sink, "flush"):
                sink.flush()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(METRICS_HEADER)
        writer.writerows((t, s, m, l, repr(float(v))) for t, s, m, l, v in self.rows)
        atomic_write_text(self.out_dir / "metrics.csv", buf.getvalue())
        faults.point("flush")
        self._write_info()
        self._last_flush = time.monotonic()

    def finish(self, status: str, **fields) -> None:
        self.info.update(status=status, end_time=now_iso(), eta_time=None, **fields)
        self.flush(force=True)
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.finish(status, self.info)

    def _write_info(self) -> None:
        now = time.monotonic()
        self.info["updated_time"] = now_iso()
        done = self.info.get("tasks_completed") or 0
        if self._pace is not None and done > self._pace[1]:
            # from the first write after a task of this process, so start-up (data, compiling) is left out
            first = self._first = self._first or (now, done)
            since = first if done > first[1] else self._pace
            per_task = (now - since[0]) / (done - since[1])
            self.info["seconds_per_task"] = round(per_task, 3)
            if self.info.get("status") == "running":
                left = max(0, (self.info.get("num_tasks") or done) - done)
                eta = datetime.now(timezone.utc) + timedelta(seconds=per_task * left)
                self.info["eta_time"] = eta.isoformat(timespec="seconds")
        atomic_write_text(self.run_json, json.dumps(self.info, indent=2, default=str) + "\n")
