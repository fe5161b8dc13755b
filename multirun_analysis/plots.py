"""The papers' figures from a load_runs DataFrame (matplotlib Figure objects, Agg canvas).

- ``plot_curves``: per-task metric, smoothed by a running window of 5 tasks, mean ±
  std band over seeds, one line per condition (Purice 2025: accuracy curves over 3
  seeds). Metrics recorded per layer (effective rank, dead units, weight magnitude)
  get one panel per layer.
- ``plot_grid``: heatmap of a summary statistic over two config keys (e.g.
  ``learner.c_low`` x ``learner.c_high``, Purice 2025's grid search) at the best value
  of the remaining keys.
- ``plot_vs``: a summary statistic against a rate on a log x-axis, one line per
  remaining condition (e.g. CBP's replacement rate, Dohare 2024 / Jucas 2025).
- ``plot_grad_covariance``: heatmaps of ``arrays/grad_covariance.npz`` (cosine
  similarity of per-example gradients, Purice 2025).
- ``runtime_table`` / ``plot_runtime``: metrics named ``time_*`` (seconds), Purice
  2025 Table 2.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no GUI
backend) and written by ``save_figure`` as PNG and PDF through the Agg canvas.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .conditions import display_labels, sort_by_keys
from .loading import load_arrays, run_path, runs_of
from .names import axis_label, key_label, metric_label
from .summaries import condition_keys_of, condition_summaries, parse_stat, resolve_ddof, run_summaries, std_convention
from .tables import Table, _mark_best, pivot_table, stat_label

DPI = 150


def _seaborn():
    import seaborn as sns

    return sns


def new_figure(nrows: int = 1, ncols: int = 1, panel=(6.4, 4.2), **kw):
    """A Figure with an Agg canvas and its axes grid (squeezed like plt.subplots)."""
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save_figure(fig: Figure, stem) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1])
    return paths


def _palette(n: int):
    sns = _seaborn()
    return sns.color_palette("colorblind" if n <= 10 else "husl", max(n, 1))


def layer_sort_key(layer: str):
    """Layers in natural order: 1, 2, ..., 10, then names (``all``)."""
    return (0, int(layer), "") if str(layer).isdigit() else (1, 0, str(layer))


def conditions_info(df: pd.DataFrame) -> pd.DataFrame:
    """One row per condition in display order: condition, label (papers' names), n_seeds."""
    runs = runs_of(df)
    keys = condition_keys_of(df)
    first = runs.drop_duplicates("condition").reset_index(drop=True)
    first = sort_by_keys(first, keys).reset_index(drop=True)
    labels = display_labels(first, keys)
    counts = runs.groupby("condition").size()
    return pd.DataFrame({"condition": first["condition"], "label": labels,
                         "n_seeds": counts.reindex(first["condition"]).to_numpy()})


# ---------------------------------------------------------------------------- curves
def smoothed_curves(df: pd.DataFrame, metric: str = "accuracy", window: int = 5,
                    conditions=None) -> pd.DataFrame:
    """Per condition, layer and task: mean, std (ddof=1) and count over runs of the
    per-run running mean over ``window`` consecutive recorded tasks (trailing window;
    the first tasks average what is there) — Purice 2025's smoothing of 5 tasks."""
    rows = df[df["metric"] == metric]
    if rows.empty:
        raise KeyError(f"no metric {metric!r}; available: {', '.join(sorted(df['metric'].unique()))}")
    if conditions is not None:
        rows = rows[rows["condition"].isin(list(conditions))]
    per_task = (rows.groupby(["condition", "run_id", "layer", "task"], sort=True)["value"].mean()
                .reset_index())
    rolled = per_task.groupby(["run_id", "layer"], sort=False)["value"].rolling(window, min_periods=1).mean()
    per_task["smoothed"] = rolled.reset_index(level=[0, 1], drop=True)
    out = (per_task.groupby(["condition", "layer", "task"], sort=True)["smoothed"]
           .agg(mean="mean", std=lambda s: s.std(ddof=1), n="count").reset_index())
    return out


def plot_curves(df: pd.DataFrame, metric: str = "accuracy", window: int = 5, conditions=None,
                title: str | None = None) -> Figure:
    """Per-task ``metric`` vs task, running mean over ``window`` tasks, mean ± std band over
    seeds, one line per condition; one panel per layer for per-layer metrics."""
    curves = smoothed_curves(df, metric, window, conditions)
    info = conditions_info(df)
    info = info[info["condition"].isin(curves["condition"].unique())]
    layers = sorted(curves["layer"].unique(), key=layer_sort_key)
    ncols = min(len(layers), 4)
    nrows = int(np.ceil(len(layers) / ncols))
    fig, axes = new_figure(nrows, ncols, panel=(6.4 if ncols == 1 else 4.4, 4.2), sharey=True)
    _, _, scale = metric_label(metric)
    colors = dict(zip(info["condition"], _palette(len(info))))
    for i, layer in enumerate(layers):
        ax = axes[i // ncols][i % ncols]
        for cond, label, n in info[["condition", "label", "n_seeds"]].itertuples(index=False):
            c = curves[(curves["condition"] == cond) & (curves["layer"] == layer)]
            if c.empty:
                continue
            x, m, s = c["task"].to_numpy(), c["mean"].to_numpy() * scale, c["std"].to_numpy() * scale
            ax.plot(x, m, color=colors[cond], lw=1.5, label=f"{label} (n={n})")
            if np.isfinite(s).any():
                ax.fill_between(x, m - s, m + s, color=colors[cond], alpha=0.2, lw=0)
        ax.set_xlabel("Task")
        if i % ncols == 0:
            ax.set_ylabel(axis_label(metric))
        if layer != "":
            ax.set_title(f"Layer {layer}" if str(layer).isdigit() else f"Layer: {layer}")
        ax.grid(alpha=0.3)
    for j in range(len(layers), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    seeds = "/".join(str(v) for v in sorted(set(info["n_seeds"])))
    fig.suptitle(title or f"{metric_label(metric)[0]} per task\n(running mean over {window} tasks; "
                          f"mean ± std over {seeds} seeds)", fontsize="medium")
    _legend(fig, axes[0][0])
    return fig


def _legend(fig: Figure, ax) -> None:
    """The axes' legend below the panels, outside them: it never hides a curve (inside, the
    lowest curve's end, where a loss of plasticity shows, is where a legend tends to sit)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    ncols = 1 if max(map(len, labels)) > 45 else min(len(labels), 3)
    fig.legend(handles, labels, fontsize="small", loc="outside lower center", ncols=ncols)
    fig.set_figheight(fig.get_figheight() + 0.2 * int(np.ceil(len(labels) / ncols)))


# ------------------------------------------------------------------------ summaries
def plot_grid(df: pd.DataFrame, x: str, y: str, stat: str = "mean_accuracy", fixed: dict | None = None,
              layer=None) -> Figure:
    """Heatmap of ``stat`` (mean over seeds) over config keys ``x`` and ``y``; where other
    keys vary, each cell is the best of them unless ``fixed`` pins them
    (``fixed={"learner.rho_low": 1e-4}``)."""
    sns = _seaborn()
    for key, value in (fixed or {}).items():
        df = df[df[key] == value]
        if df.empty:
            raise ValueError(f"no runs with {key}={value}")
    table = pivot_table(df, rows=y, cols=x, stat=stat, layer=layer, best="table")
    _, metric, _ = parse_stat(stat)
    fig, axes = new_figure(panel=(1.0 + 0.75 * max(len(table.mean.columns), 4),
                                  1.2 + 0.55 * max(len(table.mean.index), 4)))
    ax = axes[0][0]
    decimals = table.decimals if table.decimals is not None else 3
    sns.heatmap(table.mean.astype(float), annot=True, fmt=f".{decimals}f", cmap="viridis",
                ax=ax, cbar_kws={"label": axis_label(metric)}, annot_kws={"fontsize": "small"},
                mask=table.mean.isna())
    for (r, c) in zip(*np.nonzero(table.is_best.to_numpy())):
        ax.add_patch(_rectangle(c, r))
    ax.invert_yaxis()
    ax.set_xlabel(key_label(x))
    ax.set_ylabel(key_label(y))
    seeds = "/".join(str(int(v)) for v in sorted(set(table.n.stack().dropna())))
    note = " (best over " + ", ".join(k.split(".")[-1] for k in _others(df, (x, y))) + ")" \
        if _others(df, (x, y)) else ""
    pinned = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in (fixed or {}).items())
    fig.suptitle(f"{stat_label(stat)}\nmean over {seeds} seed(s){note}" + (f"; {pinned}" if pinned else ""),
                 fontsize="medium")
    return fig


def _rectangle(col, row):
    from matplotlib.patches import Rectangle

    return Rectangle((col, row), 1, 1, fill=False, edgecolor="red", lw=2)


def _others(df: pd.DataFrame, keys) -> list[str]:
    return [k for k in condition_keys_of(df) if k not in keys and df[k].astype(str).nunique() > 1]


def plot_vs(df: pd.DataFrame, x: str, stat: str = "mean_accuracy", log: bool = True, layer=None) -> Figure:
    """``stat`` (mean ± std over seeds) against numeric key ``x`` (a rate: log axis), one line
    per combination of the other condition keys; conditions without ``x`` (e.g. Backprop
    for a replacement rate) are drawn as dashed horizontal reference lines."""
    kind, metric, fraction = parse_stat(stat)
    summary = condition_summaries(df, metric, layer, fraction)
    if x not in summary.columns:
        raise KeyError(f"{x!r} is not a varying column of these runs")
    _, _, scale = metric_label(metric)
    others = [k for k in condition_keys_of(df) if k != x]
    summary = summary.assign(_line=display_labels(summary, others) if others else "all runs")
    numeric = pd.to_numeric(summary[x], errors="coerce")
    with_x = summary[numeric.notna()].assign(_x=numeric[numeric.notna()])
    without = summary[numeric.isna()]
    fig, axes = new_figure()
    ax = axes[0][0]
    lines = list(dict.fromkeys(summary["_line"]))
    colors = dict(zip(lines, _palette(len(lines))))
    for line in lines:
        part = with_x[with_x["_line"] == line].sort_values("_x")
        if not part.empty:
            n = "/".join(str(v) for v in sorted(set(part["n_seeds"])))
            ax.errorbar(part["_x"], part[stat] * scale, yerr=part[f"{stat}_std"].fillna(0) * scale,
                        marker="o", capsize=3, color=colors[line], label=f"{line} (n={n})")
    for _, row in without.iterrows():
        ax.axhline(row[stat] * scale, ls="--", color=colors[row["_line"]],
                   label=f"{row['_line']} (n={row['n_seeds']})")
    if log and (with_x["_x"] > 0).all() and not with_x.empty:
        ax.set_xscale("log")
    ax.set_xlabel(key_label(x) + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(stat_label(stat))
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax)
    ax.set_title(f"{stat_label(stat)} vs {x.split('.')[-1]}\nmean ± std over seeds", fontsize="medium")
    return fig


# ----------------------------------------------------------------- gradient covariance
def grad_covariance(df: pd.DataFrame, name: str = "grad_covariance", task=None, max_runs: int = 12):
    """[(run_id, label, seed, task, matrix)] for runs that saved ``arrays/<name>.npz``
    (one per condition first, then further seeds), at ``task`` or the last saved task."""
    info = conditions_info(df).set_index("condition")
    runs = runs_of(df)
    runs = runs.assign(_order=runs["condition"].map({c: i for i, c in enumerate(info.index)}))
    runs = runs.assign(_rank=runs.groupby("condition").cumcount()).sort_values(["_rank", "_order"])
    found = []
    for run in runs.itertuples(index=False):
        file = run_path(df, run.run_id) / "arrays" / f"{name}.npz"
        if not file.exists():
            continue
        arrays = {k: v for k, v in load_arrays(file.parent.parent, name).items() if isinstance(k, int)}
        if not arrays:
            continue
        t = task if task is not None else max(arrays)
        if t not in arrays:
            continue
        found.append((run.run_id, info.loc[run.condition, "label"], run.seed, t, arrays[t]))
        if len(found) >= max_runs:
            break
    return found


def plot_grad_covariance(df: pd.DataFrame, name: str = "grad_covariance", task=None,
                         max_runs: int = 12) -> Figure:
    """Heatmaps of the S x S gradient covariance C[i, j] = <g_i, g_j> / (|g_i| |g_j|) of
    per-example gradients saved by the runs (Purice 2025, start of task 700)."""
    found = grad_covariance(df, name, task, max_runs)
    if not found:
        raise FileNotFoundError(f"no run saved arrays/{name}.npz" + (f" with task {task}" if task is not None else ""))
    ncols = min(len(found), 3)
    nrows = int(np.ceil(len(found) / ncols))
    fig, axes = new_figure(nrows, ncols, panel=(4.4, 3.9))
    image = None
    for i, (run_id, label, seed, t, matrix) in enumerate(found):
        ax = axes[i // ncols][i % ncols]
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{label}\nseed {seed}, task {t}", fontsize="small")
        ax.set_xlabel("Example j")
        ax.set_ylabel("Example i")
    for j in range(len(found), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="Cosine similarity of per-example gradients")
    fig.suptitle(f"Gradient covariance ({found[0][4].shape[0]} examples)")
    return fig


# ----------------------------------------------------------------------------- runtime
def time_metric_label(metric: str) -> str:
    """``time_inference_b10`` -> "Inference, batch 10"; ``time_task`` -> "Task"."""
    name = metric[5:] if metric.startswith("time_") else metric
    m = re.fullmatch(r"(.*?)_?b(?:atch)?(\d+)", name)
    if m:
        return f"{m.group(1).replace('_', ' ').capitalize()}, batch {m.group(2)}"
    return name.replace("_", " ").capitalize()


def _time_unit(values) -> tuple[str, float]:
    finite = np.asarray([v for v in values if np.isfinite(v) and v > 0])
    typical = np.median(finite) if finite.size else 1.0
    for unit, factor in (("s", 1.0), ("ms", 1e3), ("µs", 1e6)):
        if typical * factor >= 1:
            return unit, factor
    return "ns", 1e9


def runtime_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Per run and ``time_*`` metric: its mean over tasks (seconds)."""
    metrics = sorted(m for m in df["metric"].unique() if str(m).startswith("time_"))
    if not metrics:
        raise KeyError("no metrics named time_* in these runs")
    info = conditions_info(df).set_index("condition")
    parts = []
    for m in metrics:
        runs = run_summaries(df, m)
        parts.append(pd.DataFrame({"run_id": runs["run_id"], "condition": runs["condition"], "metric": m,
                                   "seconds": runs[f"mean_{m}"]}))
    out = pd.concat(parts, ignore_index=True)
    out["label"] = out["condition"].map(info["label"])
    out["what"] = out["metric"].map(time_metric_label)
    return out


def runtime_table(df: pd.DataFrame, ddof: int | None = None) -> Table:
    """Conditions x ``time_*`` metrics: mean ± std over runs of each run's mean time
    (Purice 2025 Table 2; std: ``ddof``, None = the runs' paper's convention); the fastest
    per column in bold."""
    ddof = resolve_ddof(df, ddof)
    runs = runtime_runs(df)
    unit, factor = _time_unit(runs["seconds"])
    info = conditions_info(df)
    info = info[info["condition"].isin(runs["condition"])]
    metrics = list(dict.fromkeys(runs["metric"]))
    g = runs.groupby(["condition", "metric"])["seconds"]
    cols = [f"{time_metric_label(m)} ({unit})" for m in metrics]
    frame = lambda agg: pd.DataFrame(  # noqa: E731
        {c: [agg.get((cond, m), np.nan) for cond in info["condition"]] for c, m in zip(cols, metrics)},
        index=info["label"].tolist())
    mean = frame((g.mean() * factor).to_dict())
    std = frame((g.std(ddof=ddof) * factor).to_dict())
    n = frame(g.count().to_dict())
    return Table(mean=mean, std=std, n=n, is_best=_mark_best(mean, False, "column"),
                 title=f"Runtime ({unit}): mean ± std ({std_convention(ddof)}) over runs of each run's mean over "
                       "tasks.",
                 row_header="Condition", decimals=None,
                 extra={"Seeds": info["n_seeds"].astype(int).tolist()}, ddof=ddof)


def plot_runtime(df: pd.DataFrame) -> Figure:
    """Grouped bars of the ``time_*`` metrics per condition, mean ± std over runs (log y
    when they span more than two decades)."""
    sns = _seaborn()
    runs = runtime_runs(df)
    unit, factor = _time_unit(runs["seconds"])
    runs = runs.assign(value=runs["seconds"] * factor)
    info = conditions_info(df)
    info = info[info["condition"].isin(runs["condition"])]
    order = info["label"].tolist()
    fig, axes = new_figure(panel=(max(6.4, 1.2 * runs["what"].nunique() + 3), 4.2))
    ax = axes[0][0]
    sns.barplot(data=runs, x="what", y="value", hue="label", hue_order=order, errorbar="sd",
                palette=_palette(len(order)), ax=ax, capsize=0.1)
    values = runs["value"][runs["value"] > 0]
    if len(values) and values.max() / values.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("Measurement")
    ax.set_ylabel(f"Time ({unit})")
    seeds = "/".join(str(v) for v in sorted(set(info["n_seeds"])))
    ax.set_title(f"Runtime: mean ± std over {seeds} runs per condition", fontsize="medium")
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    _legend(fig, ax)
    return fig


def numeric_keys(df: pd.DataFrame) -> list[str]:
    """Condition keys with numeric values (at least two distinct), candidates for plot_grid/plot_vs."""
    runs = runs_of(df)
    out = []
    for k in condition_keys_of(df):
        values = pd.to_numeric(runs[k], errors="coerce")
        if values.notna().any() and values.dropna().nunique() >= 2 and not k.startswith("choice."):
            out.append(k)
    return out


__all__ = ["new_figure", "save_figure", "smoothed_curves", "plot_curves", "plot_grid", "plot_vs",
           "grad_covariance", "plot_grad_covariance", "runtime_runs", "runtime_table", "plot_runtime",
           "numeric_keys", "conditions_info"]
