"""A run folder: who may write it, the settings it records, and what a new start does with it
(DESIGN, "Results on disk" and "Runs are resumable").

**One writer.** A process trains a member only while it holds ``run.lock`` in the member's
folder (``fcntl.flock``, exclusive, taken without blocking; a lock held by someone else is
tried again for ``LOCK_PATIENCE_S``, so a status check that probes it never stops a start). The kernel releases it when the
process ends, however it ends, so a killed run never locks its folder for good. The lock
file names its holder (pid, host, start time) for the refusal message of anyone else.

**Recorded settings never change.** ``.hydra/config.yaml`` (the composed config, as Hydra
writes it), ``.hydra/hydra.yaml`` and ``.hydra/overrides.yaml`` are written by the project
(``hydra.output_subdir: null`` stops Hydra from writing them), atomically, once, when a
folder starts fresh, after the lock is taken. A later start into the folder compares its
composed config (resolved, minus ``RESUME_MAY_CHANGE``) with the recorded one and refuses
before writing anything if they differ, naming every differing key with both values.

**What a folder holds decides what happens** (``inspect``; the caller holds the lock):

- nothing of a run (no run.json, checkpoint.pt or metrics.csv): a fresh start;
- a run with nothing worth protecting (not finished, no task completed): it starts over;
- a finished run (``completed`` / ``diverged``) with the same settings: left untouched;
- an unfinished run with completed tasks, the same settings and a checkpoint: resumed;
- anything else (other settings, completed tasks but no checkpoint, a damaged file, a
  checkpoint or metrics without run.json): refused, saying what to do.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import checkpoint
from .recording import atomic_write_text, now_iso

LOCK_FILE = "run.lock"
RUN_JSON = "run.json"
METRICS = "metrics.csv"
RECORD_DIR = ".hydra"
RECORD_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
FINISHED = ("completed", "diverged")
#: Keys that may differ when a run is resumed or matched: they change how it runs or where it
#: reads data from, never what it computes; ``tuned`` is read only through the interpolations of
#: the ``method`` group into ``learner.*`` and ``optimizer.*``, which are compared resolved (so a
#: method added to train.yaml's ``tuned`` leaves earlier runs resumable). Everything else must
#: equal the recorded value.
RESUME_MAY_CHANGE = ("progress_bar", "metrics_flush_seconds", "checkpoint_seconds", "num_threads", "device",
                     "dataset.root", "dataset.download", "logger", "optimized_metric", "tuned")
_MISSING = "(absent)"
#: How long a start waits for a lock held by someone else before it refuses: long enough for a
#: status check's probe of the lock (multirun_analysis/status.py), far shorter than any training.
LOCK_PATIENCE_S = 1.0


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked; the message says why and what to do."""


# --------------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/run.lock``, held until ``release``."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.out_dir.mkdir(parents=True, exist_ok=True)
        patience = time.monotonic() + LOCK_PATIENCE_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < patience:  # a look that holds it for a moment (multirun_analysis status)
                    time.sleep(0.05)
                    continue
                raise RunFolderError(f"{self.out_dir} is being trained by {self.holder()}; wait for it to "
                                     f"finish, or stop that process (a stopped or killed process releases "
                                     f"the folder by itself)") from None
            except OSError as err:
                os.close(fd)
                raise RunFolderError(f"{self.path}: cannot lock it ({err}); the file system must support "
                                     f"locks (on NFS: NFSv4, or lockd for NFSv3) so that no two processes "
                                     f"train one folder") from None
            try:  # the file we locked must still be the one at the path (remove_if_unused unlinks it)
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def holder(self) -> str:
        """Who holds the lock, as its file says."""
        try:
            h = json.loads(self.path.read_text())
            return f"process {h['pid']} on {h['host']} (since {h['since']}; {self.path})"
        except (OSError, ValueError, KeyError, TypeError):
            return f"another process ({self.path})"

    def release(self, unlink: bool = False) -> None:
        if self._fd is None:
            return
        if unlink:  # while still holding it: nobody else can be using this file
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


