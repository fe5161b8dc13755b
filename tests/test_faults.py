"""Fault injection (issue 10): kill runs at seeded instants, re-run the documented command, and
demand the metrics of an uninterrupted run, byte for byte.

Kills come from ``PLASTICITY_LAB_FAULT`` (plasticity_lab/faults.py: SIGKILL at the n-th pass of
a kill point inside atomic writes, between a flush's two files, inside a population's
checkpoint round, mid-task) and from SIGKILL at seeded wall-clock instants. Kills are chained
(run, kill, re-run, kill, ...), so each kill costs one process start; a chain ends when a
start is not killed (its kill point lies beyond what was left to do), and then the documented
command finishes the run and the metrics are compared. Scenarios: a single ``train.py`` run;
a population of 3 through ``hydra/launcher=population`` (wall-clock kills hit the launcher,
whose worker must die with it); a ``population_slurm`` job on a real SLURM cluster.

Each scenario prints one ``FAULTS`` line (kills, chains, identical results); the README's
"What survives what" table quotes them (``pytest -s -k faults``).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT
from plasticity_lab.faults import ENV, POINTS

pytestmark = [pytest.mark.slow, pytest.mark.data]

TASKS = 6
RUN = ("probes=minimal", "progress_bar=false", f"num_tasks={TASKS}", "dataset.images_per_task=500",
       "checkpoint_seconds=0", "metrics_flush_seconds=0")
SWEEP = (*RUN, "seed=0,1,2")
CHAIN = 7  # kills per chain before the final, checked run
KILLS = 20  # kills per scenario


@dataclass
class Tally:
    name: str
    kills: dict = field(default_factory=dict)  # where -> count
    not_reached: int = 0
    chains: int = 0
    identical: int = 0

    def kill(self, where: str) -> None:
        self.kills[where] = self.kills.get(where, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.kills.values())

    def report(self) -> str:
        where = ", ".join(f"{n} {w}" for w, n in sorted(self.kills.items()))
        return (f"FAULTS {self.name}: {self.total} kills ({where}); {self.chains} chains finished by the same "
                f"command, {self.identical} of {self.chains} with metrics.csv byte-identical to an uninterrupted "
                f"run; {self.not_reached} seeded kill(s) came after the run had finished")


def _env(mnist_root, fault=None):
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    env.pop(ENV, None)
    if fault:
        env[ENV] = fault
    return env


def _command(*args, multirun=False):
    return [sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []), *args]


def _metrics(folders):
    return [(Path(f) / "metrics.csv").read_bytes() for f in folders]


def _locks_free(folders, timeout: float) -> bool:
    """Every folder's run.lock can be taken (no process trains it) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        busy = False
        for f in folders:
            lock = Path(f) / "run.lock"
            if not lock.exists():
                continue
            with open(lock) as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fh, fcntl.LOCK_UN)
                except BlockingIOError:
                    busy = True
        if not busy:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def passes(point: str, tasks_left: int, members: int) -> int:
    """How often a resumed start passes ``point`` with ``tasks_left`` tasks to train (checkpoint and
    flush every task, but no checkpoint in the first task of a resumed start: 2 flushes of 2 files
    and a checkpoint per task and member, run.json at the start, 1 chunk of 500 images per task
    and population), so that seeded kill points land inside what a start does."""
    m, r = members, max(tasks_left, 1)  # a run killed while finishing trains its last task again
    return {"atomic_write": m * (5 * r - 1), "flush": m * (2 * r), "checkpoint": m * (r - 1), "chunk": r}[point]


@dataclass
class Timing:
    """Seconds a start needs before training (``startup``) and per task, measured on the reference."""

    startup: float
    per_task: float

    def instant(self, u: float, tasks_left: int) -> float:
        return round(0.3 * self.startup + u * (0.7 * self.startup + tasks_left * self.per_task), 2)


