"""``python -m multirun_analysis status <sweep>``: where every run of a sweep stands, while it runs.

One line per run folder (a folder holding run.json, at any depth), then one summary line::

    0   running    12/500 tasks  ETA 14 min 05 s (16:35)  acc 85.21%  slurm 1234_0 RUNNING  process 4242 on node7
    3   stale      40/500 tasks                            acc 80.02%  no process holds run.lock: killed or stopped; ...

What each part comes from:

- the state: run.json's ``status`` (completed / failed with its error / diverged at its task),
  and for a ``running`` run.json whether a live process holds the folder's ``run.lock``
  (``fcntl.flock``, probed with a shared lock taken and dropped at once; the trainer waits that
  moment out): held = ``running``; free = ``stale`` (killed or stopped without a word: re-run
  the same command to resume it), or ``waiting`` when its SLURM job is pending again (a requeue),
  or ``starting`` when its SLURM job runs but has not taken the lock yet;
- tasks done / total, the last task's accuracy (regression: error) and the ETA: run.json, which
  a training run rewrites at every flush and checkpoint (``tasks_completed``, ``last_accuracy``
  / ``last_error``, ``eta_time``: plasticity_lab/recording.py);
- SLURM: the job id a run recorded (``slurm_job_id``) and its state from ``sacct``, or, where
  the cluster keeps no accounting (sacct fails), from ``squeue`` and then ``scontrol`` (which
  knows a finished job for ``MinJobAge``, 5 minutes by default); jobs submitted into the sweep's
  submitit folder (``<sweep>/.submitit/<job id>``, the launchers' default) that no run names yet
  get a line of their own (``pending``: a submitted job that has not started its runs; while
  it waits, the sweep's runs have no folders yet).

Never imports torch; reads only (a lock probe aside, nothing is written).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .loading import NoRunsError, find_run_dirs

LOCK_FILE = "run.lock"  # plasticity_lab/run_folder.py
SUBMITIT_DIR = ".submitit"
#: SLURM states of a job that waits to (re)start.
SLURM_WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED")
STATE_ORDER = ("running", "starting", "waiting", "pending", "stale", "failed", "diverged", "completed", "unreadable")


@dataclass
class RunLine:
    """What the status says about one run folder (or one SLURM job without a run yet)."""

    name: str
    state: str
    done: int | None = None
    total: int | None = None
    eta: _dt.datetime | None = None
    last: str = ""
    slurm_id: str | None = None
    slurm_state: str | None = None
    note: str = ""


@dataclass
class SweepStatus:
    lines: list[RunLine] = field(default_factory=list)
    slurm_source: str | None = None  # which command answered (sacct, squeue/scontrol), or why none did


def lock_holder(folder: Path) -> tuple[bool | None, dict]:
    """(whether a live process holds ``folder/run.lock``, what the lock file says of its holder);
    None when there is no lock file or it cannot be probed."""
    import fcntl

    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None, {}
    try:
        try:
            holder = json.loads(os.read(fd, 4096).decode() or "{}")
        except ValueError:
            holder = {}
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, holder if isinstance(holder, dict) else {}
        except OSError:
            return None, {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, {}
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- SLURM
def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None


def slurm_states(job_ids: list[str]) -> tuple[dict[str, str], str | None]:
    """{job id: SLURM state} and which commands answered: ``sacct`` where the cluster keeps
    accounting, else ``squeue`` (one line per array task) and ``scontrol`` for the jobs squeue no
    longer lists. (states, None) when no SLURM command is installed here."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}, None
    out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)])
    if out is not None and out.returncode == 0:
        states = {}
        for line in out.stdout.splitlines():
            job, _, state = line.partition("|")
            if job.strip() in ids and state.strip():
                states[job.strip()] = state.split()[0]
        missing = [i for i in ids if i not in states]
        source = "sacct"
    else:
        queue = _run(["squeue", "-h", "-r", "-o", "%i %T"])
        if queue is None and out is None:
            return {}, None
        states = {}
        if queue is not None and queue.returncode == 0:
            for line in queue.stdout.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] in ids:
                    states[parts[0]] = parts[1]
        missing = [i for i in ids if i not in states]
        source = "squeue and scontrol; sacct: no accounting here" if out is not None else "squeue and scontrol"
    for job in missing:
        shown = _run(["scontrol", "show", "job", "-o", job])
        if shown is not None and shown.returncode == 0:
            state = next((f.split("=", 1)[1] for f in shown.stdout.split() if f.startswith("JobState=")), None)
            if state:
                states[job] = state
    return states, source


def submitted_jobs(sweep: Path) -> list[str]:
    """Job ids of the SLURM jobs submitit put into ``<sweep>/.submitit`` (one folder per job)."""
    folder = Path(sweep) / SUBMITIT_DIR
    if not folder.is_dir():
        return []
    names = {d.name for d in folder.iterdir() if d.is_dir() and d.name.split("_")[0].isdigit()}
    arrays = {n.split("_")[0] for n in names if "_" in n}  # <id>/ holds an array's script, <id>_<k>/ its tasks
    return sorted(n for n in names if n not in arrays)


# ---------------------------------------------------------------------- runs
def _time(text) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _first_line(text) -> str:
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no error recorded"