class RunLocks:
    """Locks on several run folders (a population's), all or none; a context manager."""

    def __init__(self, out_dirs):
        self.locks = [RunLock(d) for d in out_dirs]

    def __enter__(self) -> "RunLocks":
        taken = []
        try:
            for lock in self.locks:
                taken.append(lock.acquire())
        except BaseException:
            for lock in taken:
                remove_if_unused(lock.out_dir, lock)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for lock in self.locks:
            lock.release()

    def remove_unused(self) -> None:
        """Remove the folders that hold nothing but their lock (refused before anything was written)."""
        for lock in self.locks:
            remove_if_unused(lock.out_dir, lock)


def remove_if_unused(out_dir: Path, lock: RunLock | None = None) -> None:
    """Remove ``out_dir`` if it holds nothing (or only ``lock``'s file, which this process holds):
    a refused start leaves no new folder behind."""
    out_dir = Path(out_dir)
    try:
        names = set(os.listdir(out_dir))
    except FileNotFoundError:
        return
    if lock is not None and lock._fd is not None and names == {LOCK_FILE}:
        lock.release(unlink=True)
        names = set()
    if not names:
        try:
            out_dir.rmdir()
        except OSError:
            pass  # something arrived meanwhile: keep it


# --------------------------------------------------------------------------- recorded settings
def flatten(tree, prefix: str = "") -> dict:
    """Nested dict -> {dotted.key: value} (lists kept as lists)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def comparable(tree: dict) -> dict:
    """A (nested) config or settings record, flattened, without the keys that may change."""
    return {k: v for k, v in flatten(tree).items()
            if not any(k == key or k.startswith(key + ".") for key in RESUME_MAY_CHANGE)}


def config_record(cfg: DictConfig) -> dict:
    """The comparable form of a composed task config (interpolations resolved)."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation only the training process can resolve
        tree = OmegaConf.to_container(cfg, resolve=False)
    return comparable(tree)


def recorded_config(out_dir: Path) -> dict | None:
    """The comparable form of ``<out_dir>/.hydra/config.yaml``, or None if there is none."""
    path = Path(out_dir) / RECORD_DIR / "config.yaml"
    if not path.exists():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - yaml and OmegaConf errors alike
        raise RunFolderError(f"{path} is unreadable ({type(err).__name__}: {err}); it records this run's "
                             f"settings: restore it (e.g. copy the folder again)") from None
    if not isinstance(cfg, DictConfig):
        raise RunFolderError(f"{path} does not hold a config mapping; restore it (e.g. copy the folder again)")
    return config_record(cfg)


def differences(recorded: dict, now: dict) -> list[str]:
    """``key: recorded X, now Y`` for every key whose value differs (absent keys included)."""
    out = []
    for key in sorted(set(recorded) | set(now)):
        before, after = recorded.get(key, _MISSING), now.get(key, _MISSING)
        if before != after:
            out.append(f"{key}: recorded {_show(before)}, now {_show(after)}")
    return out


def _show(value) -> str:
    return value if value is _MISSING else json.dumps(value, default=str)


def write_record(out_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig | None, overrides: list) -> None:
    """The run's recorded settings, once, at its fresh start: .hydra/config.yaml (+ hydra.yaml,
    overrides.yaml), each atomically. Hydra's own writing is off (``hydra.output_subdir: null``)."""
    record = Path(out_dir) / RECORD_DIR
    atomic_write_text(record / "config.yaml", OmegaConf.to_yaml(cfg))
    if hydra_cfg is not None:
        atomic_write_text(record / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    atomic_write_text(record / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))


# --------------------------------------------------------------------------- what a folder holds
@dataclass
class Prior:
    """What a member's folder holds: ``kind`` fresh | finished | resume. ``start_over`` says why
    an earlier, unprotected attempt is discarded (fresh only)."""

    kind: str
    info: dict | None = None
    state: dict | None = None
    start_over: str | None = None

    @property
    def start_task(self) -> int:
        return self.state["next_task"] if self.kind == "resume" else 0


