"""``make reproduce-<name>``: run one of the papers' experiments and report it (README, "Reproducing the papers").

``python -m plasticity_lab.reproduce run <name> --scale full|reduced|smoke`` does, for the target
``<name>`` of ``multirun_analysis.reproduction.targets.TARGETS``:

1. plan: every Hydra multirun of the target is composed as ``train.py -m`` will compose it (the
   preset's sweep, the scale's overrides, ``hydra/launcher=population``, a stable sweep folder) and
   packed by the population launcher's own planner, so the runs, populations and processes are the
   ones that will train;
2. calibrate: for each distinct population (learner, network, backend, size) a few thousand steps
   of one population are timed through the training path (``run.build_stream``,
   ``run.build_backend``, ``backend.train``) after a warm-up, on this machine;
3. project: each population's training time is its network-steps divided by its measured speed;
   populations are dealt to the launcher's processes in the launcher's order (a free process takes
   the next one); the projected wall time is printed with the total network-steps and the process
   count BEFORE anything trains (``--dry-run`` stops here);
4. run the multirun(s) with ``python train.py -m ...`` into ``<root>/<name>/<scale>/<sweep>/``:
   the same command again resumes finished, checkpointed and fresh runs where they are;
5. report: ``python -m multirun_analysis report`` of the runs into ``<root>/<name>/<scale>/report/``.

What ran is recorded in ``<root>/<name>/<scale>/reproduction.json`` (each invocation's command, start,
end, exit status, projection and git commit): ``docs/REPRODUCTION.md`` quotes it next to what the
runs' own run.json and config say.

A network-step is one SGD step of one network on one batch (``make bench``'s unit).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import heapq
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from multirun_analysis.reproduction.targets import (DEFAULT_ROOT, PROVENANCE, REPORT_DIR, SCALES, TARGETS, Sweep,
                                                    Target, by_priority, target)

from .summary import format_duration

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = "hydra/launcher=population"
DEFAULT_CALIBRATION_STEPS = 2000  # timed steps per member, after the warm-up
WARMUP_FRACTION = 0.2  # warm-up steps per member, as a share of the timed ones (at least 50)


# ----------------------------------------------------------------------------- plan
@dataclass
class PlannedPopulation:
    """One population as the launcher will train it: its members' settings and their job numbers."""

    settings: list  # plasticity_lab.config.RunSettings, one per member
    jobs: list[int]

    @property
    def size(self) -> int:
        return len(self.settings)

    @property
    def steps_per_member(self) -> int:
        """Network-steps of one member: tasks x ceil(examples per task / batch size)."""
        s = self.settings[0]
        return s.num_tasks * -(-examples_per_task(s) // s.batch_size)

    @property
    def network_steps(self) -> int:
        return self.size * self.steps_per_member

    @property
    def kind(self) -> tuple:
        """What its speed depends on: everything but the vectorisable values, and its size."""
        from .config import population_key

        return population_key(self.settings[0]), self.size


@dataclass
class SweepPlan:
    """One Hydra multirun of a target at a scale: its command and the launcher's populations."""

    sweep: Sweep
    sweep_dir: Path
    command: list[str]  # argv of train.py -m ...
    batches: list[list[PlannedPopulation]]  # the sweeper's batches (one unless max_batch_size is set)
    processes: int  # local processes the launcher runs at a time

    @property
    def populations(self) -> list[PlannedPopulation]:
        return [p for b in self.batches for p in b]

    @property
    def runs(self) -> int:
        return sum(p.size for p in self.populations)

    @property
    def network_steps(self) -> int:
        return sum(p.network_steps for p in self.populations)


def examples_per_task(s) -> int:
    """Steps x batch of one task: a regression bin, or the images of a permuted task (``subset: all``:
    the whole split), as ``PermutedImageStream`` / ``RegressionStream`` take them."""
    from .data.permuted import SPLIT_SIZES

    d = s.dataset
    if d.is_regression:
        return d.bin_size
    return SPLIT_SIZES[d.split] if d.subset == "all" else d.images_per_task


def sweep_command(t: Target, sweep: Sweep, scale: str, root: Path, extra: list[str] = ()) -> list[str]:
    """``python train.py -m experiment=<preset> <overrides> hydra/launcher=population hydra.sweep.dir=<dir>``,
    run in the repository's root (the sweep folder relative to it when it lies inside)."""
    folder = t.sweep_dir(sweep, scale, Path(root).absolute())
    if folder.is_relative_to(REPO):
        folder = folder.relative_to(REPO)
    return [sys.executable, str(REPO / "train.py"), "-m", f"experiment={sweep.preset}", *t.overrides(sweep, scale),
            *extra, LAUNCHER, f"hydra.sweep.dir={folder}"]


def plan_sweep(t: Target, sweep: Sweep, scale: str, root: Path, extra: list[str] = ()) -> SweepPlan:
    """Compose every job of the sweep and pack it with the population launcher's planner (nothing is
    written): the jobs, populations and process count that ``train.py -m`` will run."""
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf

    from .config import parse_config
    from .hydra_setup import register_resolvers

    register_resolvers()
    command = sweep_command(t, sweep, scale, root, extra)
    overrides = command[3:]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config("train", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg))
        sweeper = Plugins.instance().instantiate_sweeper(config=cfg, hydra_context=context,
                                                         task_function=lambda _: None)
        # the sweeper's own expansion (PlasticityLabSweeper.sweep): the preset's params, then the command line
        parser = OverridesParser.create(config_loader=hydra.config_loader)
        task = OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)
        batches = sweeper.split_arguments(parser.parse_overrides(sweeper._parse_config() + list(task)),
                                          sweeper.max_batch_size)
        launcher = sweeper.launcher
        planned, start = [], 0
        for batch in batches:
            pops = launcher._plan(batch, start)  # composes and validates every job, as the launch will
            start += len(batch)
            planned.append([PlannedPopulation(
                [parse_config(OmegaConf.masked_copy(j.config, [k for k in j.config if k != "hydra"])) for j in pop],
                [j.num for j in pop]) for pop in pops])
    processes = max(min(launcher.n_jobs, len(b)) for b in planned) if planned else 0
    return SweepPlan(sweep, t.sweep_dir(sweep, scale, root), command, planned, processes)


