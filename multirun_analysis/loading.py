"""Find run folders and load them into one tidy pandas DataFrame.

A run folder is any folder (at any depth under the given paths) that contains
``run.json``; next to it are ``.hydra/config.yaml`` (the composed config),
``.hydra/hydra.yaml``, ``metrics.csv`` (``task,step,metric,layer,value``) and
optionally ``arrays/<name>.npz``. A run's settings are read from its
``.hydra/config.yaml`` and ``run.json``, never from folder names.

``load_runs`` returns one row per (run, task, metric, layer). See its docstring for
the columns and for the ``df.attrs`` it fills in.

Every metrics.csv is checked before it is used (``read_metrics``): the header, that every
line is complete, that task and step are integers and every value a number, that every
metric name is one a run writes, that no row repeats, and that the tasks it holds are
those run.json promises. A run whose file fails is excluded with the reason; the file of
an unfinished run cut mid-line (a partial copy of a running run) loses only that line, and
the run is listed in ``df.attrs["problems"]``. Two runs with identical settings (seed included) are one run
twice: the later one is excluded, so no seed counts twice. Nothing is dropped silently.
"""

from __future__ import annotations

import io
import json
import logging
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .conditions import choose_condition_keys, condition_labels, is_seed_like
from .names import is_missing

log = logging.getLogger("multirun_analysis")

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
STATUSES = ("running", "completed", "failed", "diverged")
METRIC_COLUMNS = ["task", "step", "metric", "layer", "value"]
#: Columns that describe one row of metrics.csv; every other column is run-level.
ROW_COLUMNS = tuple(METRIC_COLUMNS)
CHOICE_PREFIX = "choice."
HEADER = ",".join(METRIC_COLUMNS)
#: Every metric name a run writes (plasticity_lab/probes/__init__.py has their meaning); a test
#: checks this against the names real runs write.
KNOWN_METRICS = re.compile(
    r"accuracy|loss|error|period_error|units_reset|units_rescaled_(low|high)"
    r"|rank|effective_rank|approximate_rank|abs_approximate_rank|stable_rank"
    r"|dead_units|dead_fraction|dormant_ratio|feature_norm|weight_magnitude|weight_norm"
    r"|utility_(mean|median|min|max)|grad_rank|grad_cosine_mean|past_task_accuracy_(\d+|mean)"
    r"|time_(inference|update)_b\d+|wall_time_task|probe_time"
)
#: The per-task metric whose rows say which tasks a run completed (image / regression datasets).
TASK_METRICS = ("accuracy", "error")


class NoRunsError(ValueError):
    """A path holds no run folders, or every run found was excluded."""


class DamagedMetrics(ValueError):
    """A metrics.csv that cannot be trusted; the message says what is wrong."""


# --------------------------------------------------------------------------- YAML
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML loader that, like OmegaConf, reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _read_yaml(path: Path):
    with open(path, "rb") as f:
        return yaml.load(f, Loader=_Loader)


def _resolve_interpolations(cfg: dict) -> dict:
    """Resolve OmegaConf ``${...}`` interpolations (Hydra saves config.yaml unresolved).

    Interpolations that cannot be resolved outside the training process (``${hydra:...}``,
    custom resolvers) are kept as their literal text.
    """
    from omegaconf import OmegaConf

    conf = OmegaConf.create(cfg)
    try:
        return OmegaConf.to_container(conf, resolve=True)
    except Exception:  # noqa: BLE001 - fall back leaf by leaf
        pass
    flat = flatten(cfg)
    out = {}
    for key, value in flat.items():
        if isinstance(value, str) and "${" in value:
            try:
                value = OmegaConf.to_container(
                    OmegaConf.create({"v": OmegaConf.select(conf, key, throw_on_resolution_failure=True)}),
                    resolve=True,
                )["v"]
            except Exception:  # noqa: BLE001
                pass
        out[key] = value
    return unflatten(out)