def run_line(folder: Path, name: str) -> RunLine:
    """One run folder's line, SLURM state not yet filled in."""
    try:
        info = json.loads((folder / "run.json").read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        return RunLine(name, "unreadable", note=f"run.json unreadable: {err}")
    line = RunLine(name, str(info.get("status", "unknown")), info.get("tasks_completed"), info.get("num_tasks"),
                   slurm_id=info.get("slurm_job_id"))
    if info.get("last_error") is not None:
        line.last = f"error {info['last_error']:.4g}"
    elif info.get("last_accuracy") is not None:
        line.last = f"acc {100 * info['last_accuracy']:.2f}%"
    if line.state == "failed":
        line.note = f"failed: {_first_line(info.get('error'))}"
    elif line.state == "diverged":
        line.note = f"diverged at task {info.get('diverged_at_task')}"
    elif line.state == "running":
        held, holder = lock_holder(folder)
        if held:
            line.eta = _time(info.get("eta_time")) if info.get("eta_time") else None
            if holder.get("pid"):
                line.note = f"process {holder['pid']} on {holder.get('host', '?')}"
        else:
            line.state = "stale"
            line.note = ("no process holds run.lock: killed or stopped (re-run the same command to resume it)"
                         if held is False else "no run.lock: the run never took its folder, or the lock file was removed")
    return line


def sweep_status(*paths, slurm: bool = True) -> SweepStatus:
    """The status of every run under ``paths`` (and, with ``slurm``, of the SLURM jobs they and the
    sweeps' submitit folders name)."""
    status = SweepStatus()
    try:
        dirs = find_run_dirs(*paths)
    except NoRunsError:
        dirs = []
        if not any(submitted_jobs(Path(p)) for p in paths):
            raise
    roots = [Path(p).resolve() for p in paths]
    for d in dirs:
        here = d.resolve()
        root = next((r for r in roots if r in here.parents), None)  # named by its path below the sweep given
        status.lines.append(run_line(d, os.path.relpath(here, root) if root else d.name))
    if slurm:
        named = {line.slurm_id for line in status.lines if line.slurm_id}
        waiting = [j for p in paths for j in submitted_jobs(Path(p)) if j not in named]
        states, status.slurm_source = slurm_states(sorted(named | set(waiting)))
        for line in status.lines:
            if line.slurm_id:
                line.slurm_state = states.get(line.slurm_id, "unknown to SLURM" if status.slurm_source else None)
                if line.state == "stale" and line.slurm_state in SLURM_WAITING:
                    line.state, line.note = "waiting", f"its SLURM job is {line.slurm_state} (requeued): it resumes when it starts"
                elif line.state == "stale" and line.slurm_state == "RUNNING":
                    line.state, line.note = "starting", "its SLURM job runs and has not taken run.lock yet"
        for job in waiting:
            state = states.get(job)
            if state is None or state in SLURM_WAITING or state == "RUNNING":
                status.lines.append(RunLine("(no run yet)", "pending", slurm_id=job, slurm_state=state,
                                            note="a submitted job that has not started its runs"))
    return status


# ---------------------------------------------------------------------- text
def _eta_text(eta: _dt.datetime | None, now: _dt.datetime) -> str:
    from plasticity_lab.summary import format_duration  # torch-free: the one wording of a duration

    if eta is None:
        return ""
    local = eta.astimezone()
    clock = local.strftime("%H:%M") if local.date() == now.astimezone().date() else local.strftime("%Y-%m-%d %H:%M")
    return f"ETA {format_duration(max(0.0, (eta - now).total_seconds()))} ({clock})"


def render(status: SweepStatus, now: _dt.datetime | None = None) -> list[str]:
    """The lines ``status`` prints: one per run, then the summary."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    lines = sorted(status.lines, key=lambda line: _natural(line.name))
    width = max([len(line.name) for line in lines] + [4])
    out = []
    for line in lines:
        tasks = f"{line.done}/{line.total} tasks" if line.total is not None else ""
        slurm = f"slurm {line.slurm_id} {line.slurm_state or '(state unknown: no SLURM commands here)'}" \
            if line.slurm_id else ""
        parts = [line.name.ljust(width), line.state.ljust(10), tasks.ljust(17), _eta_text(line.eta, now).ljust(26),
                 line.last.ljust(12), slurm, line.note]
        out.append("  ".join(p for p in parts).rstrip())
    out.append(summary_line(status, now))
    return out


def summary_line(status: SweepStatus, now: _dt.datetime) -> str:
    runs = [line for line in status.lines if line.state != "pending"]
    counts: dict[str, int] = {}
    for line in status.lines:
        counts[line.state] = counts.get(line.state, 0) + 1
    states = ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: (
        STATE_ORDER.index(s) if s in STATE_ORDER else len(STATE_ORDER), s)))
    text = f"{len(runs)} run(s): {states or 'none'}"
    known = [line for line in runs if line.total]
    if known:
        done, total = sum(line.done or 0 for line in known), sum(line.total for line in known)
        text += f"; tasks {done:,}/{total:,} ({100 * done / total:.0f}%)"
    etas = [line.eta for line in runs if line.eta is not None and line.state == "running"]
    if etas:
        text += f"; last to finish: {_eta_text(max(etas), now)}"
    if status.slurm_source:
        jobs: dict[str, str] = {}
        for line in status.lines:
            if line.slurm_id and line.slurm_state:
                jobs[line.slurm_id] = line.slurm_state
        by_state: dict[str, int] = {}
        for state in jobs.values():
            by_state[state] = by_state.get(state, 0) + 1
        text += f"; SLURM jobs (from {status.slurm_source}): " + (", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
                                                        or "no job known")
    return text


def _natural(name: str):
    """Sort key: folder 2 before folder 10, SLURM jobs without a run last."""
    return (name.startswith("("), [(0, int(p), "") if p.isdigit() else (1, 0, p)
                                           for p in name.replace("/", " / ").split()])