# ------------------------------------------------------------------------ calibrate
def measure(settings: list, steps: int, warmup: int | None = None) -> float:
    """Network-steps per second of a population of ``settings`` on this machine: ``warmup`` steps per
    member, then ``steps`` timed steps per member, through the run's own stream and backend."""
    import torch

    from .run import build_backend, build_stream, resolve_device

    s = settings[0]
    if s.num_threads:
        torch.set_num_threads(s.num_threads)
    device, dtype = resolve_device(s.device), getattr(torch, s.dtype)
    stream, _, _ = build_stream(settings, device, dtype)
    backend = build_backend(settings, device, dtype)
    B = s.batch_size
    warmup = max(50, int(WARMUP_FRACTION * steps)) if warmup is None else warmup
    chunks = (c for task in itertools.count() for c in stream.chunks(task, B))

    def train(n_steps: int) -> None:
        left = n_steps * B
        while left > 0:
            x, y = next(chunks)
            take = min(left, x.shape[1]) // B * B
            backend.train(x[:, :take], y[:, :take], B)
            left -= take
        backend.take_totals()

    train(warmup)
    tic = time.perf_counter()
    train(steps)
    return len(settings) * steps / (time.perf_counter() - tic)


@dataclass
class Calibration:
    """Measured speed of each distinct population of a target (one measurement per ``kind``)."""

    steps: int
    rates: dict = field(default_factory=dict)  # kind -> network-steps/s
    labels: dict = field(default_factory=dict)  # kind -> description

    def rate(self, p: PlannedPopulation) -> float:
        return self.rates[p.kind]


def describe(p: PlannedPopulation) -> str:
    """``cbp on 784 -> 5 x 100 relu, population backend, 16 member(s)``."""
    s = p.settings[0]
    net = s.network
    widths, acts = net.per_layer("width"), net.per_layer("activation")
    shape = (f"{net.depth} x {widths[0]}" if len(set(widths)) == 1 else "-".join(map(str, widths)))
    act = acts[0] if len(set(acts)) == 1 else "[" + ",".join(acts) + "]"
    return (f"{s.learner.name} on {s.dataset.num_inputs} -> {shape} {act} -> {s.dataset.num_outputs}, "
            f"{s.backend_used} backend, {p.size} member(s)")


def calibrate(plans: list[SweepPlan], steps: int = DEFAULT_CALIBRATION_STEPS, log=print) -> Calibration:
    """Time one population of every distinct kind in ``plans`` (``measure``)."""
    cal = Calibration(steps)
    for plan in plans:
        for p in plan.populations:
            if p.kind in cal.rates:
                continue
            cal.labels[p.kind] = describe(p)
            cal.rates[p.kind] = measure(p.settings, steps)
            log(f"    {cal.labels[p.kind]}: {cal.rates[p.kind]:,.0f} network-steps/s")
    return cal


