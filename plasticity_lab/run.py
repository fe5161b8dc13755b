"""Run one config, or a population of configs, end to end: validate, load data, train, record.

``run(cfg)`` is what ``train.py`` calls for one Hydra job (a population of one).
``run_population(members)`` trains K member configs in lockstep in one process; member k
writes its own run folder exactly as it would alone. The loop is short on purpose
(CleanRL / Avalanche style): for each task, train on its stream chunk by chunk, then record
per member the task's metrics (the task kind's, tasks.py: online accuracy and mean loss for
classification, SPEC 1; the bin's mean squared error for regression, SPEC 2), mark members
whose loss went non-finite as diverged (the others go on), and flush the files.
At the start of a task (at most every ``checkpoint_seconds``) each member's state is
checkpointed; re-running the same command resumes from there (checkpoint.py). A member's
folder is locked while it trains, and what it already holds decides whether it starts,
resumes, is left alone or is refused (run_folder.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import checkpoint, faults, loggers, objective, run_folder, summary
from .config import VECTORISABLE, ConfigError, RunSettings, parse_config, population_key
from .engine import Population
from .engine.state import load_member_states, member_state
from .hydra_setup import fail
from .learners import declared
from .probes import build_probes
from .recording import RunRecorder, git_state, package_versions
from .reference import ReferencePopulation
from .run_folder import RunFolderError
from .tasks import task_kind

log = logging.getLogger(__name__)


@dataclass
class MemberJob:
    """One member: its composed config, its run folder and its Hydra provenance (``hydra``: the
    job's ``hydra`` node, recorded as .hydra/hydra.yaml; None for runs started from Python)."""

    cfg: DictConfig
    out_dir: Path
    choices: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    hydra: DictConfig | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}: CUDA is not available on this machine")
    return device


def validate(cfg: DictConfig) -> RunSettings:
    """Everything checked before a run folder is touched: the config values and the device."""
    settings = parse_config(cfg)
    resolve_device(settings.device)
    return settings


def build_backend(settings: list[RunSettings], device, dtype):
    """The members' networks, optimisers and learners on the backend that trains them
    (``RunSettings.backend_used``: kernel, population or reference), from their settings."""
    s = settings[0]
    spec = s.network.spec(s.dataset.num_inputs, s.dataset.num_outputs)
    loss = task_kind(s.dataset).loss
    if s.backend_used == "reference":
        return ReferencePopulation.from_settings(spec, settings, device, dtype, loss=loss)
    cls = Population
    if s.backend_used == "kernel":
        from .kernel import KernelPopulation

        cls = KernelPopulation
    learner = declared()[s.learner.name].build("kernel" if cls is not Population else "engine",
                                               [m.learner for m in settings])
    return cls(spec, [m.seed for m in settings], [m.optimizer for m in settings],
               [m.learner.weight_decay for m in settings], device, dtype, learner=learner, loss=loss)


def _why_backend(s: RunSettings) -> str:
    """Why ``backend`` resolved as it did, for the log."""
    from .kernel.support import kernel_unsupported

    if s.backend_used == "kernel":
        return "the compiled kernel runs this config"
    if s.backend_used == "reference":
        return f"network.norm={s.network.norm}: only the reference backend has normalisation layers"
    return "the kernel does not run " + "; ".join(kernel_unsupported(s))


