"""The papers' summary statistics, per run and per condition.

- Purice 2025 (TU Delft BSc thesis, "Maintaining Plasticity for Deep Continual
  Learning: Activation Function-Adapted Parameter Resetting Approaches"): the mean
  per-task accuracy over ALL tasks of a run, reported as mean and std over seeds
  (3 seeds in the thesis).
- Jucas 2025 (TU Delft, "Layerwise Perspective into Continual Backpropagation"),
  Table 1: "last 15%": per run, the mean per-task accuracy over the last 15% of its
  tasks; then mean ± std over runs, in percent with one decimal.

Both are computed by ``run_summaries`` (one row per run) and aggregated by
``condition_summaries`` (one row per condition). Conventions, stated once:

- Tasks are the tasks present in the run's metrics.csv (a completed run has all of
  them); several rows of one task and metric are averaged first.
- The last-15% window holds ``last_count(T) = max(1, floor(0.15 * T))`` tasks, the
  rule of Jucas's table script (``int(T * 0.15)``): 165 of 1,100 tasks, 75 of 500.
- std over runs: ``ddof=None`` (the default everywhere) picks the convention of the
  paper whose runs these are (``default_ddof``): the population std (``ddof=0``,
  numpy's default) when every run comes from one of Jucas's presets
  (``experiment=jucas/...``), as his table script (``np.nanstd``); otherwise the sample
  std (``ddof=1``), our reading of Purice's "mean ± std over 3 seeds" (the thesis does
  not say which; its code logs no table). Pass ``ddof=0`` or ``1`` for the other one.
  With one seed the sample std is NaN (a blank in tables). Tables state the one used
  (``std_convention``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from .conditions import choose_condition_keys, is_seed_like, sort_by_keys
from .loading import ROW_COLUMNS, runs_of

RUN_COLUMNS = ("run_id", "condition", "seed", "status")
EXPERIMENT_CHOICE = "choice.experiment"
POPULATION_STD_PRESETS = "jucas/"  # [J]'s table: numpy's population std over seeds (SPEC 5)


def default_ddof(df: pd.DataFrame) -> int:
    """The std convention of the paper the runs reproduce: 0 (population std, as Jucas 2025's table
    script) when every run's Hydra ``experiment`` choice is one of his presets (``jucas/...``),
    else 1 (sample std, our reading of Purice 2025's "mean ± std over 3 seeds")."""
    if EXPERIMENT_CHOICE not in df.columns:
        return 1
    experiments = df[EXPERIMENT_CHOICE].unique()
    jucas = [isinstance(e, str) and e.startswith(POPULATION_STD_PRESETS) for e in experiments]
    return 0 if len(jucas) and all(jucas) else 1


def std_convention(ddof: int) -> str:
    """How a table names its std: ``"population std, ddof=0"`` / ``"sample std, ddof=1"``."""
    return {0: "population std, ddof=0", 1: "sample std, ddof=1"}.get(ddof, f"std with ddof={ddof}")


def resolve_ddof(df: pd.DataFrame, ddof: int | None) -> int:
    """``ddof``, or the runs' paper's convention (``default_ddof``) when it is None."""
    return default_ddof(df) if ddof is None else int(ddof)


def last_count(n_tasks: int, fraction: float = 0.15) -> int:
    """How many final tasks the "last 15%" statistic averages [Jucas 2025]:
    ``max(1, floor(fraction * n_tasks))`` (a 1e-9 tolerance keeps 0.15 * 1100 at 165)."""
    return max(1, math.floor(fraction * n_tasks + 1e-9))


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}"


def stat_names(metric: str = "accuracy", last_fraction: float = 0.15) -> tuple[str, str]:
    """Column names of the two statistics: ``("mean_accuracy", "last15")`` for accuracy,
    ``("mean_loss", "last15_loss")`` for another metric."""
    last = f"last{_pct(last_fraction)}"
    return f"mean_{metric}", (last if metric == "accuracy" else f"{last}_{metric}")


