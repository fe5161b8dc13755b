"""Experiment trackers: the ``logger`` config group (TensorBoard, Weights & Biases).

A run always writes its own files (run.json, metrics.csv); a logger sends the same rows to a
tracker as well, one logger per member of a population (each member is its own run, in its
own run folder). ``logger=none`` (the default) sends nothing.

- ``logger.tensorboard``: event files written with ``torch.utils.tensorboard.SummaryWriter``
  into ``log_dir`` (relative: inside the run folder, default ``<run>/tensorboard``; absolute:
  ``<log_dir>/<the run folder's path>``). Scalars are tagged by metric (per-layer metrics
  ``<metric>/layer_<l>``), their step is the row's task (``period_error``: its period). The
  Hydra config (resolved, flattened) is written as hyperparameters (HPARAMS tab) and the
  run's tags (method, seed, population) as a text summary. A resumed run reopens the folder
  with ``purge_step`` at its checkpoint's task, so TensorBoard hides what the killed process
  wrote after the checkpoint, and the rows from that task on are written again.
- ``logger.wandb``: one W&B run per member (``reinit="create_new"``: several in one process),
  ``config`` = the resolved Hydra config, tags ``method=...``, ``seed=...``,
  ``population=...`` (plus ``logger.wandb.tags``), per-task rows logged against the ``task``
  step metric (``period_error`` against ``period``), the run's summary (status, mean
  accuracy / error) at the end. ``mode`` offline keeps everything on disk
  (``<run>/wandb/offline-run-*``, upload later with ``wandb sync``). The W&B run id is
  derived from the run folder and its start time, so a resumed run continues the same W&B run.

Rows reach the loggers through the run's recorder (``RunRecorder.attach``): every row a task
adds is forwarded when the task ends (``RunRecorder.flush``); TensorBoard's file is flushed
whenever metrics.csv is written, just before it, so it is never behind that file.
The packages are optional extras (``pip install '.[tensorboard]'``, ``'.[wandb]'``); choosing a
logger whose package is missing is a ConfigError naming the extra, before anything runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .schema import ConfigError, one_of, read, setting

#: The step metric of metrics whose rows are not indexed by task (run.py: ``period_error``'s
#: row task is the period's index).
STEP_OF = {"period_error": "period"}


def _string_list(v):
    ok = isinstance(v, (list, tuple)) and all(isinstance(t, str) and t for t in v)
    return None if ok else "must be a list of non-empty strings"


@dataclass(frozen=True)
class TensorBoardSettings:
    """``logger.tensorboard``: where the event files go."""

    log_dir: str = "tensorboard"  # relative: inside the run folder; absolute: <log_dir>/<run folder path>


@dataclass(frozen=True)
class WandbSettings:
    """``logger.wandb``: the ``wandb.init`` arguments a user chooses."""

    project: str = "plasticity_lab"
    entity: Union[str, None] = None  # W&B user or team; null: the logged-in default
    group: Union[str, None] = None  # W&B run group; null: none
    mode: Union[str, None] = setting(None, one_of("online", "offline", "disabled"))  # null: WANDB_MODE / W&B's default
    dir: Union[str, None] = None  # folder for W&B's local files; null: the run folder (<run>/wandb/)
    tags: Any = setting((), _string_list)  # extra tags, after method=..., seed=..., population=...


#: name -> (settings class, the module it needs, the pyproject extra that installs it)
LOGGERS = {
    "tensorboard": (TensorBoardSettings, "tensorboard", "tensorboard"),
    "wandb": (WandbSettings, "wandb", "wandb"),
}


def parse_loggers(node) -> tuple:
    """The ``logger`` section -> a tuple of (name, settings); ConfigError naming the key (an unknown
    logger or key, a bad value, a package that is not installed)."""
    if node is None:
        return ()
    if not isinstance(node, dict):
        raise ConfigError(f"logger: expected a mapping of logger names to their settings (choose an option of "
                          f"the 'logger' group: none, {', '.join(LOGGERS)}), got {node!r}")
    out = []
    for name, settings in node.items():
        if name not in LOGGERS:
            raise ConfigError(f"logger.{name}: unknown logger; known: {', '.join(LOGGERS)}")
        cls, module, extra = LOGGERS[name]
        if settings is not None and not isinstance(settings, dict):
            raise ConfigError(f"logger.{name}: expected a mapping of its settings, got {settings!r}")
        parsed = cls(**read(cls, settings or {}, f"logger.{name}"))
        if isinstance(parsed, WandbSettings):
            parsed = WandbSettings(**{**parsed.__dict__, "tags": tuple(parsed.tags)})
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger.{name}: needs the {module} package, which is not installed here: "
                              f"pip install '.[{extra}]' in the project (or pip install 'plasticity_lab[{extra}]'), "
                              f"or choose logger=none")
        out.append((name, parsed))
    return tuple(out)


# --------------------------------------------------------------------------- what a logger is told
def run_tags(info: dict, choices: dict) -> dict[str, str]:
    """The run's tags: its method (the ``method`` choice, else the learner's), seed, population id."""
    method = choices.get("method") or choices.get("learner") or "unknown"
    return {"method": str(method), "seed": str(info.get("seed")), "population": str(info.get("population_id"))}


def flat_config(tree, prefix: str = "") -> dict:
    """A nested config as {dotted.key: scalar}: lists and None become text (TensorBoard's
    hyperparameters are scalars)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def _tag(metric: str, layer) -> str:
    return metric if layer in ("", None) else f"{metric}/layer_{layer}"


