"""Hydra launchers that pack a sweep into populations (DESIGN, "Sweeps and launchers").

The sweeper hands over the list of jobs. Every job is composed and validated here first
(a bad value anywhere fails before anything runs or is submitted). Each job is then matched
to a folder of the sweep by its composed config, not by its number: a job whose settings a
folder already records goes to that folder (which resumes or is left finished), any other
job to a folder of its own (its job number, or the next free number when that one holds
other settings). So an extended or shrunk sweep re-launched into the same
``hydra.sweep.dir`` keeps every existing run as it is. Jobs whose configs differ only in
vectorisable values (``plasticity_lab.config.VECTORISABLE``) are grouped, each group is cut
into populations of at most ``max_members``, and each population runs as ONE process:
locally ``n_jobs`` at a time (``population``), or as one SLURM job each through submitit
(``population_slurm``). Inside that process every member goes through Hydra's own
``run_job`` to get an ordinary job folder and a JobReturn; then all members train together
with ``run_population``. A local worker dies with its launcher (``PR_SET_PDEATHSIG``). A
population that fails or is refused is reported in one line each, and the command exits
with status 2 once the others have finished.

Populations on the compiled kernel backend (``backend_used == "kernel"``) run their members
one after another, so splitting them loses nothing: locally they are cut small enough that
every one of the ``n_jobs`` processes gets work (``plan_populations``), and a SLURM job with
``cpus_per_task`` > 1 trains its kernel population in that many processes.
"""