def plan(seed: int, wall: bool = True):
    """Seeded kills, without end, as (kind, point, u in [0, 1)): ("wall", None, u) kills at a seeded
    instant of the start it is used in (``Timing.instant``); ("point", p, u) at the ceil(u * passes)-th
    pass of p. Every kill point comes as often as the others."""
    rng = random.Random(seed)
    points: list[str] = []
    while True:
        if not points:
            points = rng.sample(POINTS, len(POINTS))
        yield ("wall", None, rng.random()) if wall and rng.random() < 0.3 else ("point", points.pop(), rng.random())


def _tasks_left(folders) -> int:
    done = []
    for f in folders:
        try:
            done.append(json.loads((Path(f) / "run.json").read_text())["tasks_completed"])
        except (OSError, ValueError, KeyError):
            done.append(0)
    return TASKS - min(done)


def chain_kills(tally: Tally, kills, command, folders, reference, mnist_root, cwd, *, killed_rc, reset,
                want: int = KILLS, need: dict | None = None, timing: Timing | None = None, timeout=300,
                after_wall_kill=None):
    """Run ``command`` under the seeded ``kills`` in turn, re-running after every kill, until ``want``
    starts were killed (and at least ``need[where]`` at each ``where``). A chain ends after ``CHAIN``
    kills with the plain command, or earlier when a start is not killed (it finished the run); then
    the finished run is checked against ``reference``."""
    kills = iter(kills)

    def enough():
        return tally.total >= want and all(tally.kills.get(w, 0) >= n for w, n in (need or {}).items())

    while not enough():
        assert tally.total + tally.not_reached < 3 * want, "most seeded kills come after the run finished"
        reset()
        tally.chains += 1
        finished = False
        for _ in range(CHAIN):
            if enough():
                break
            kind, point, u = next(kills)
            left = _tasks_left(folders)
            if kind == "point" and passes(point, left, len(folders)) < 1:
                point = "atomic_write"  # nothing left of that point in this start
            fault = f"{point}:{math.ceil(u * passes(point, left, len(folders))) or 1}" if kind == "point" else None
            proc = subprocess.Popen(command, cwd=cwd, env=_env(mnist_root, fault),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                out, _ = proc.communicate(timeout=timing.instant(u, left) if kind == "wall" else timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                out, _ = proc.communicate(timeout=60)
                tally.kill("at a seeded instant")
                if after_wall_kill:
                    after_wall_kill(proc)
                continue
            if proc.returncode == 0:  # it finished the run before the kill point or instant
                tally.not_reached += 1
                finished = True
                break
            assert proc.returncode in killed_rc, f"{kind} {fault}: exit {proc.returncode}\n{out[-3000:]}"
            if proc.returncode == 2:  # a launcher: one line per failed population, saying what to do
                assert "re-run the same command to resume them" in out, out[-3000:]
            tally.kill(point)
        if not finished:
            done = subprocess.run(command, cwd=cwd, env=_env(mnist_root), capture_output=True, text=True,
                                  timeout=timeout)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        for f in folders:
            info = json.loads((Path(f) / "run.json").read_text())
            assert info["status"] == "completed" and not (Path(f) / "checkpoint.pt").exists(), f
            assert not [p for p in Path(f).rglob(".*.tmp")], f
        assert _metrics(folders) == reference, f"chain {tally.chains}: metrics differ from the uninterrupted run"
        tally.identical += 1


def reference_run(command, cwd, mnist_root) -> Timing:
    """Run ``command`` uninterrupted; time it, and a second start that finds it finished."""
    start = time.monotonic()
    subprocess.run(command, cwd=cwd, env=_env(mnist_root), check=True, capture_output=True, timeout=300)
    whole = time.monotonic() - start
    start = time.monotonic()
    subprocess.run(command, cwd=cwd, env=_env(mnist_root), check=True, capture_output=True, timeout=300)
    startup = time.monotonic() - start
    return Timing(startup, max(0.05, (whole - startup) / TASKS))


def _reset(*paths):
    def reset():
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
    return reset


def test_single_run_survives_kills_anywhere(tmp_path, mnist_root):
    ref, run = tmp_path / "ref", tmp_path / "run"
    timing = reference_run(_command(*RUN, f"hydra.run.dir={ref}"), tmp_path, mnist_root)
    tally = Tally("single run")
    chain_kills(tally, plan(seed=10), _command(*RUN, f"hydra.run.dir={run}"), [run], _metrics([ref]),
                mnist_root, tmp_path, killed_rc=(-signal.SIGKILL,), reset=_reset(run), timing=timing)
    print("\n" + tally.report())
    assert tally.total >= 20 and tally.identical == tally.chains


def test_population_launcher_survives_kills_of_worker_and_launcher(tmp_path, mnist_root):
    ref, sweep = tmp_path / "ref", tmp_path / "sweep"
    launch = lambda folder: _command(*SWEEP, "hydra/launcher=population", "hydra.launcher.n_jobs=1",  # noqa: E731
                                     f"hydra.sweep.dir={folder}", multirun=True)  # n_jobs=1: ONE population of 3
    timing = reference_run(launch(ref), tmp_path, mnist_root)
    folders = [sweep / str(k) for k in range(3)]

    def workers_die(launcher):  # the launcher was killed: its worker must not go on training
        assert _locks_free(folders, timeout=15), "a worker outlived its killed launcher"

    tally = Tally("population of 3, population launcher")
    chain_kills(tally, plan(seed=11), launch(sweep), folders, _metrics([ref / str(k) for k in range(3)]),
                mnist_root, tmp_path, killed_rc=(2, -signal.SIGKILL),  # the worker killed, or the launcher itself
                need={"checkpoint": 2, "at a seeded instant": 3}, reset=_reset(sweep), timing=timing,
                after_wall_kill=workers_die)
    print("\n" + tally.report())
    assert tally.total >= 20 and tally.identical == tally.chains
    assert tally.kills.get("at a seeded instant", 0) >= 3 and tally.kills.get("checkpoint", 0) >= 2


@pytest.mark.slurm
def test_population_slurm_job_survives_kills(slurm, tmp_path, mnist_root):
    """Kills inside the SLURM job; the launcher reports the job's end and the same command resumes."""
    ref, sweep = tmp_path / "ref", tmp_path / "sweep"
    subprocess.run(_command(*SWEEP, f"hydra.sweep.dir={ref}", multirun=True), cwd=tmp_path, env=_env(mnist_root),
                   check=True, capture_output=True, timeout=300)
    folders = [sweep / str(k) for k in range(3)]
    tally = Tally("population of 3, one population_slurm job")
    chain_kills(tally, plan(seed=12, wall=False),
                _command(*SWEEP, "hydra/launcher=population_slurm", "hydra.launcher.timeout_min=30",
                         f"hydra.sweep.dir={sweep}", multirun=True),
                folders, _metrics([ref / str(k) for k in range(3)]), mnist_root, tmp_path,
                killed_rc=(2, -signal.SIGKILL),  # the job killed, or the launcher itself (writing multirun.yaml)
                reset=_reset(sweep))
    print("\n" + tally.report())
    assert tally.total >= 20 and tally.identical == tally.chains


def test_a_stop_signal_during_a_write_is_handled_after_the_file_is_in_place(tmp_path):
    """SIGUSR2 (SLURM's warning before preemption) arriving mid-write runs its handler only once the
    new file has replaced the old one, and the write completes (recording.atomic_write)."""
    from plasticity_lab.recording import atomic_write

    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    seen = []

    def handler(signum, frame):
        seen.append(target.read_bytes())
        raise SystemExit(-1)  # what submitit's handler does after requeueing

    def write(f):
        f.write(b"new, part 1; ")
        os.kill(os.getpid(), signal.SIGUSR2)
        f.write(b"part 2")

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        with pytest.raises(SystemExit):
            atomic_write(target, write, binary=True)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [b"new, part 1; part 2"]
    assert target.read_bytes() == b"new, part 1; part 2" and list(tmp_path.iterdir()) == [target]