# ----------------------------------------------------------------- config values
def _freeze(value):
    """Hashable form of a config value: lists -> tuples, dicts -> sorted item tuples."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def flatten(cfg: dict, prefix: str = "") -> dict:
    """Nested dict -> {dotted.key: value}; lists become tuples."""
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = _freeze(value)
    return out


def unflatten(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = list(value) if isinstance(value, tuple) else value
    return out


# ---------------------------------------------------------------------- finding
def find_run_dirs(*paths) -> list[Path]:
    """Every run folder (a folder containing ``run.json``, or a ``metrics.csv`` whose run.json
    is missing, reported later) under ``paths``, sorted.

    Raises NoRunsError naming the first path that does not exist or holds no run.
    """
    if not paths:
        raise NoRunsError("no paths given")
    found: dict[str, Path] = {}
    for p in paths:
        p = Path(p)
        if p.is_file() and p.name == RUN_FILE:
            p = p.parent
        if not p.exists():
            raise NoRunsError(f"{p}: no such file or directory")
        n = 0
        for dirpath, dirnames, filenames in os.walk(p):
            if RUN_FILE in filenames or METRICS_FILE in filenames:
                found.setdefault(os.path.realpath(dirpath), Path(dirpath))
                n += 1
                dirnames[:] = []  # a run folder holds no further runs
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if n == 0:
            raise NoRunsError(
                f"{p}: no runs found (a run folder contains {RUN_FILE}; "
                "point at a Hydra output or multirun folder)"
            )
    return sorted(found.values(), key=lambda q: str(q))


def _common_root(dirs: list[Path]) -> Path:
    absolute = [d.resolve() for d in dirs]
    root = Path(os.path.commonpath([str(a) for a in absolute]))
    if any(a == root for a in absolute):
        root = root.parent
    return root


# ---------------------------------------------------------------------- one run
@dataclass
class RunRecord:
    """What one run folder says about itself (run.json + .hydra), before its metrics."""

    path: Path
    run_id: str
    status: str
    info: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # flattened, dotted keys
    choices: dict = field(default_factory=dict)
    problem: str | None = None  # why it cannot be loaded at all

    @property
    def seed(self):
        seed = self.info.get("seed", self.config.get("seed"))
        return seed if isinstance(seed, numbers.Integral) else np.nan


def read_run(path: Path, run_id: str | None = None) -> RunRecord:
    """Read run.json, .hydra/config.yaml and the Hydra choices of one run folder."""
    path = Path(path)
    rec = RunRecord(path=path, run_id=run_id or path.name, status="unknown")
    if not (path / RUN_FILE).exists():
        rec.problem = f"{RUN_FILE} missing (a partial copy?): the run's status and provenance are unknown"
        return rec
    try:
        with open(path / RUN_FILE, "rb") as f:
            rec.info = json.load(f)
        if not isinstance(rec.info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        rec.status, rec.problem = "unreadable", f"{RUN_FILE} unreadable: {e}"
        return rec
    rec.status = str(rec.info.get("status", "unknown"))
    hydra_dir = path / ".hydra"
    try:
        cfg = _read_yaml(hydra_dir / "config.yaml") or {}
        if not isinstance(cfg, dict):
            raise ValueError("not a mapping")
    except (OSError, yaml.YAMLError, ValueError) as e:
        rec.problem = f".hydra/config.yaml unreadable: {e}"
        return rec
    if "${" in json.dumps(cfg, default=str):
        cfg = _resolve_interpolations(cfg)
    rec.config = flatten(cfg)
    choices = rec.info.get("choices")
    if not isinstance(choices, dict):
        try:
            hydra_cfg = _read_yaml(hydra_dir / "hydra.yaml") or {}
            choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {}) or {}
        except (OSError, yaml.YAMLError, AttributeError):
            choices = {}
    rec.choices = {
        str(k): (str(v) if v is not None and not isinstance(v, str) else v)
        for k, v in choices.items()
        if not str(k).startswith("hydra/") and str(k) != "hydra"
    }
    return rec


def read_metrics(path: Path, metrics=None, info: dict | None = None) -> tuple[pd.DataFrame, str | None]:
    """Read and check one metrics.csv (C parser); ``info``: the run's run.json.

    Returns the rows (only ``metrics`` when given) and a note when the file of an unfinished
    run was cut mid-line (its last, incomplete line is dropped; a finished run's is damaged). Raises DamagedMetrics when the file cannot be
    trusted (see the module docstring), FileNotFoundError when there is none.
    """
    data = Path(path).read_bytes()
    note = None
    if not data.strip():
        raise DamagedMetrics("empty file")
    header = data.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    if header != HEADER:
        raise DamagedMetrics(f"header is {header[:80]!r}, expected {HEADER!r}")
    if not data.endswith(b"\n"):
        if (info or {}).get("status") in ("completed", "diverged"):
            raise DamagedMetrics("ends mid-line although run.json says the run finished (a partial copy?)")
        cut = data.rfind(b"\n") + 1
        note = f"{METRICS_FILE} ends mid-line (a partial copy?): its last line {data[cut:][:60]!r} is dropped"
        data = data[:cut]
    try:
        frame = pd.read_csv(io.BytesIO(data), engine="c", dtype={"metric": str, "layer": str},
                            keep_default_na=False, na_values={"value": ["nan", "NaN", "-nan"]})
    except (ValueError, pd.errors.ParserError) as e:
        raise DamagedMetrics(str(e).strip().splitlines()[-1]) from None
    _check_rows(frame, info or {})
    if metrics is not None:
        frame = frame[frame["metric"].isin(metrics)]
    return frame, note


def _check_rows(frame: pd.DataFrame, info: dict) -> None:
    """Types, names, repeats, and the tasks present against run.json (raises DamagedMetrics)."""
    for col, kind in (("task", "i"), ("step", "i"), ("value", "f")):
        if frame[col].dtype.kind not in (kind, "i"):
            bad = pd.to_numeric(frame[col], errors="coerce").isna() & (frame[col].astype(str) != "nan")
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise DamagedMetrics(f"line {row + 2}: {col} {str(frame[col].iloc[row])!r} is not "
                                 f"{'an integer' if kind == 'i' else 'a number'}")
    unknown = sorted(m for m in frame["metric"].unique() if not KNOWN_METRICS.fullmatch(str(m)))
    if unknown:
        raise DamagedMetrics(f"unknown metric name(s) {unknown[:5]}")
    if frame.duplicated(["task", "metric", "layer"]).any():
        row = frame[frame.duplicated(["task", "metric", "layer"])].iloc[0]
        raise DamagedMetrics(f"repeated row for task {row['task']}, metric {row['metric']} {row['layer']}".rstrip())
    main = next((m for m in TASK_METRICS if (frame["metric"] == m).any()), None)
    if main is None:
        return
    rows = frame[frame["metric"] == main]
    tasks = np.sort(rows["task"].to_numpy())
    n = len(tasks)
    if n and (tasks != np.arange(n)).any():
        raise DamagedMetrics(f"the {main} rows are not tasks 0..{n - 1} in order of completion")
    status, done = info.get("status"), info.get("tasks_completed")
    diverged = info.get("diverged_at_task")
    if status == "completed" and isinstance(info.get("num_tasks"), int) and n != info["num_tasks"]:
        raise DamagedMetrics(f"holds {n} task(s) of {main}, but run.json says the run completed "
                             f"{info['num_tasks']} (a partial copy?)")
    if status == "diverged" and isinstance(diverged, int) and n not in (diverged, diverged + 1):
        raise DamagedMetrics(f"holds {n} task(s) of {main}, but run.json says the run diverged in task {diverged}")
    if status in ("running", "failed") and isinstance(done, int) and n < done:
        raise DamagedMetrics(f"holds {n} task(s) of {main}, but run.json says {done} were completed "
                             f"(a partial copy?)")
    finite = np.isfinite(rows["value"].to_numpy())
    if status == "diverged":
        finite |= rows["task"].to_numpy() == diverged
    if not finite.all():
        task = int(rows["task"].to_numpy()[~finite][0])
        raise DamagedMetrics(f"{main} of task {task} is not a finite number (run.json status {status})")


def load_arrays(run_path, name: str) -> dict:
    """Arrays saved by a run as ``arrays/<name>.npz``, keyed by task number.

    Keys ``task_<t>`` become the integer ``t``; other keys are kept as they are.
    ``run_path`` may be a run folder or a run_id of a DataFrame from load_runs
    combined with its ``df.attrs["root"]`` by the caller.
    """
    file = Path(run_path) / "arrays" / (name if name.endswith(".npz") else f"{name}.npz")
    with np.load(file, allow_pickle=False) as npz:
        out = {}
        for key in npz.files:
            m = re.fullmatch(r"task_(\d+)", key)
            out[int(m.group(1)) if m else key] = npz[key]
    return dict(sorted(out.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])))


# ------------------------------------------------------------------------- table
def _normalise_include(include) -> tuple[str, ...]:
    if include is None:
        return ("completed",)
    if isinstance(include, str):
        include = (include,)
    include = tuple(include)
    if "all" in include:
        return STATUSES + tuple(s for s in include if s not in STATUSES and s != "all")
    return include


def _column(values: list) -> pd.Series | np.ndarray:
    """A run-level column with a sensible dtype: Int64 for integer keys with gaps."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if present and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in present):
        if len(present) == len(values):
            return np.array(values, dtype=np.int64)
        return pd.array([pd.NA if is_missing(v) else int(v) for v in values], dtype="Int64")
    if present and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    arr = np.empty(len(values), dtype=object)
    arr[:] = [np.nan if v is None else v for v in values]
    return arr


def run_table(records: list[RunRecord], ignore=()) -> tuple[pd.DataFrame, dict]:
    """One row per run: run_id, status, seed, choice.*, varying config keys, condition.

    Returns the table and a dict of facts for ``df.attrs`` (varying, constant,
    condition_keys).
    """
    ignore = set(ignore)
    missing = object()
    keys = sorted({k for r in records for k in r.config} - {"seed"} - ignore)
    varying, constant = [], {}
    for k in keys:
        vals = {r.config.get(k, missing) for r in records}
        if len(vals) > 1:
            varying.append(k)
        else:
            v = next(iter(vals))
            constant[k] = list(v) if isinstance(v, tuple) else v
    groups = sorted({g for r in records for g in r.choices} - {g for g in ignore})
    data: dict = {
        "run_id": [r.run_id for r in records],
        "status": [r.status for r in records],
        "seed": _column([r.seed for r in records]),
    }
    for g in groups:
        data[CHOICE_PREFIX + g] = _column([r.choices.get(g) for r in records])
    for k in varying:
        data[k] = _column([r.config.get(k) for r in records])
    table = pd.DataFrame(data)
    candidates = [CHOICE_PREFIX + g for g in groups] + varying
    candidates = [c for c in candidates if not is_seed_like(c)]
    cond_keys = choose_condition_keys(table, candidates)
    table.insert(1, "condition", condition_labels(table, cond_keys))
    facts = {
        "varying": varying,
        "constant": constant,
        "condition_keys": cond_keys,
        "choice_columns": [CHOICE_PREFIX + g for g in groups],
    }
    return table, facts


def load_runs(*paths, include=("completed",), metrics=None, ignore=()) -> pd.DataFrame:
    """Load every run under ``paths`` into one tidy DataFrame.

    One row per (run, task, metric, layer), with columns

    - ``run_id``: the run folder relative to the common parent of all runs found
      (``df.attrs["root"]``); ``root / run_id`` is the folder.
    - ``condition``: readable label built from the config keys and Hydra choices that
      vary across the loaded runs, seed and seed-like keys (``*seed*``) excepted, and
      only those not already implied by another (``learner=cbp`` implies
      ``learner.name=cbp``). The seeds of one condition share the label.
    - ``seed``, ``status``, then ``task, step, metric, layer, value`` as in
      metrics.csv; ``layer`` is a string, ``""`` for network-level metrics.
    - ``choice.<group>``: every Hydra group choice (``hydra/*`` groups left out).
    - the run's config keys, dotted (``learner.replacement_rate``), only those whose
      values vary across the loaded runs (seed excluded); lists become tuples, keys a
      run does not have are missing (NaN/NA).

    Parameters
    ----------
    include : statuses to load ("completed", "running", "failed", "diverged", or
        "all"). Other runs are excluded, logged as a warning, and listed in
        ``df.attrs["excluded"]`` (dicts with run_id, path, status, reason), as are runs
        whose files are damaged or missing and repeats of a run (``read_metrics``).
        Runs loaded with a file cut mid-line are listed in ``df.attrs["problems"]``
        (dicts with run_id, path, status, problem).
    metrics : names of metrics to keep (default: all).
    ignore : config keys (or Hydra groups) to leave out of columns and conditions.

    ``df.attrs`` also holds ``root``, ``varying`` (config keys), ``constant``
    (config keys with one value across runs and that value), ``condition_keys`` and
    ``n_runs``. Raises NoRunsError when a path holds no runs or every run was excluded.
    """
    include = _normalise_include(include)
    metrics = [metrics] if isinstance(metrics, str) else metrics
    dirs = find_run_dirs(*paths)
    root = _common_root(dirs)
    records: list[RunRecord] = []
    frames: list[pd.DataFrame] = []
    excluded: list[dict] = []

    def exclude(rec: RunRecord, reason: str):
        excluded.append({"run_id": rec.run_id, "path": str(rec.path), "status": rec.status, "reason": reason})

    problems: list[dict] = []
    loaded: list[tuple[RunRecord, pd.DataFrame, str | None]] = []
    for d in dirs:
        rec = read_run(d, Path(os.path.relpath(d.resolve(), root)).as_posix())
        if rec.problem:
            exclude(rec, rec.problem)
            continue
        if rec.status not in include:
            reason = f"status {rec.status}"
            if rec.info.get("error"):
                reason += f": {str(rec.info['error']).strip().splitlines()[-1][:200]}"
            elif rec.info.get("diverged_at_task") is not None:
                reason += f" at task {rec.info['diverged_at_task']}"
            exclude(rec, reason)
            continue
        try:
            frame, note = read_metrics(d / METRICS_FILE, metrics, rec.info)
        except FileNotFoundError:
            exclude(rec, f"no {METRICS_FILE}")
            continue
        except DamagedMetrics as e:
            exclude(rec, f"{METRICS_FILE} damaged: {e}")
            continue
        loaded.append((rec, frame, note))

    kept: dict = {}  # settings (seed included) -> the one run kept: finished before unfinished, then path order
    rank = {"completed": 3, "diverged": 2, "running": 1, "failed": 0}
    for rec, frame, note in sorted(loaded, key=lambda x: rank.get(x[0].status, -1), reverse=True):
        settings = _freeze(rec.config)
        if settings in kept:
            exclude(rec, f"same settings (seed included) as {kept[settings]}: the same run twice")
            continue
        kept[settings] = rec.run_id
    for rec, frame, note in loaded:
        if kept.get(_freeze(rec.config)) != rec.run_id:
            continue
        if note:
            problems.append({"run_id": rec.run_id, "path": str(rec.path), "status": rec.status, "problem": note})
        records.append(rec)
        frames.append(frame)

    for e in excluded:
        if e["reason"].startswith((f"{METRICS_FILE} damaged", f"{RUN_FILE} ", "same settings", ".hydra")):
            log.warning("run %s excluded: %s", e["run_id"], e["reason"])
    for p in problems:
        log.warning("run %s: %s", p["run_id"], p["problem"])
    if excluded:
        by_status: dict[str, int] = {}
        for e in excluded:
            by_status[e["status"]] = by_status.get(e["status"], 0) + 1
        shown = ", ".join(e["run_id"] for e in excluded[:10]) + (" ..." if len(excluded) > 10 else "")
        log.warning(
            "excluded %d of %d runs (%s): %s; pass include=... to load them",
            len(excluded), len(dirs), ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())), shown,
        )
    if not records:
        statuses = sorted({e["status"] for e in excluded})
        raise NoRunsError(
            f"all {len(excluded)} runs under {', '.join(map(str, paths))} were excluded "
            f"(statuses: {', '.join(statuses)}; loading {', '.join(include)}); "
            "include other statuses to load them"
        )

    runs, facts = run_table(records, ignore)
    lengths = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
    metrics_df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    expanded = runs.take(np.repeat(np.arange(len(runs)), lengths)).reset_index(drop=True)
    layer = metrics_df["layer"].fillna("").astype(str)
    front = ["run_id", "condition", "seed", "status"]
    df = pd.concat(
        [
            expanded[front],
            metrics_df[["task", "step", "metric"]].reset_index(drop=True),
            layer.rename("layer").reset_index(drop=True),
            metrics_df["value"].astype(float).reset_index(drop=True),
            expanded.drop(columns=front),
        ],
        axis=1,
    )
    for col in ("task", "step"):
        if df[col].dtype.kind == "f" and df[col].notna().all() and (df[col] % 1 == 0).all():
            df[col] = df[col].astype(np.int64)
    df.attrs.update(
        root=str(root),
        n_runs=len(records),
        include=list(include),
        excluded=excluded,
        problems=problems,
        **facts,
    )
    return df


def runs_of(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run (the run-level columns of a load_runs DataFrame)."""
    cols = [c for c in df.columns if c not in ROW_COLUMNS]
    return df.loc[~df["run_id"].duplicated(), cols].reset_index(drop=True)


def run_path(df: pd.DataFrame, run_id: str) -> Path:
    """The folder of ``run_id`` (needs ``df.attrs["root"]`` from load_runs)."""
    return Path(df.attrs["root"]) / run_id