def inspect(out_dir: Path, record: dict, settings_record: dict) -> Prior:
    """Classify a member's folder for a start with config ``record`` (``config_record``) and
    parsed settings ``settings_record``; raises RunFolderError where it must not be touched.
    The caller holds the folder's lock."""
    out_dir = Path(out_dir)
    run_json, ckpt = out_dir / RUN_JSON, out_dir / checkpoint.CHECKPOINT
    if not run_json.exists():
        leftovers = [p.name for p in (ckpt, out_dir / METRICS) if p.exists()]
        if leftovers:
            raise RunFolderError(f"{out_dir} holds {' and '.join(leftovers)} but no {RUN_JSON} (a partial copy?): "
                                 f"copy the folder again, or move it away to start this run afresh")
        return Prior("fresh")
    info = _read_run_json(run_json)
    recorded = recorded_config(out_dir)
    done = int(info.get("tasks_completed") or 0)
    if info.get("status") not in FINISHED and done == 0 and not _checkpoint_has_progress(ckpt):
        return Prior("fresh", start_over=f"{out_dir} held an attempt with no completed task (status "
                                         f"{info.get('status')!r}): starting it over")
    if recorded is None:
        raise RunFolderError(f"{out_dir} holds a run but not its recorded settings ({RECORD_DIR}/config.yaml), "
                             "so it cannot be matched to this config: restore that file, or use a new folder")
    changed = differences(recorded, record)
    if changed:
        finished = info.get("status") in FINISHED
        raise RunFolderError(f"{out_dir} holds a {'finished' if finished else 'started'} run with other settings ("
                             + "; ".join(changed) + "); it is left as it is. Use a new output folder for these "
                             "settings" + ("" if finished else ", or the recorded ones to resume it"))
    if info.get("status") in FINISHED:
        return Prior("finished", info)
    if not ckpt.exists():
        raise RunFolderError(f"{out_dir} holds a run stopped after {done} task(s) (status {info.get('status')!r}) "
                             f"without the {checkpoint.CHECKPOINT} to resume from; its results are kept. To train "
                             f"it again from the start, move the folder away (or delete it) and re-run")
    state = checkpoint.load(ckpt)
    changed = differences(comparable(state["settings"]), settings_record)
    if changed:
        raise RunFolderError(f"{ckpt} was written under other settings (" + "; ".join(changed) + "): cannot "
                             "resume; use a new output folder for these settings")
    return Prior("resume", info, state)


def _read_run_json(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        return info
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path} is unreadable ({err}): restore it (e.g. copy the folder again), or move "
                             f"the folder away to start this run afresh") from None


def _checkpoint_has_progress(path: Path) -> bool:
    """A checkpoint past the first task (run.json may lag it in folders of older versions)."""
    return path.exists() and checkpoint.load(path)["next_task"] > 0


def start_over(out_dir: Path) -> None:
    """Discard an unprotected earlier attempt (``Prior.start_over``): its run.json, metrics,
    checkpoint, arrays and recorded settings. The caller holds the lock."""
    out_dir = Path(out_dir)
    for name in (RUN_JSON, METRICS, checkpoint.CHECKPOINT, *(f"{RECORD_DIR}/{f}" for f in RECORD_FILES)):
        (out_dir / name).unlink(missing_ok=True)
    arrays = out_dir / "arrays"
    if arrays.is_dir():
        for p in arrays.iterdir():
            p.unlink()
        arrays.rmdir()


def remove_temporaries(out_dir: Path) -> None:
    """Temporary files of atomic writes a killed process left behind (``.<name>.<random>.tmp``);
    the caller holds the lock, so no write is in progress."""
    out_dir = Path(out_dir)
    for folder in (out_dir, out_dir / RECORD_DIR, out_dir / "arrays"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                p.unlink(missing_ok=True)