def parse_stat(name: str) -> tuple[str, str, float]:
    """``"mean_accuracy"`` -> ("mean", "accuracy", 0.15); ``"last10_loss"`` -> ("last", "loss", 0.10)."""
    m = re.fullmatch(r"last(\d+(?:\.\d+)?)(?:_(.+))?", name)
    if m:
        return "last", m.group(2) or "accuracy", float(m.group(1)) / 100
    m = re.fullmatch(r"mean_(.+)", name)
    if m:
        return "mean", m.group(1), 0.15
    raise ValueError(f"unknown statistic {name!r}: use 'mean_<metric>' (e.g. mean_accuracy) or "
                     "'last<percent>[_<metric>]' (e.g. last15)")


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics are maximised; loss, error, time and dead units minimised."""
    low = ("loss", "error", "dead", "dormant")
    return not (metric.startswith("time_") or any(w in metric for w in low))


def metric_rows(df: pd.DataFrame, metric: str = "accuracy", layer=None) -> pd.DataFrame:
    """Rows of one metric (and one layer). ``layer=None`` picks the network-level rows,
    or the only layer there is."""
    rows = df[df["metric"] == metric]
    if rows.empty:
        available = sorted(df["metric"].unique().tolist())
        raise KeyError(f"no metric {metric!r} in these runs; available: {', '.join(available)}")
    if layer is None:
        layers = rows["layer"].unique().tolist()
        if "" in layers:
            layer = ""
        elif len(layers) == 1:
            layer = layers[0]
        else:
            raise ValueError(f"metric {metric!r} is recorded per layer ({', '.join(map(str, layers))}); "
                             "pass layer=...")
    rows = rows[rows["layer"] == str(layer)]
    return rows


def condition_keys_of(df: pd.DataFrame) -> list[str]:
    """The condition keys of a load_runs frame (from df.attrs, else inferred from its columns)."""
    keys = df.attrs.get("condition_keys")
    if keys is not None and all(k in df.columns for k in keys):
        return list(keys)
    runs = runs_of(df) if "task" in df.columns else df.drop_duplicates("run_id")
    candidates = [c for c in runs.columns if c not in RUN_COLUMNS and c not in ROW_COLUMNS
                  and not is_seed_like(c) and c in df.columns]
    return choose_condition_keys(runs, candidates)


def run_summaries(df: pd.DataFrame, metric: str = "accuracy", layer=None,
                  last_fraction: float = 0.15) -> pd.DataFrame:
    """One row per run: its run-level columns, ``n_tasks``, the mean of the per-task
    ``metric`` over all tasks [Purice 2025] and over the last ``last_fraction`` of tasks
    [Jucas 2025] (columns named by ``stat_names``)."""
    mean_name, last_name = stat_names(metric, last_fraction)
    rows = metric_rows(df, metric, layer)
    per_task = rows.groupby(["run_id", "task"], sort=True)["value"].mean().reset_index()
    by_run = per_task.groupby("run_id", sort=False)
    n = by_run["task"].transform("size").to_numpy()
    from_end = by_run.cumcount(ascending=False).to_numpy()
    k = np.maximum(1, np.floor(last_fraction * n + 1e-9))
    last = per_task[from_end < k].groupby("run_id")["value"].mean()
    out = runs_of(df).set_index("run_id")
    out = out.loc[out.index.intersection(per_task["run_id"].unique(), sort=False)]
    out["n_tasks"] = by_run.size()
    out[mean_name] = by_run["value"].mean()
    out[last_name] = last
    out = out.reset_index()
    out.attrs = dict(df.attrs)
    return out


def condition_summaries(df: pd.DataFrame, metric: str = "accuracy", layer=None,
                        last_fraction: float = 0.15, ddof: int | None = None) -> pd.DataFrame:
    """One row per condition: its settings, ``n_seeds`` (runs), ``seeds``, and for each
    statistic of ``run_summaries`` its mean over runs and ``<stat>_std`` (``ddof``: None =
    the runs' paper's convention, ``default_ddof``; the sample std is NaN with one seed),
    and ``std_ddof``, the convention used — Purice 2025 (all tasks), Jucas 2025 (last 15%).
    Values are in the metric's own units (accuracy as a fraction); tables scale them."""
    ddof = resolve_ddof(df, ddof)
    runs = run_summaries(df, metric, layer, last_fraction)
    stats = list(stat_names(metric, last_fraction))
    keys = [c for c in runs.columns
            if c not in (*RUN_COLUMNS, "n_tasks", *stats) and not is_seed_like(c)]
    g = runs.groupby("condition", sort=False)
    out = g[keys].first() if keys else pd.DataFrame(index=g.size().index)
    out["n_seeds"] = g.size()
    out["seeds"] = g["seed"].agg(lambda s: tuple(int(v) for v in sorted(s.dropna())))
    out["n_tasks"] = g["n_tasks"].max()
    for s in stats:
        out[s] = g[s].mean()
        out[f"{s}_std"] = g[s].std(ddof=ddof)
    out["std_ddof"] = ddof
    out = out.reset_index()
    out = sort_by_keys(out, condition_keys_of(df)).reset_index(drop=True)
    out.attrs = dict(df.attrs)
    out.attrs["metric"] = metric
    out.attrs["stats"] = stats
    out.attrs["ddof"] = ddof
    return out