def run(cfg: DictConfig) -> float:
    """Train the single Hydra job ``cfg`` into Hydra's output folder; returns its objective
    (``optimized_metric``, objective.py: by default its mean accuracy, regression: its mean
    error). A single run (not a sweep's job: the sweep prints one summary of its own) logs its
    projected time and a summary line. A bad value or a folder that must not be used is one line
    on stderr and exit status 2, with no new folder left behind."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    job = MemberJob(cfg, Path(hc.runtime.output_dir), dict(hc.runtime.choices), list(hc.overrides.task),
                    HydraConfig.instance().cfg)
    try:
        run_population([job], announce=hc.mode == RunMode.RUN)
    except (ConfigError, RunFolderError) as err:
        run_folder.remove_if_unused(job.out_dir)
        hint = ""
        if hc.mode == RunMode.MULTIRUN and isinstance(err, RunFolderError) and "run with other settings" in str(err):
            hint = (f" (this launcher puts job #{hc.job.num} in folder {hc.job.num} whatever it holds; to extend "
                    f"or change a sweep, re-launch it with hydra/launcher=population, which matches jobs to "
                    f"folders by their settings, or use a new hydra.sweep.dir)")
        if os.environ.get("SUBMITIT_EXECUTOR"):  # a submitit job: its launcher collects the error
            raise type(err)(f"{err}{hint}") from None
        fail(f"{err}{hint}")
    return objective.of_run(job.cfg, job.out_dir)  # optimized_metric: what a sweeper (Optuna) gets


def run_population(members: list[MemberJob], population_id: str | None = None,
                   announce: bool = False) -> list[dict]:
    """Train ``members`` in lockstep; returns one summary dict per member (also in run.json).

    Every member's folder is locked for the whole run; what it already holds decides what
    happens (run_folder.inspect): finished members are left alone, members with a checkpoint
    resume from it, the rest start fresh. Refusals come before anything is written. Members
    at different tasks (a population killed during its checkpoint round) train as one
    population per task, one after another: members are independent, so the results are
    those of one population. ``announce``: log the projected training time after the first
    task and one summary line per member at the end (summary.py).
    """
    settings = [validate(m.cfg) for m in members]
    shared = population_key(settings[0])
    for m, s in zip(members, settings):
        if population_key(s) != shared:
            raise ConfigError(f"{m.out_dir}: this member differs from the first in a setting that cannot vary "
                              f"within a population (only {', '.join(VECTORISABLE)} may)")
    with run_folder.RunLocks([m.out_dir for m in members]) as locks:
        try:
            priors = [run_folder.inspect(m.out_dir, run_folder.config_record(m.cfg), _settings_record(s))
                      for m, s in zip(members, settings)]
        except RunFolderError:
            locks.remove_unused()
            raise
        results = [p.info if p.kind == "finished" else None for p in priors]
        groups: dict[tuple[bool, int], list[int]] = {}  # (resumed, start task) -> members
        for k, (m, p) in enumerate(zip(members, priors)):
            run_folder.remove_temporaries(m.out_dir)
            if p.kind == "finished":
                checkpoint.remove(m.out_dir)  # a kill between the last run.json and its removal
                continue
            if p.start_over:
                log.info(p.start_over)
                run_folder.start_over(m.out_dir)
            groups.setdefault((p.kind == "resume", p.start_task), []).append(k)
        if not groups:
            log.info("every member has already finished: nothing to train")
            if announce:
                for m, info in zip(members, results):
                    log.info(summary.run_line(info, m.out_dir, unit=task_kind(settings[0].dataset).unit))
        for (resumed, start_task), idx in sorted(groups.items()):
            if len(groups) > 1:
                log.info("members %s %s at task %d", idx, "resume" if resumed else "start", start_task)
            infos = _run_live([members[k] for k in idx], [settings[k] for k in idx], [priors[k] for k in idx],
                              resumed, start_task, population_id or members[0].out_dir.name, idx, len(members),
                              announce)
            for k, info in zip(idx, infos):
                results[k] = info
    return results


def _settings_record(s: RunSettings) -> dict:
    """What a checkpoint remembers of the settings, to refuse resuming under different ones."""
    return run_folder.comparable(json.loads(json.dumps(dataclasses.asdict(s), default=str)))


def _run_live(members, settings, priors, resumed: bool, start_task: int, population_id: str, indices: list[int],
              population_size: int, announce: bool = False) -> list[dict]:
    """Train live members that all start at ``start_task``, fresh or (``resumed``) from their checkpoints;
    ``indices``: their places in the population as launched."""
    started = time.monotonic()
    s0 = settings[0]
    device = resolve_device(s0.device)
    dtype = getattr(torch, s0.dtype)
    if s0.num_threads:
        torch.set_num_threads(s0.num_threads)
    if resumed:
        recorders = [RunRecorder(m.out_dir, p.state["info"], s0.metrics_flush_seconds) for m, p in zip(members, priors)]
        for r, p in zip(recorders, priors):
            r.rows = list(p.state["rows"])
            r.resume()
        log.info("resuming %d member(s) at task %d", len(members), start_task)
    else:
        commit, dirty = git_state()
        recorders = [
            RunRecorder(m.out_dir, {
                "seed": s.seed, "member_index": k, "population_id": population_id, "population_size": population_size,
                "num_tasks": s.num_tasks, "tasks_completed": 0, "diverged_at_task": None, "error": None,
                "git_commit": commit, "git_dirty": dirty, "versions": package_versions(),
                "device": str(device), "backend": s.backend_used,
                "choices": m.choices, "overrides": m.overrides,
            }, s0.metrics_flush_seconds)
            for k, m, s in zip(indices, members, settings)
        ]
        for m, r in zip(members, recorders):
            run_folder.write_record(m.out_dir, m.cfg, m.hydra, m.overrides)
            r.start()
    status = ["running"] * len(members)
    try:
        stream, images, labels = build_stream(settings, device, dtype)
        backend = build_backend(settings, device, dtype)
        loggers.attach(recorders, members, settings)  # TensorBoard / W&B, one per member (the `logger` group)
        if s0.backend_used != s0.backend:
            log.info("backend=%s: training on the %s backend (%s)", s0.backend, s0.backend_used, _why_backend(s0))
        log.info("training %d member(s) on %s, %s backend, %d %s of %d examples", len(members), device,
                 s0.backend_used, s0.num_tasks, task_kind(s0.dataset).unit, stream.examples_per_task)
        probes = build_probes(s0, stream, backend, recorders, images, labels,
                              math.ceil(stream.examples_per_task / s0.batch_size))
        run = _Training(s0, stream, backend, recorders, status, probes,
                        [_settings_record(s) for s in settings], [m.out_dir for m in members], announce)
        if resumed:
            run.restore([p.state for p in priors])
        with logging_redirect_tqdm() if s0.progress_bar else contextlib.nullcontext():  # log lines above the bar
            run.train(start_task, resumed)
    except BaseException as err:
        for k, r in enumerate(recorders):
            if status[k] == "running":
                r.finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    if announce:
        for m, r in zip(members, recorders):
            log.info(summary.run_line(r.info, m.out_dir, time.monotonic() - started, run.network_steps,
                                      run.training_seconds, task_kind(s0.dataset).unit))
    return [r.info for r in recorders]


def build_stream(settings: list[RunSettings], device, dtype):
    """(the members' data stream, the split's images, labels) — images/labels None for regression
    (the task kind's ``stream``, tasks.py)."""
    return task_kind(settings[0].dataset).stream(settings, device, dtype)


class _Training:
    """The task loop of one population, and its checkpoints. What depends on the kind of task
    (the loss, the per-task metrics, the summary) is its task kind's (tasks.py)."""

    def __init__(self, s: RunSettings, stream, backend, recorders: list[RunRecorder], status: list[str], probes,
                 settings_records: list[dict], out_dirs: list[Path], announce: bool = False):
        self.s, self.stream, self.backend, self.recorders = s, stream, backend, recorders
        self.status, self.probes = status, probes
        self.settings_records, self.out_dirs = settings_records, out_dirs
        self.kind = task_kind(s.dataset)(len(recorders))
        self.summarised: list[list[float]] = [[] for _ in recorders]  # per member, the summarised metric of every task
        self._last_checkpoint = -math.inf
        self.announce = announce  # log the projected time after the first task (summary.projection)
        self.training_seconds, self.network_steps = 0.0, 0  # this process's training (probes excluded)

    def restore(self, states: list[dict]) -> None:
        self.backend.load_member_states([st["backend"] for st in states])
        load_member_states(self.kind, states)  # the task kind's STATE, at the checkpoint's top level
        self.summarised = [list(st["accuracies"]) for st in states]

    def checkpoint(self, task: int) -> None:
        """Every running member's state at the start of ``task`` (after its probes), atomically."""
        K = len(self.recorders)
        for k, r in enumerate(self.recorders):
            if self.status[k] == "running":
                r.flush(force=True)
                checkpoint.save(self.out_dirs[k], {
                    "next_task": task, "settings": self.settings_records[k], "info": r.info, "rows": r.rows,
                    # "accuracies": each task's summarised metric (regression: its error; the name of
                    # checkpoint format 1, kept so that checkpoints of earlier versions resume)
                    "accuracies": self.summarised[k], "backend": self.backend.member_state(k),
                    **member_state(self.kind, k, K)})
                faults.point("checkpoint")
        self._last_checkpoint = time.monotonic()

    def train(self, start_task: int, resumed: bool) -> None:
        s, stream, backend, kind = self.s, self.stream, self.backend, self.kind
        n = stream.examples_per_task
        steps_per_task = math.ceil(n / s.batch_size)
        bar = tqdm(range(start_task, s.num_tasks), desc="tasks", unit="task", disable=not s.progress_bar,
                   dynamic_ncols=True, initial=start_task, total=s.num_tasks)
        task = start_task
        for task in bar:
            if not (resumed and task == start_task):  # a resumed task's probes ran before its checkpoint
                self.probes.before_task(task, self.status)
            if time.monotonic() - self._last_checkpoint >= s.checkpoint_seconds and not (resumed and task == start_task):
                self.checkpoint(task)
            tic, trained = time.perf_counter(), steps_per_task * self.status.count("running")
            totals = kind.train(task, stream, backend, s.batch_size, self._add_rows)
            seconds = time.perf_counter() - tic
            self.training_seconds += seconds
            self.network_steps += trained
            if self.announce and task == start_task and task + 1 < s.num_tasks:
                log.info(summary.projection(seconds, trained, s.num_tasks - task - 1, kind.unit))
            self._record(task, (task + 1) * steps_per_task, *totals, backend.take_counts())
            live = [self.summarised[k][-1] for k in range(len(self.recorders)) if self.status[k] == "running"]
            if not live:
                break
            bar.set_postfix(kind.progress(sum(live) / len(live)))
        self.probes.finish(task + 1, self.status)
        for k, r in enumerate(self.recorders):
            if self.status[k] == "running":
                self.status[k] = "completed"
                r.finish("completed", **self._summary(k))
                checkpoint.remove(self.out_dirs[k])

    def _summary(self, k: int) -> dict:
        values = self.summarised[k]
        return {self.kind.summary_key: sum(values) / len(values)}

    def _add_rows(self, task: int, step: int, metric: str, values: list[float]) -> None:
        """One row per running member (``values``: one per member)."""
        for k, r in enumerate(self.recorders):
            if self.status[k] == "running":
                r.add(task, step, metric, values[k])

    def _record(self, task: int, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, counts: dict) -> None:
        """Per member: the task's metrics (its task kind's; the first is the summarised one) and the
        learner's counts per hidden layer; a non-finite loss means diverged."""
        n = self.stream.examples_per_task
        for k, r in enumerate(self.recorders):
            if self.status[k] != "running":
                continue
            loss = float(loss_sum[k]) / n
            rows = self.kind.rows(float(loss_sum[k]), int(correct[k]), n)
            for metric, value in rows.items():
                r.add(task, step, metric, value)
            for name, per_layer in counts.items():  # units reset / rescaled per hidden layer (SPEC 4)
                for l, c in enumerate(per_layer[k]):
                    r.add(task, step, name, int(c), layer=l + 1)
            value = next(iter(rows.values()))  # the summarised metric
            self.summarised[k].append(value)
            if not math.isfinite(loss):
                self.status[k] = "diverged"
                self.backend.freeze(k)
                log.warning("member %d (seed %d) diverged in task %d", k, r.info["seed"], task)
                r.finish("diverged", diverged_at_task=task, tasks_completed=task + 1, **self._summary(k))
                checkpoint.remove(self.out_dirs[k])
            else:
                r.info["tasks_completed"] = task + 1
                r.info[self.kind.last_key] = value
                r.flush()