import copy
import ctypes
import json
import logging
import math
import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .sweeper import compose_job

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One sweep job: its number, its overrides, its composed config (with the hydra node) and
    the sweep folder it was matched to (``folder``, ``where``: why that one)."""

    num: int
    overrides: list
    config: Any = None
    backend: str = "population"  # the backend that trains it (RunSettings.backend_used)
    folder: str | None = None
    where: str = ""


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


def match_folders(records: list[dict], natural: list[str], existing: dict[str, dict | None]) -> list[tuple[str, str]]:
    """(folder, why) per job: the folder recording the job's settings (``records``: comparable
    configs) among ``existing`` (folder -> recorded settings, None if unreadable), else its
    ``natural`` folder if that records nothing, else the next free number."""
    by_settings: dict[str, list[str]] = {}
    for name, rec in existing.items():
        if rec is not None:
            by_settings.setdefault(json.dumps(rec, sort_keys=True, default=str), []).append(name)
    used = set(existing)
    out = []
    for record, name in zip(records, natural):
        same = by_settings.get(json.dumps(record, sort_keys=True, default=str))
        if same:
            out.append((same.pop(0), "records these settings"))
            continue
        if name in used:
            taken = name
            name = str(next(n for n in range(len(used) + len(records) + 1) if str(n) not in used))
            out.append((name, f"new; folder {taken} records other settings"))
        else:
            out.append((name, "new"))
        used.add(name)
    return out


class PopulationLauncher(Launcher):
    """``hydra/launcher=population``: populations as local processes, ``n_jobs`` at a time."""

    def __init__(self, max_members: int = 16, dry_run: bool = False, n_jobs: int = 0, **queue: Any) -> None:
        from plasticity_lab.hydra_setup import fail

        if max_members < 1:
            fail(f"hydra.launcher.max_members={max_members}: must be >= 1")
        if n_jobs < 0:
            fail(f"hydra.launcher.n_jobs={n_jobs}: must be >= 0 (processes at once; 0 = one per CPU core)")
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
        """Compose and validate every job (``compose_job``), match it to a folder, then pack them;
        raises before anything runs."""
        from plasticity_lab.config import population_key
        from plasticity_lab.run_folder import config_record

        keys, jobs, records = [], [], []
        for i, overrides in enumerate(job_overrides):
            sweep_config, settings = compose_job(self.hydra_context.config_loader, self.config, overrides,
                                                 initial_job_idx + i)
            keys.append(population_key(settings))
            task_cfg = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
            jobs.append(Job(initial_job_idx + i, list(overrides), sweep_config, settings.backend_used))
            records.append(config_record(task_cfg))
        self._assign_folders(jobs, records)
        kernel = [j.backend == "kernel" for j in jobs]
        return [[jobs[i] for i in pop] for pop in plan_populations(keys, self.max_members, kernel,
                                                                      self._local_processes())]

    def _local_processes(self) -> int:
        """Processes that train populations at the same time on this machine (kernel populations are cut to fill them)."""
        return self.n_jobs

    def _processes_per_population(self, population: list[Job]) -> int:
        """Processes one population is trained in (1; a SLURM job's cpus_per_task for the kernel)."""
        return 1

    def _assign_folders(self, jobs: list[Job], records: list[dict]) -> None:
        """Match jobs to the sweep's folders by settings (``match_folders``); the chosen folder
        becomes the job's ``hydra.sweep.subdir``."""
        from plasticity_lab.run_folder import RunFolderError, recorded_config

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        existing: dict[str, dict | None] = {}
        if sweep_dir.is_dir():
            for d in sorted(sweep_dir.iterdir()):
                if d.is_dir() and ((d / "run.json").exists() or (d / ".hydra" / "config.yaml").exists()):
                    try:
                        existing[d.name] = recorded_config(d)
                    except RunFolderError:
                        existing[d.name] = None
        natural = []
        for job in jobs:
            with read_write(job.config), open_dict(job.config):
                job.config.hydra.job.num = job.num
                try:
                    natural.append(str(OmegaConf.select(job.config, "hydra.sweep.subdir")))
                except Exception:  # noqa: BLE001 - e.g. ${hydra.job.id}, known only in the worker
                    natural.append(str(job.num))
        for job, (folder, where) in zip(jobs, match_folders(records, natural, existing)):
            job.folder, job.where = folder, where
            if existing:
                with read_write(job.config), open_dict(job.config):
                    job.config.hydra.sweep.subdir = folder

    def _describe(self, populations: list[list[Job]], where: str) -> None:
        n = sum(len(p) for p in populations)
        log.info(f"population launcher: {n} jobs -> {len(populations)} population(s) ({where}), "
                 f"at most {self.max_members} members each; sweep dir {self.config.hydra.sweep.dir}")
        for p, pop in enumerate(populations):
            log.info(f"  population {p}: {len(pop)} member(s): " + ", ".join(f"#{j.num}" for j in pop))
            for j in pop:
                log.info(f"      #{j.num} : {' '.join(filter_overrides(j.overrides))} -> folder {j.folder} ({j.where})")

    def _dry_run_ends(self, what: str) -> list:
        """After a dry run's plan: the project's sweeper plans every batch and writes nothing; any
        other sweeper (Optuna's) asks its next batches from the results, so the command ends here."""
        if str(OmegaConf.select(self.config, "hydra.sweeper._target_", default="")).endswith("PlasticityLabSweeper"):
            log.info(f"dry run: {what}")
            return []
        log.info(f"dry run: {what}; this was the sweeper's first batch (it chooses the next ones from the "
                 f"results, so a dry run ends here)")
        raise SystemExit(0)

    # ------------------------------------------------------------------ running
    def __call__(self, population: list[Job], singleton_state: dict | None = None) -> list[JobReturn]:
        """Run one population in this process: Hydra job folders first, then lockstep training.

        ``singleton_state`` carries Hydra's global state to a fresh process (SLURM); forked
        local workers inherit it and pass None. A failure or refusal comes back in every
        member's JobReturn as a RuntimeError whose message says what happened.
        """
        from plasticity_lab.config import ConfigError
        from plasticity_lab.objective import of_run
        from plasticity_lab.run import MemberJob
        from plasticity_lab.run_folder import RunFolderError, remove_if_unused

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
                                         list(hc.overrides.task), copy.deepcopy(HydraConfig.instance().cfg)))

            returns.append(run_job(hydra_context=self.hydra_context, task_function=collect, config=sweep_config,
                                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        try:
            _train(members, f"{_job_id()}-{population[0].num}", self._processes_per_population(population))
        except (ConfigError, RunFolderError) as err:
            for m in members:
                remove_if_unused(m.out_dir)
            return _failed(returns, str(err))
        except Exception as err:  # noqa: BLE001 - every member's JobReturn carries the failure
            log.exception("population failed")
            return _failed(returns, f"{type(err).__name__}: {err}; the members keep their checkpoints: re-run "
                                    f"the same command to resume them")
        for ret, member in zip(returns, members):
            ret.status = JobStatus.COMPLETED
            ret.return_value = of_run(member.cfg, member.out_dir)  # optimized_metric (an Optuna sweep's objective)
        return returns

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        populations = self._plan(job_overrides, initial_job_idx)
        n_proc = min(self.n_jobs, len(populations))
        self._describe(populations, f"{n_proc} local process(es) at a time")
        if self.dry_run:
            return self._dry_run_ends("nothing trained")
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        results = _run_local(self, populations, n_proc)
        return _report([j for pop in populations for j in pop], [r for rets in results for r in rets],
                       initial_job_idx, len(job_overrides))


def _failed(returns: list[JobReturn], message: str) -> list[JobReturn]:
    for ret in returns:
        ret.status, ret.return_value = JobStatus.FAILED, RuntimeError(message)
    return returns


def _train(members: list, population_id: str, processes: int) -> list[dict]:
    """``run_population`` of the members, split over ``processes`` forked processes when > 1
    (kernel populations: members are independent and trained one after another anyway)."""
    from plasticity_lab.run import run_population

    processes = min(processes, len(members))
    if processes <= 1:
        return run_population(members, population_id=population_id)
    size = math.ceil(len(members) / processes)
    parts = [members[s : s + size] for s in range(0, len(members), size)]
    infos = []
    for ok, answer in _fork_map(lambda part: run_population(part, population_id=population_id), parts, len(parts)):
        if not ok:
            raise answer
        infos.extend(answer)
    return infos


def _report(jobs: list[Job], returns: list[JobReturn], initial_job_idx: int, n: int) -> list[JobReturn]:
    """The JobReturns in job order; every failure in one line each, then exit status 2."""
    from plasticity_lab.hydra_setup import fail

    by_num = {j.num: r for j, r in zip(jobs, returns)}
    failed: dict[str, list[int]] = {}
    for j, r in zip(jobs, returns):
        if r.status == JobStatus.FAILED:
            failed.setdefault(str(r._return_value), []).append(j.num)
    if failed:
        fail("\n".join(f"job(s) {', '.join(f'#{n}' for n in nums)}: {message}" for message, nums in failed.items()))
    return [by_num[initial_job_idx + i] for i in range(n)]


def _run_local(launcher: PopulationLauncher, populations: list[list[Job]], n_proc: int) -> list[list[JobReturn]]:
    """Each population in a forked process of its own, ``n_proc`` at a time (``_fork_map``)."""

    def run(population: list[Job]) -> list[JobReturn]:
        returns = launcher(population)
        for ret in returns:  # exceptions and configs cross the process boundary as plain values
            if ret.status == JobStatus.FAILED:
                ret.return_value = RuntimeError(str(ret._return_value))
        return returns

    results = []
    for pop, (ok, answer) in zip(populations, _fork_map(run, populations, n_proc)):
        results.append(answer if ok else _failed([JobReturn() for _ in pop], f"{answer}; the members keep their "
                                                 f"checkpoints: re-run the same command to resume them"))
    return results


# ---------------------------------------------------------------------- forked worker processes
def _fork_map(function, items: list, n_proc: int) -> list[tuple[bool, Any]]:
    """(True, function(item)) for each item, each computed in a forked process of its own,
    ``n_proc`` at a time, that dies with this one (``PR_SET_PDEATHSIG``); (False, the exception)
    where it raised, or where the process died without an answer (killed, out of memory): then a
    RuntimeError saying how, instead of waiting for ever as a multiprocessing.Pool does."""
    ctx = multiprocessing.get_context("fork")
    results: dict[int, tuple[bool, Any]] = {}
    pending = list(enumerate(items))
    running: dict[int, tuple[Any, Any]] = {}
    parent = os.getpid()
    while pending or running:
        while pending and len(running) < n_proc:
            i, item = pending.pop(0)
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(function, item, send, parent), daemon=False)
            proc.start()
            send.close()
            running[i] = (proc, receive)
        wait([proc.sentinel for proc, _ in running.values()] + [r for _, r in running.values()])
        for i, (proc, receive) in list(running.items()):
            answer = None
            if receive.poll():
                try:
                    answer = receive.recv()
                except EOFError:
                    pass
            elif proc.is_alive():
                continue
            proc.join()
            receive.close()
            del running[i]
            if answer is None:
                code = proc.exitcode
                how = f"was killed by {signal.Signals(-code).name}" if code and code < 0 else f"exited ({code})"
                answer = (False, RuntimeError(f"the worker process of this population {how} before it finished"))
            results[i] = answer
    return [results[i] for i in range(len(items))]


_PR_SET_PDEATHSIG = 1


def _child(function, item, send, parent: int) -> None:
    """A forked worker: dies with its parent (SIGKILL on its death), sends (ok, answer) back."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent check below is all there is
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    try:
        answer = (True, function(item))
    except Exception as err:  # noqa: BLE001 - the parent decides what a failure means
        answer = (False, err)
    send.send(answer)
    send.close()


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
            return self._dry_run_ends("nothing submitted")
        params = dict(self.queue)
        executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                         slurm_max_num_timeout=params.pop("max_num_timeout", 0))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        state = Singleton.get_state()
        jobs = executor.map_array(self, populations, [state] * len(populations))
        log.info(f"submitted {len(jobs)} SLURM job(s): {', '.join(j.job_id for j in jobs)}")
        returns = []
        for pop, job in zip(populations, jobs):
            ended = _wait_for_result(job)
            try:
                if ended:
                    raise RuntimeError(f"SLURM says {ended}")
                returns.extend(job.results()[0])
            except Exception as err:  # noqa: BLE001 - the job ended without a result
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                returns.extend(_failed([JobReturn() for _ in pop],
                                       f"SLURM job {job.job_id} ended without a result ({first}); its log: "
                                       f"{job.paths.stderr}; the members keep their checkpoints: re-run the same "
                                       f"command to resume them"))
        return _report([j for pop in populations for j in pop], returns, initial_job_idx, len(job_overrides))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """On preemption/timeout submitit calls this: requeue the same population (runs resume)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
          "PREEMPTED", "SPECIAL_EXIT")


