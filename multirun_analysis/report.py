"""A report folder from any set of runs: report.md with tables and figures embedded.

Layout of the folder (never an existing non-empty folder; default
``reports/<YYYY-MM-DD_HH-MM-SS>``)::

    report.md
    report.html   the same as ONE self-contained file (figures and table files embedded; html.py)
    tables/   summary.{md,tex,csv}, pivot_*.{md,tex,csv}, runtime.*, conditions.csv, runs.csv
    figures/  accuracy.{png,pdf}, <metric>.{png,pdf}, grid_*.*, vs_*.*, grad_covariance.*, runtime.*

What goes in: the summary table (mean per-task accuracy over all tasks, Purice 2025;
last 15% of tasks, Jucas 2025), a pivot table when two keys form a grid
(``tables.is_grid``; or ``rows``/``cols`` are given), the winning configuration as Hydra
overrides, accuracy curves (running window of 5 tasks, mean ± std over seeds), one curve
figure per other metric (per layer where recorded per layer), grid heatmaps for numeric
keys that form a grid and metric-vs-rate plots for numeric swept keys, gradient covariance
heatmaps and the runtime table when runs recorded them.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import plots
from .grid import best
from .html import write_report_html
from .loading import load_runs
from .names import format_value, key_label, metric_label
from .summaries import (condition_keys_of, condition_summaries, resolve_ddof, run_summaries, stat_names,
                        std_convention)
from .tables import is_grid, pivot_table, summary_table

log = logging.getLogger("multirun_analysis")


def check_out(out) -> Path:
    """``out`` as a Path; FileExistsError if it exists and is not an empty folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; reports never overwrite, "
                              "choose another --out")
    return out