def _resolved(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


# --------------------------------------------------------------------------- sinks
class TensorBoardSink:
    """One member's TensorBoard event files (module docstring)."""

    def __init__(self, settings: TensorBoardSettings, recorder, member, metric: str):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        out_dir = Path(recorder.out_dir)
        log_dir = Path(settings.log_dir)
        if log_dir.is_absolute():
            log_dir = log_dir / Path(os.path.abspath(out_dir)).relative_to("/")
        else:
            log_dir = out_dir / log_dir
        resumed_at = recorder.info["tasks_completed"] if recorder.info.get("resumes") else None  # its checkpoint's task
        self.writer = SummaryWriter(str(log_dir), purge_step=resumed_at)  # flushed with metrics.csv (flush)
        self.log_dir = log_dir
        if resumed_at is None:
            tags = run_tags(recorder.info, member.choices)
            params = {**flat_config(_resolved(member.cfg)), **{f"run.{k}": v for k, v in tags.items()},
                      "run.member_index": recorder.info.get("member_index")}
            for summary in hparams(params, {metric: 0.0, f"mean_{metric}": 0.0}):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_text("tags", ", ".join(f"{k}={v}" for k, v in tags.items()), 0)
        else:  # rows of the checkpoint's task on were purged above: write them again
            self.log_rows([r for r in recorder.rows if r[0] >= resumed_at])

    def log_rows(self, rows) -> None:
        for task, _step, metric, layer, value in rows:
            self.writer.add_scalar(_tag(metric, layer), float(value), global_step=int(task))

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, status: str, info: dict) -> None:
        step = int(info.get("tasks_completed") or 0)
        for key in ("mean_accuracy", "mean_error"):
            if info.get(key) is not None:
                self.writer.add_scalar(key, float(info[key]), global_step=step)
        self.writer.add_text("status", status, step)
        self.writer.close()


class WandbSink:
    """One member's W&B run (module docstring)."""

    def __init__(self, settings: WandbSettings, recorder, member, metric: str):
        import wandb

        out_dir = Path(os.path.abspath(recorder.out_dir))
        tags = run_tags(recorder.info, member.choices)
        key = f"{out_dir}|{recorder.info.get('start_time')}"
        config = {**_resolved(member.cfg), "run": {**tags, "member_index": recorder.info.get("member_index"),
                                                    "folder": str(out_dir)}}
        self.run = wandb.init(
            project=settings.project, entity=settings.entity, group=settings.group, mode=settings.mode,
            dir=str(settings.dir or out_dir), name=f"{out_dir.parent.name}/{out_dir.name}",
            id=hashlib.sha1(key.encode()).hexdigest()[:16], resume="allow", reinit="create_new",
            config=config, tags=[f"{k}={v}"[:64] for k, v in tags.items()] + list(settings.tags),
            settings=wandb.Settings(console="off", silent=True))
        self.defined: set[str] = set()

    def log_rows(self, rows) -> None:
        groups: dict[tuple[str, int], dict] = {}  # (step metric, its value) -> {tag: value}, in row order
        for task, _step, metric, layer, value in rows:
            axis = STEP_OF.get(metric, "task")
            tag = _tag(metric, layer)
            if tag not in self.defined:
                if axis not in self.defined:
                    self.run.define_metric(axis)
                    self.defined.add(axis)
                self.run.define_metric(tag, step_metric=axis)
                self.defined.add(tag)
            groups.setdefault((axis, int(task)), {})[tag] = float(value)
        for (axis, x), values in groups.items():
            self.run.log({axis: x, **values})

    def finish(self, status: str, info: dict) -> None:
        self.run.summary.update({k: info[k] for k in ("status", "tasks_completed", "mean_accuracy", "mean_error",
                                                      "diverged_at_task") if info.get(k) is not None})
        self.run.finish(exit_code=0 if status in ("completed", "diverged") else 1)


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink}


def attach(recorders, members, settings) -> None:
    """Open each member's loggers (``settings[k].logger``) and attach them to its recorder."""
    for recorder, member, s in zip(recorders, members, settings):
        if s.logger:
            metric = "error" if s.dataset.is_regression else "accuracy"
            recorder.attach([SINKS[name](sink_settings, recorder, member, metric) for name, sink_settings in s.logger])
