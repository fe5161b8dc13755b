"""Hydra launchers that pack a sweep into populations (DESIGN, "Sweeps and launchers").

The sweeper hands over the list of jobs. Every job is composed and validated here first
(a bad value anywhere fails before anything runs or is submitted). Jobs whose configs
differ only in vectorisable values (``plasticity_lab.config.VECTORISABLE``) are grouped,
each group is cut into populations of at most ``max_members``, and each population runs
as ONE process: locally ``n_jobs`` at a time (``population``), or as one SLURM job each
through submitit (``population_slurm``). Inside that process every member goes through
Hydra's own ``run_job`` to get an ordinary job folder (``.hydra/``, job log) and a
JobReturn; then all members train together with ``run_population``.

Populations on the compiled kernel backend (``backend_used == "kernel"``) run their members
one after another, so splitting them loses nothing: locally they are cut small enough that
every one of the ``n_jobs`` processes gets work (``plan_populations``), and a SLURM job with
``cpus_per_task`` > 1 trains its kernel population in that many processes.
"""


import copy
import logging
import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from .sweeper import compose_job

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One sweep job: its number, its overrides and its composed config (with the hydra node)."""

    num: int
    overrides: list
    config: Any = None
    backend: str = "population"  # the backend that trains it (RunSettings.backend_used)


def plan_populations(keys: list[str], max_members: int, kernel: list[bool] | None = None,
                     processes: int = 1) -> list[list[int]]:
    """Indices of jobs grouped by equal key (first-seen order), cut into chunks of max_members.

    Groups on the kernel backend (``kernel[i]`` true for their jobs) are cut into chunks of at
    most ceil(#kernel jobs / processes) instead, so that ``processes`` local processes all get
    work: the kernel trains a population's members one after another, so a smaller population
    costs nothing per member."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    n_kernel = sum(kernel) if kernel else 0
    spread = max(1, min(max_members, math.ceil(n_kernel / max(1, processes))))
    plan = []
    for idx in groups.values():
        size = spread if kernel and kernel[idx[0]] else max_members
        plan.extend(idx[s : s + size] for s in range(0, len(idx), size))
    return plan


class PopulationLauncher(Launcher):
    """``hydra/launcher=population``: populations as local processes, ``n_jobs`` at a time."""

    def __init__(self, max_members: int = 16, dry_run: bool = False, n_jobs: int = 0, **queue: Any) -> None:
        if max_members < 1:
            raise ValueError(f"hydra.launcher.max_members={max_members}: must be >= 1")
        self.max_members = max_members
        self.dry_run = dry_run
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self.queue = {k: (OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v)
                      for k, v in queue.items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    # ------------------------------------------------------------------ planning
    def _plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[list[Job]]:
        """Compose and validate every job, then pack them; raises before anything runs."""
        from plasticity_lab.config import population_key

        keys, jobs = [], []
        for i, overrides in enumerate(job_overrides):
            sweep_config, settings = compose_job(self.hydra_context.config_loader, self.config, overrides,
                                                 initial_job_idx + i)
            keys.append(population_key(settings))
            jobs.append(Job(initial_job_idx + i, list(overrides), sweep_config, settings.backend_used))
        kernel = [j.backend == "kernel" for j in jobs]
        return [[jobs[i] for i in pop] for pop in plan_populations(keys, self.max_members, kernel,
                                                                      self._local_processes())]

    def _local_processes(self) -> int:
        """Processes that train populations at the same time on this machine (kernel populations are cut to fill them)."""
        return self.n_jobs

    def _processes_per_population(self, population: list[Job]) -> int:
        """Processes one population is trained in (1; a SLURM job's cpus_per_task for the kernel)."""
        return 1

    def _describe(self, populations: list[list[Job]], where: str) -> None:
        n = sum(len(p) for p in populations)
        log.info(f"population launcher: {n} jobs -> {len(populations)} population(s) ({where}), "
                 f"at most {self.max_members} members each; sweep dir {self.config.hydra.sweep.dir}")
        for p, pop in enumerate(populations):
            log.info(f"  population {p}: {len(pop)} member(s): " + ", ".join(f"#{j.num}" for j in pop))
            for j in pop:
                log.info(f"      #{j.num} : {' '.join(filter_overrides(j.overrides))}")

    # ------------------------------------------------------------------ running
    def __call__(self, population: list[Job], singleton_state: dict | None = None) -> list[JobReturn]:
        """Run one population in this process: Hydra job folders first, then lockstep training.

        ``singleton_state`` carries Hydra's global state to a fresh process (SLURM); forked
        local workers inherit it and pass None.
        """
        from plasticity_lab.run import MemberJob

        if singleton_state is not None:
            Singleton.set_state(singleton_state)
        setup_globals()
        members: list[MemberJob] = []
        returns: list[JobReturn] = []
        for job in population:
            if job.config is not None:  # a copy: run_job leaves it read-only, and a requeued job runs it again
                sweep_config = copy.deepcopy(job.config)
                OmegaConf.set_readonly(sweep_config, False)
            else:
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, job.overrides)
            with open_dict(sweep_config.hydra.job):
                sweep_config.hydra.job.id = f"{_job_id()}_{job.num}"
                sweep_config.hydra.job.num = job.num

            def collect(cfg: DictConfig, job=job) -> None:
                hc = HydraConfig.get()
                members.append(MemberJob(cfg, Path(hc.runtime.output_dir), dict(hc.runtime.choices),
                                         list(hc.overrides.task)))

            returns.append(run_job(hydra_context=self.hydra_context, task_function=collect, config=sweep_config,
                                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        try:
            infos = _train(members, f"{_job_id()}-{population[0].num}", self._processes_per_population(population))
        except Exception as err:  # noqa: BLE001 - every member's JobReturn carries the failure
            log.exception("population failed")
            for ret in returns:
                ret.status, ret.return_value = JobStatus.FAILED, err
            return returns
        for ret, info in zip(returns, infos):
            ret.status = JobStatus.COMPLETED
            ret.return_value = info.get("mean_accuracy")
        return returns

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        populations = self._plan(job_overrides, initial_job_idx)
        n_proc = min(self.n_jobs, len(populations))
        self._describe(populations, f"{n_proc} local process(es) at a time")
        if self.dry_run:
            log.info("dry run: nothing trained")
            return []
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        global _LAUNCHER
        _LAUNCHER = self
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(n_proc, maxtasksperchild=1) as pool:
            results = pool.map(_run_in_child, populations, chunksize=1)
        by_num = {j.num: r for pop, rets in zip(populations, results) for j, r in zip(pop, rets)}
        return [by_num[initial_job_idx + i] for i in range(len(job_overrides))]


_LAUNCHER = None  # the launcher, inherited by forked pool workers


def _train(members: list, population_id: str, processes: int) -> list[dict]:
    """``run_population`` of the members, split over ``processes`` forked processes when > 1
    (kernel populations: members are independent and trained one after another anyway)."""
    from plasticity_lab.run import run_population

    processes = min(processes, len(members))
    if processes <= 1:
        return run_population(members, population_id=population_id)
    size = math.ceil(len(members) / processes)
    parts = [(members[s : s + size], population_id) for s in range(0, len(members), size)]
    with multiprocessing.get_context("fork").Pool(len(parts)) as pool:
        results = pool.map(_train_part, parts, chunksize=1)
    return [info for infos in results for info in infos]


def _train_part(part) -> list[dict]:
    from plasticity_lab.run import run_population

    members, population_id = part
    return run_population(members, population_id=population_id)


def _run_in_child(population: list[Job]) -> list[JobReturn]:
    """Pool worker: run a population with the launcher (and Hydra's state) inherited through fork."""
    returns = _LAUNCHER(population)
    for ret in returns:  # exceptions and configs cross the process boundary as plain values
        if ret.status == JobStatus.FAILED:
            ret.return_value = RuntimeError(f"{type(ret._return_value).__name__}: {ret._return_value}")
    return returns


def _job_id() -> str:
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:
        return f"local{os.getpid()}"


class PopulationSlurmLauncher(PopulationLauncher):
    """``hydra/launcher=population_slurm``: each population is one SLURM job (submitit), with
    ``cpus_per_task`` cores; a kernel population is trained in that many processes."""

    def _local_processes(self) -> int:
        return 1  # every population is its own SLURM job

    def _processes_per_population(self, population: list[Job]) -> int:
        kernel = all(j.backend == "kernel" for j in population)
        return int(self.queue.get("cpus_per_task") or 1) if kernel else 1

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        populations = self._plan(job_overrides, initial_job_idx)
        self._describe(populations, "one SLURM job each")
        if self.dry_run:
            log.info("dry run: nothing submitted")
            return []
        params = dict(self.queue)
        executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                         slurm_max_num_timeout=params.pop("max_num_timeout", 0))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        state = Singleton.get_state()
        jobs = executor.map_array(self, populations, [state] * len(populations))
        log.info(f"submitted {len(jobs)} SLURM job(s): {', '.join(j.job_id for j in jobs)}")
        by_num = {}
        for pop, job in zip(populations, jobs):
            for j, r in zip(pop, job.results()[0]):
                by_num[j.num] = r
        return [by_num[initial_job_idx + i] for i in range(len(job_overrides))]

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """On preemption/timeout submitit calls this: requeue the same population (runs resume)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