# -------------------------------------------------------------------------- project
def makespan(durations: list[float], processes: int) -> float:
    """Wall time of jobs of ``durations`` run in that order by ``processes`` workers, each free worker
    taking the next job (multiprocessing.Pool.map with chunksize 1, as the population launcher)."""
    if not durations:
        return 0.0
    free = [0.0] * max(1, processes)
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


@dataclass
class Projection:
    network_steps: int
    processes: int
    seconds: float


def project(plans: list[SweepPlan], cal: Calibration) -> Projection:
    """Sweeps run one after another, the batches of a sweep too; within a batch the launcher's
    processes share the populations (``makespan``)."""
    seconds = sum(makespan([p.network_steps / cal.rate(p) for p in batch], plan.processes)
                  for plan in plans for batch in plan.batches)
    return Projection(sum(p.network_steps for p in plans), max((p.processes for p in plans), default=0), seconds)


def projection_lines(t: Target, scale: str, plans: list[SweepPlan], cal: Calibration | None,
                     now: _dt.datetime | None = None) -> list[str]:
    """What a target prints before it starts: per sweep its command, runs, populations and
    network-steps; then the total network-steps, the processes and the projected wall time."""
    lines = [f"reproduce {t.name} at scale {scale}: {t.paper} {t.title}"]
    if t.notes.get(scale):
        lines.append(f"  scale {scale}: {t.notes[scale]}")
    for plan in plans:
        s = plan.populations[0].settings[0]
        unit = "bins" if s.dataset.is_regression else "tasks"
        lines += [f"  sweep {plan.sweep.label}: {shlex.join(['python', 'train.py', *plan.command[2:]])}",
                  f"    {plan.runs} runs x {s.num_tasks} {unit} x {examples_per_task(s):,} examples "
                  f"(batch {s.batch_size}): {plan.network_steps:,} network-steps in {len(plan.populations)} "
                  f"population(s)"]
        if cal is not None:
            for p in plan.populations:
                lines.append(f"      population of jobs {_jobs(p.jobs)}: {describe(p)}, {p.network_steps:,} "
                             f"network-steps at {cal.rate(p):,.0f}/s = {format_duration(p.network_steps / cal.rate(p))}")
    total = sum(p.network_steps for p in plans)
    processes = max((p.processes for p in plans), default=0)
    lines.append(f"  total: {total:,} network-steps; processes: {processes} at a time "
                 f"(the launcher's n_jobs; {os.cpu_count()} CPU core(s) here)")
    if cal is None:
        lines.append("  projected wall time: not measured (--calibration-steps 0)")
        return lines
    proj = project(plans, cal)
    done = (now or _dt.datetime.now()) + _dt.timedelta(seconds=proj.seconds)
    lines.append(f"  projected wall time: {format_duration(proj.seconds)} (done around {done:%Y-%m-%d %H:%M}), "
                 f"from {cal.steps:,} timed steps per member of each population kind on this machine; "
                 "probes, checkpoints, start-up and other load on the machine come on top")
    return lines


def _jobs(nums: list[int]) -> str:
    """``#0-4,9`` for job numbers 0, 1, 2, 3, 4, 9."""
    parts, run = [], []
    for n in sorted(nums) + [None]:
        if run and (n is None or n != run[-1] + 1):
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
            run = []
        if n is not None:
            run.append(n)
    return "#" + ",".join(parts)