def _wait_for_result(job, settle_s: float = 1.5, max_poll_s: float = 30.0) -> str | None:
    """Wait until a submitit job's result file exists (returns None) or SLURM says the job ended
    without one (returns its state): a job killed by a signal, the OOM killer or scancel. Asks
    ``scontrol`` (which works where submitit's ``sacct`` does not: clusters without accounting),
    first every 0.25 s, then less often (at most every ``max_poll_s``). An end is believed after
    ``settle_s`` (a requeued job passes through PREEMPTED), a COMPLETED one after a minute (its
    result file may take that long to show on a network file system)."""
    import subprocess
    import time

    ended_since, poll = None, 0.25
    while not job.paths.result_pickle.exists():
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job.job_id)], capture_output=True, text=True,
                             timeout=60)
        state = next((f.split("=", 1)[1] for f in out.stdout.split() if f.startswith("JobState=")),
                     "no longer known to SLURM" if out.returncode else None)
        if state is not None and (state in _ENDED or out.returncode):
            ended_since = ended_since or time.monotonic()
            if time.monotonic() - ended_since >= (60.0 if state == "COMPLETED" else settle_s):
                return None if job.paths.result_pickle.exists() else f"state {state}"
            poll = 0.25
        else:
            ended_since = None
        time.sleep(poll)
        poll = min(max_poll_s, poll * 1.2)
    return None
