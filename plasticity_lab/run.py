"""Run one config, or a population of configs, end to end: validate, load data, train, record.

``run(cfg)`` is what ``train.py`` calls for one Hydra job (a population of one).
``run_population(members)`` trains K member configs in lockstep in one process; member k
writes its own run folder exactly as it would alone. The loop is short on purpose
(CleanRL / Avalanche style): for each task, train on its stream chunk by chunk, then record
per member the task's online accuracy and mean loss (test-then-train, SPEC 1), mark
members whose loss went non-finite as diverged (the others go on), and flush the files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from .config import VECTORISABLE, ConfigError, RunSettings, parse_config, population_key
from .data.idx import load_idx_dataset
from .data.permuted import PermutedImageStream
from .engine import Population
from .engine.learners import learner_from_settings
from .recording import RunRecorder, git_state, package_versions
from .reference import ReferencePopulation

log = logging.getLogger(__name__)


@dataclass
class MemberJob:
    """One member: its composed config, its run folder and its Hydra provenance."""

    cfg: DictConfig
    out_dir: Path
    choices: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}: CUDA is not available on this machine")
    return device


def build_backend(settings: list[RunSettings], device, dtype):
    """The members' networks, optimisers and reset learners on the configured backend."""
    s = settings[0]
    spec = s.network.spec(784, 10)
    if s.backend == "reference":
        return ReferencePopulation.from_settings(spec, settings, device, dtype)
    opt = [m.optimizer for m in settings]
    return Population(spec, [m.seed for m in settings], [o.step_size for o in opt],
                      [m.learner.weight_decay for m in settings], device, dtype, optimizer=s.optimizer.name,
                      momentum=[getattr(o, "momentum", 0.0) for o in opt],
                      betas=[tuple(getattr(o, "betas", (0.9, 0.999))) for o in opt],
                      eps=[getattr(o, "eps", 1e-8) for o in opt],
                      learner=learner_from_settings([m.learner for m in settings]))


def run(cfg: DictConfig) -> float:
    """Train the single Hydra job ``cfg`` into Hydra's output folder; returns its mean accuracy."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    job = MemberJob(cfg, Path(hc.runtime.output_dir), dict(hc.runtime.choices), list(hc.overrides.task))
    return run_population([job])[0]["mean_accuracy"]


def run_population(members: list[MemberJob], population_id: str | None = None) -> list[dict]:
    """Train ``members`` in lockstep; returns one summary dict per member (also in run.json)."""
    settings = [parse_config(m.cfg) for m in members]
    shared = population_key(settings[0])
    for m, s in zip(members, settings):
        if population_key(s) != shared:
            raise ConfigError(f"{m.out_dir}: this member differs from the first in a setting that cannot vary "
                              f"within a population (only {', '.join(VECTORISABLE)} may)")
    s0 = settings[0]
    device = resolve_device(s0.device)
    dtype = getattr(torch, s0.dtype)
    if s0.num_threads:
        torch.set_num_threads(s0.num_threads)

    commit, dirty = git_state()
    population_id = population_id or members[0].out_dir.name
    recorders = [
        RunRecorder(m.out_dir, {
            "seed": s.seed, "member_index": k, "population_id": population_id, "population_size": len(members),
            "num_tasks": s.num_tasks, "tasks_completed": 0, "diverged_at_task": None, "error": None,
            "git_commit": commit, "git_dirty": dirty, "versions": package_versions(),
            "device": str(device), "backend": s.backend,
            "choices": m.choices, "overrides": m.overrides,
        }, s0.metrics_flush_seconds)
        for k, (m, s) in enumerate(zip(members, settings))
    ]
    for r in recorders:  # refuse before writing anything if any member's folder holds results
        if r.run_json.exists():
            raise FileExistsError(f"{r.run_json} exists: refusing to overwrite an earlier run's results")
    for r in recorders:
        r.start()
    status = ["running"] * len(members)
    try:
        images, labels = load_idx_dataset(s0.dataset.source, s0.dataset.split, s0.dataset.root, s0.dataset.download)
        stream = PermutedImageStream(torch.from_numpy(images), torch.from_numpy(labels),
                                     [s.seed for s in settings], s0.dataset.images_per_task,
                                     s0.dataset.subset, device, dtype)
        backend = build_backend(settings, device, dtype)
        log.info("training %d member(s) on %s, %s backend, %d tasks of %d examples", len(members), device,
                 s0.backend, s0.num_tasks, stream.examples_per_task)
        _train(s0, stream, backend, recorders, status)
    except BaseException as err:
        for k, r in enumerate(recorders):
            if status[k] == "running":
                r.finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    return [r.info for r in recorders]


def _train(s: RunSettings, stream: PermutedImageStream, backend, recorders: list[RunRecorder], status: list[str]):
    n = stream.examples_per_task
    steps_per_task = math.ceil(n / s.batch_size)
    accuracies: list[list[float]] = [[] for _ in recorders]
    bar = tqdm(range(s.num_tasks), desc="tasks", unit="task", disable=not s.progress_bar, dynamic_ncols=True)
    for task in bar:
        for x, y in stream.chunks(task, s.batch_size):
            backend.train(x, y, s.batch_size)
        loss_sum, correct = backend.take_totals()
        counts = backend.take_counts()  # units reset / rescaled per hidden layer during the task (SPEC 4)
        step = (task + 1) * steps_per_task
        for k, r in enumerate(recorders):
            if status[k] != "running":
                continue
            acc, loss = float(correct[k]) / n, float(loss_sum[k]) / n
            r.add(task, step, "accuracy", acc)
            r.add(task, step, "loss", loss)
            for metric, per_layer in counts.items():
                for l, c in enumerate(per_layer[k]):
                    r.add(task, step, metric, int(c), layer=l + 1)
            accuracies[k].append(acc)
            if not math.isfinite(loss):
                status[k] = "diverged"
                backend.freeze(k)
                log.warning("member %d (seed %d) diverged in task %d", k, r.info["seed"], task)
                r.finish("diverged", diverged_at_task=task, tasks_completed=task + 1,
                         mean_accuracy=sum(accuracies[k]) / len(accuracies[k]))
            else:
                r.info["tasks_completed"] = task + 1
                r.flush()
        live = [accuracies[k][-1] for k in range(len(recorders)) if status[k] == "running"]
        if not live:
            break
        bar.set_postfix(acc=f"{sum(live) / len(live):.3f}")
    for k, r in enumerate(recorders):
        if status[k] == "running":
            status[k] = "completed"
            r.finish("completed", mean_accuracy=sum(accuracies[k]) / len(accuracies[k]))