# ------------------------------------------------------------------------------ run
def _record(path: Path, entry: dict) -> None:
    """Append/replace this invocation in ``reproduction.json`` (atomic)."""
    from .recording import atomic_write_text

    data = json.loads(path.read_text()) if path.exists() else {"invocations": []}
    runs = [e for e in data["invocations"] if e.get("id") != entry["id"]]
    data.update(target=entry["target"], scale=entry["scale"], invocations=[*runs, entry])
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def run_target(name: str, scale: str, root: Path = DEFAULT_ROOT, extra: list[str] = (), dry_run: bool = False,
               calibration_steps: int = DEFAULT_CALIBRATION_STEPS, log=print) -> int:
    """Plan, project, run and report one target (module docstring); returns an exit status."""
    from .recording import git_state, now_iso

    t = target(name)
    if scale not in t.scales:
        raise KeyError(f"scale {scale!r}: one of {', '.join(t.scales)}")
    root = Path(root).absolute()
    log(f"planning {t.name} ({scale}): composing every job ...")
    plans = [plan_sweep(t, sweep, scale, root, list(extra)) for sweep in t.sweeps]
    cal = None
    if calibration_steps > 0:
        log(f"  calibrating ({calibration_steps:,} timed steps per member, one process):")
        cal = calibrate(plans, calibration_steps, log)
    for line in projection_lines(t, scale, plans, cal):
        log(line)
    if dry_run:
        log("dry run: nothing trained")
        return 0
    scale_dir = t.scale_dir(scale, root)
    scale_dir.mkdir(parents=True, exist_ok=True)
    proj = project(plans, cal) if cal else None
    commit, dirty = git_state()
    entry = {"id": f"{now_iso()}-{os.getpid()}", "target": t.name, "scale": scale,
             "command": shlex.join(["python", "-m", "plasticity_lab.reproduce", "run", name, "--scale", scale,
                                    *(["--"] + list(extra) if extra else [])]),
             "make": t.command(scale), "sweeps": [shlex.join(["python", "train.py", *p.command[2:]]) for p in plans],
             "network_steps": sum(p.network_steps for p in plans), "processes": max(p.processes for p in plans),
             "projected_seconds": proj.seconds if proj else None, "cpu_count": os.cpu_count(),
             "git_commit": commit, "git_dirty": dirty, "start_time": now_iso(), "end_time": None,
             "exit_status": None, "status": "running"}
    record = scale_dir / PROVENANCE
    _record(record, entry)
    tic = time.monotonic()
    status = None
    try:
        status = _run_sweeps(t, scale, plans, scale_dir, log)
    finally:  # also on Ctrl-C: the record says how this invocation ended
        entry.update(end_time=now_iso(), exit_status=status, wall_seconds=time.monotonic() - tic,
                     status={None: "interrupted", 0: "completed"}.get(status, "failed"))
        _record(record, entry)
    log(f"{t.name} ({scale}) {'finished' if not status else 'stopped'} after "
        f"{format_duration(time.monotonic() - tic)}; runs in {scale_dir}; "
        "docs/REPRODUCTION.md: make reproduction-report")
    return status


def _run_sweeps(t: Target, scale: str, plans: list[SweepPlan], scale_dir: Path, log) -> int:
    """The target's multiruns one after another, then the report of all their runs; the exit status."""
    for plan in plans:
        log(f"running {plan.sweep.label}: {shlex.join(['python', 'train.py', *plan.command[2:]])}")
        status = subprocess.run(plan.command, cwd=REPO).returncode
        if status:
            log(f"sweep {plan.sweep.label} ended with exit status {status}; the same command resumes it: "
                f"{t.command(scale)}")
            return status
    report = scale_dir / REPORT_DIR
    if report.exists():
        shutil.rmtree(report)  # this command's own output, regenerated from all runs
    from multirun_analysis.cli import main as analysis

    return analysis(["report", *map(str, (p.sweep_dir for p in plans)), "--out", str(report)])


# ------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plasticity_lab.reproduce",
                                     description="Run the papers' experiments (make reproduce-<name>).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the targets, most important first")
    p = sub.add_parser("run", help="plan, project, run and report one target")
    p.add_argument("name", choices=list(TARGETS))
    p.add_argument("--scale", choices=SCALES, default="full")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of the reproductions (default: reproduction)")
    p.add_argument("--dry-run", action="store_true", help="plan and print the projection, train nothing")
    p.add_argument("--calibration-steps", type=int, default=DEFAULT_CALIBRATION_STEPS,
                   help=f"timed steps per member of each population kind (default {DEFAULT_CALIBRATION_STEPS}; 0: no "
                        "projection)")
    p.add_argument("extra", nargs="*", help="further Hydra overrides for every sweep (after --)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for t in by_priority():
            print(f"{t.name:18s} {t.paper} {t.title}; scales: {', '.join(t.scales)}")
        return 0
    from .config import ConfigError
    from .data.idx import DataError

    try:
        return run_target(args.name, args.scale, args.root, args.extra, args.dry_run, args.calibration_steps)
    except (ConfigError, DataError, KeyError, ValueError) as err:  # before anything trained: one message
        print(f"error: {err.args[0] if isinstance(err, KeyError) and err.args else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