def new_report_dir(out=None, base="reports") -> Path:
    """Create the report folder: ``out`` (must not exist or be empty) or a fresh
    ``<base>/<timestamp>`` (suffixed ``-2``, ``-3``, ... if taken)."""
    if out is not None:
        out = check_out(out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for i in itertools.count(1):
        candidate = Path(base) / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


class _Writer:
    def __init__(self, out: Path):
        self.out = out
        self.lines: list[str] = []
        self.files: list[Path] = []
        (out / "tables").mkdir(exist_ok=True)
        (out / "figures").mkdir(exist_ok=True)

    def add(self, *lines: str):
        self.lines.extend(lines)

    def table(self, table, name: str, heading: str):
        stem = self.out / "tables" / name
        stem.with_suffix(".md").write_text(table.to_markdown())
        stem.with_suffix(".tex").write_text(table.to_latex())
        table.to_csv(stem.with_suffix(".csv"))
        self.files += [stem.with_suffix(s) for s in (".md", ".tex", ".csv")]
        self.add(f"### {heading}", "", table.to_markdown(),
                 f"Files: [Markdown](tables/{name}.md), [LaTeX](tables/{name}.tex), [CSV](tables/{name}.csv)", "")

    def figure(self, make, name: str, caption: str):
        """Build a figure with ``make()``; a failure is reported in the report, not raised."""
        try:
            fig = make()
        except Exception as e:  # noqa: BLE001 - one bad figure must not sink the report
            log.warning("figure %s skipped: %s", name, e)
            self.add(f"*{caption}: skipped ({type(e).__name__}: {e}).*", "")
            return
        paths = plots.save_figure(fig, self.out / "figures" / name)
        self.files += paths
        self.add(f"**{caption}**", "", f"![{caption}](figures/{name}.png)", "",
                 f"[PDF](figures/{name}.pdf)", "")


def build_report(paths, out=None, include=("completed",), window: int = 5, last_fraction: float = 0.15,
                 rows: str | None = None, cols: str | None = None, max_curves: int = 10,
                 df: pd.DataFrame | None = None, ddof: int | None = None) -> Path:
    """Load ``paths`` (or use ``df``), write the report folder, return the path of report.md.
    ``ddof``: the std over seeds (None = the runs' paper's convention, summaries.default_ddof)."""
    paths = [str(p) for p in paths]
    if df is None:
        df = load_runs(*paths, include=include)
    ddof = resolve_ddof(df, ddof)
    out = new_report_dir(out)
    w = _Writer(out)
    keys = condition_keys_of(df)
    metrics = sorted(df["metric"].unique().tolist())
    runs = df.drop_duplicates("run_id")
    w.add("# Run report", "",
          f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} by `python -m multirun_analysis` "
          f"from {', '.join(f'`{p}`' for p in paths) or 'a DataFrame'}.", "",
          f"- Runs loaded: {len(runs)} (statuses: {', '.join(df.attrs.get('include', []))}), "
          f"conditions: {runs['condition'].nunique()}, seeds per condition: "
          f"{'/'.join(map(str, sorted(set(runs.groupby('condition').size()))))}",
          f"- Varying settings (define the conditions): "
          f"{', '.join(f'`{k}`' for k in keys) or 'none'}",
          f"- Metrics: {', '.join(f'`{m}`' for m in metrics)}",
          f"- std over seeds: {std_convention(ddof)} ({'as Jucas 2025' if ddof == 0 else 'sample'}; "
          "`--ddof` picks the other)", "")
    excluded = df.attrs.get("excluded", [])
    if excluded:
        w.add(f"## Excluded runs ({len(excluded)})", "", "| run | status | reason |", "|:---|:---|:---|",
              *[f"| `{e['run_id']}` | {e['status']} | {e['reason'].replace('|', '/')} |" for e in excluded], "")
    problems = df.attrs.get("problems", [])
    if problems:
        w.add(f"## Runs loaded with a problem ({len(problems)})", "", "| run | status | problem |", "|:---|:---|:---|",
              *[f"| `{p['run_id']}` | {p['status']} | {p['problem'].replace('|', '/')} |" for p in problems], "")
    constant = df.attrs.get("constant", {})
    if constant:
        w.add('<details markdown="1"><summary>Settings shared by all runs</summary>', "",
              "| key | value |", "|:---|:---|",
              *[f"| `{k}` | `{format_value(tuple(v) if isinstance(v, list) else v)}` |"
                for k, v in constant.items()], "", "</details>", "")

    network_level = set(df.loc[df["layer"] == "", "metric"].unique())
    metric = "accuracy" if "accuracy" in network_level else next(
        (m for m in metrics if m in network_level and not m.startswith("time_")), None)
    stats = list(stat_names(metric, last_fraction)) if metric else []
    if metric:
        w.add("## Tables", "")
        w.table(summary_table(df, metric=metric, last_fraction=last_fraction, ddof=ddof), "summary",
                f"Summary: {metric} (mean over all tasks — Purice 2025; last {100 * last_fraction:g}% of tasks — "
                "Jucas 2025)")
        summary = condition_summaries(df, metric, last_fraction=last_fraction, ddof=ddof)
        summary.to_csv(out / "tables" / "conditions.csv", index=False)
        run_summaries(df, metric, last_fraction=last_fraction).to_csv(out / "tables" / "runs.csv", index=False)
        w.add("Per condition and per run: [conditions.csv](tables/conditions.csv), [runs.csv](tables/runs.csv)", "")
        # Default pivot: the second condition key down, the first (usually the learner) across.
        pivot = (rows, cols) if rows and cols else _default_pivot(df, keys)
        if pivot:
            for stat in stats:
                w.table(pivot_table(df, pivot[0], pivot[1], stat=stat, ddof=ddof), f"pivot_{stat}",
                        f"{stat}: {key_label(pivot[0])} x {key_label(pivot[1])}")
        if runs["condition"].nunique() > 1:
            w.add("## Best configuration", "")
            for stat in stats:
                b = best(df, by=stat, ddof=ddof)
                w.add(f"By `{stat}`: **{b.label}**, {_pm(b.mean, b.std, metric)} over {b.n_seeds} seed(s).", "",
                      "```", b.overrides or "(no overrides: all runs share their settings)", "```", "")

    w.add("## Figures", "")
    if metric:
        summary = condition_summaries(df, metric, last_fraction=last_fraction, ddof=ddof)
        top = summary.sort_values(stats[0], ascending=False)["condition"].head(max_curves).tolist()
        shown = top if summary.shape[0] > max_curves else None
        note = f" (best {max_curves} of {summary.shape[0]} conditions)" if shown else ""
        w.figure(lambda: plots.plot_curves(df, metric, window=window, conditions=shown), metric,
                 f"{metric_label(metric)[0]} per task, running mean over {window} tasks{note}")
        numeric = plots.numeric_keys(df)
        grids = [(x, y) for x, y in itertools.combinations(numeric, 2)
                 if is_grid(df[df[x].notna() & df[y].notna()], y, x)]
        for x, y in grids[:3]:
            sub = df[df[x].notna() & df[y].notna()]
            for stat in stats:
                w.figure(lambda sub=sub, x=x, y=y, stat=stat: plots.plot_grid(sub, x, y, stat=stat),
                         f"grid_{_slug(x)}_{_slug(y)}_{stat}", f"Grid: {stat} over {x} x {y}")
        for x in numeric[:4]:
            values = pd.to_numeric(df[x], errors="coerce").dropna()
            log_x = bool((values > 0).all() and values.max() / values.min() >= 10)
            w.figure(lambda x=x, log_x=log_x: plots.plot_vs(df, x, stat=stats[0], log=log_x),
                     f"vs_{_slug(x)}", f"{stats[0]} vs {x}")
    for m in metrics:
        if m == metric or m.startswith("time_"):
            continue
        layered = (df.loc[df["metric"] == m, "layer"] != "").any()
        w.figure(lambda m=m: plots.plot_curves(df, m, window=window, conditions=None), _slug(m),
                 f"{metric_label(m)[0]} (`{m}`) per task, running mean over {window} tasks"
                 + (", one panel per layer" if layered else ""))
    if plots.grad_covariance(df, max_runs=1):
        w.figure(lambda: plots.plot_grad_covariance(df), "grad_covariance", "Gradient covariance")
    if any(m.startswith("time_") for m in metrics):
        w.add("## Runtime", "")
        w.table(plots.runtime_table(df, ddof), "runtime", "Runtime (Purice 2025 Table 2)")
        w.figure(lambda: plots.plot_runtime(df), "runtime", "Runtime per condition")
    report = out / "report.md"
    report.write_text("\n".join(w.lines) + "\n")
    write_report_html(report)  # report.html: the same as one self-contained file (html.py)
    return report


def _default_pivot(df: pd.DataFrame, keys: list[str]):
    """(rows, cols) of the first grid (``is_grid``) among the condition keys: across, the
    earliest key (usually the learner); down, a key every run has, fewest values first
    (usually the activation). None when no two keys form a grid."""
    runs = df.drop_duplicates("run_id")
    full = sorted((k for k in keys if runs[k].notna().all()), key=lambda k: runs[k].astype(str).nunique())
    for cols in keys:
        for rows in full:
            if rows != cols and is_grid(runs, rows, cols):
                return rows, cols
    return None


def _pm(mean: float, std: float, metric: str) -> str:
    scale, unit = (100, " %") if metric == "accuracy" else (1, "")
    text = f"{mean * scale:.1f}" if unit else f"{mean:.4g}"
    if not np.isnan(std):
        text += f" ± {std * scale:.1f}" if unit else f" ± {std:.4g}"
    return text + unit


def _slug(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)
