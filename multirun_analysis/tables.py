"""Tables of summary statistics as Markdown, LaTeX and CSV, best entries marked.

``summary_table``: one row per condition, one column per statistic (mean per-task
accuracy over all tasks [Purice 2025], last 15% [Jucas 2025 Table 1]); the best
condition of each column is marked.
``pivot_table``: one statistic, rows = values of one key, columns = values of
another (e.g. rows ``choice.activation``, columns ``choice.learner``); where other
keys vary too, each cell shows the best of them (named in ``Table.chosen``); the best
cell of each row is marked, as in Jucas 2025 Table 1.
``is_grid``: whether two keys vary independently, i.e. whether their pivot says more
than the summary table (reports pivot and draw heatmaps only then).

Cells read "mean ± std" over seeds, accuracy in percent with one decimal; the std
is left out when there is one seed. Which std: ``ddof`` (None = the convention of the
paper the runs reproduce, ``summaries.default_ddof``: population std for Jucas's
presets, sample std otherwise); the title says which (and the CSV's ``ddof`` column).
Bold marks the best in Markdown and LaTeX, the ``is_best`` column in CSV.
"""

from __future__ import annotations

import io
import itertools
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from .conditions import display_labels, short_names, sort_by_keys
from .names import format_value, is_missing, key_label, metric_label, value_label
from .summaries import (condition_keys_of, condition_summaries, higher_is_better, parse_stat, resolve_ddof,
                        stat_names, std_convention)

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
_LATEX_GREEK = {"ρ": r"$\rho$", "λ": r"$\lambda$", "α": r"$\alpha$", "η": r"$\eta$", "σ": r"$\sigma$",
                "±": r"$\pm$", "–": "--"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for k, v in _LATEX_GREEK.items():
        out = out.replace(k, v)
    return out


def stat_label(stat: str) -> str:
    """Header of a statistic column, with its unit."""
    kind, metric, fraction = parse_stat(stat)
    label, unit, _ = metric_label(metric)
    what = "mean over all tasks" if kind == "mean" else f"last {100 * fraction:g}% of tasks"
    return f"{label}, {what}" + (f" ({unit})" if unit else "")


@dataclass
class Table:
    """A rendered-ready table: means, stds and seed counts per cell, best cells marked."""

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    is_best: pd.DataFrame
    title: str
    row_header: str
    decimals: int | None = 1  # None: 4 significant digits
    extra: dict[str, list] = field(default_factory=dict)  # text columns appended (e.g. Seeds)
    chosen: pd.DataFrame | None = None  # pivot tables: condition shown in each cell
    notes: list[str] = field(default_factory=list)
    ddof: int | None = None  # the std's delta degrees of freedom (0 population, 1 sample)

    # ------------------------------------------------------------------ cells
    def _num(self, x: float) -> str:
        return f"{x:.{self.decimals}f}" if self.decimals is not None else f"{x:.4g}"

    def _typical_n(self) -> int | None:
        counts = Counter(int(v) for v in self.n.to_numpy().ravel() if not is_missing(v) and v > 0)
        return counts.most_common(1)[0][0] if counts else None

    def cell(self, r, c, pm: str = "±") -> str:
        m, s, n = self.mean.loc[r, c], self.std.loc[r, c], self.n.loc[r, c]
        if is_missing(m):
            return "–"
        text = self._num(m)
        if not is_missing(s):
            text += f" {pm} {self._num(s)}"
        typical = self._typical_n()
        if not self.extra and typical is not None and not is_missing(n) and int(n) != typical:
            text += f" (n={int(n)})"
        return text

    def text(self, pm: str = "±") -> pd.DataFrame:
        """The cells as strings (no marking)."""
        return pd.DataFrame([[self.cell(r, c, pm) for c in self.mean.columns] for r in self.mean.index],
                            index=self.mean.index, columns=self.mean.columns)

    # -------------------------------------------------------------- rendering
    def _caption(self) -> str:
        return " ".join([self.title, *self.notes]).strip()

    def to_markdown(self) -> str:
        header = [self.row_header, *map(str, self.mean.columns), *self.extra]
        lines = [f"**{self.title}**", ""] if self.title else []
        lines += ["| " + " | ".join(header) + " |",
                  "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
        text = self.text()
        for i, r in enumerate(self.mean.index):
            cells = [f"**{text.loc[r, c]}**" if self.is_best.loc[r, c] else text.loc[r, c]
                     for c in self.mean.columns]
            cells += [str(v[i]) for v in self.extra.values()]
            lines.append("| " + " | ".join([str(r), *cells]).replace("\n", " ") + " |")
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        ncols = len(self.mean.columns) + len(self.extra)
        lines = [
            "% generated by multirun_analysis; needs \\usepackage{booktabs}",
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{latex_escape(self._caption())}}}",
            f"\\begin{{tabular}}{{l{'r' * ncols}}}",
            "\\toprule",
            " & ".join(latex_escape(h) for h in [self.row_header, *map(str, self.mean.columns), *self.extra])
            + " \\\\",
            "\\midrule",
        ]
        text = self.text(pm="$\\pm$")
        for i, r in enumerate(self.mean.index):
            cells = []
            for c in self.mean.columns:
                t = text.loc[r, c].replace("–", "--")
                cells.append(f"\\textbf{{{t}}}" if self.is_best.loc[r, c] else t)
            cells += [latex_escape(v[i]) for v in self.extra.values()]
            lines.append(" & ".join([latex_escape(r), *cells]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"

    def to_frame(self) -> pd.DataFrame:
        """Long format: row, column, mean, std, ddof, n_seeds, text, is_best (and condition)."""
        text = self.text()
        records = []
        for r in self.mean.index:
            for c in self.mean.columns:
                rec = {"row": r, "column": c, "mean": self.mean.loc[r, c], "std": self.std.loc[r, c],
                       "ddof": self.ddof, "n_seeds": self.n.loc[r, c], "text": text.loc[r, c],
                       "is_best": bool(self.is_best.loc[r, c])}
                if self.chosen is not None:
                    rec["condition"] = self.chosen.loc[r, c]
                records.append(rec)
        return pd.DataFrame(records)

    def to_csv(self, path=None) -> str:
        """CSV of ``to_frame()`` (written to ``path`` when given); returns the text."""
        buf = io.StringIO()
        self.to_frame().to_csv(buf, index=False)
        if path is not None:
            with open(path, "w", newline="") as f:
                f.write(buf.getvalue())
        return buf.getvalue()

    def __str__(self) -> str:
        return self.to_markdown()


def _mark_best(mean: pd.DataFrame, maximize: bool, best: str | None) -> pd.DataFrame:
    marks = pd.DataFrame(False, index=mean.index, columns=mean.columns)
    if best is None or mean.isna().all().all():
        return marks
    values = mean.astype(float)
    if best == "row":
        target = values.max(axis=1) if maximize else values.min(axis=1)
        return values.eq(target, axis=0) & values.notna()
    if best == "column":
        target = values.max(axis=0) if maximize else values.min(axis=0)
        return values.eq(target, axis=1) & values.notna()
    if best == "table":
        target = values.max().max() if maximize else values.min().min()
        return values.eq(target) & values.notna()
    raise ValueError(f"best must be 'row', 'column', 'table' or None, not {best!r}")


def _scale(metric: str) -> tuple[float, int | None]:
    _, unit, scale = metric_label(metric)
    return scale, (1 if unit == "%" else None)


def summary_table(df: pd.DataFrame, stats=None, metric: str = "accuracy", layer=None,
                  last_fraction: float = 0.15, ddof: int | None = None, maximize: bool | None = None,
                  best: str | None = "column") -> Table:
    """Conditions x statistics (default: mean over all tasks [Purice 2025] and last
    15% [Jucas 2025]), mean ± std over seeds (``ddof``: None = the runs' paper's
    convention), best per column marked."""
    ddof = resolve_ddof(df, ddof)
    summary = condition_summaries(df, metric, layer, last_fraction, ddof)
    stats = list(stats or stat_names(metric, last_fraction))
    scale, decimals = _scale(metric)
    labels = display_labels(summary, condition_keys_of(df))
    labels = _dedupe(labels, summary["condition"].tolist())
    columns = [stat_label(s) for s in stats]
    mean = pd.DataFrame({c: summary[s].to_numpy() * scale for c, s in zip(columns, stats)}, index=labels)
    std = pd.DataFrame({c: summary[f"{s}_std"].to_numpy() * scale for c, s in zip(columns, stats)}, index=labels)
    n = pd.DataFrame({c: summary["n_seeds"].to_numpy() for c in columns}, index=labels)
    maximize = higher_is_better(metric) if maximize is None else maximize
    seeds = sorted(set(summary["n_seeds"]))
    title = (f"{metric_label(metric)[0]}: mean ± std ({std_convention(ddof)}) over {'/'.join(map(str, seeds))} "
             "seed(s) per condition.")
    return Table(mean=mean, std=std, n=n, is_best=_mark_best(mean, maximize, best), title=title,
                 row_header="Condition", decimals=decimals,
                 extra={"Seeds": summary["n_seeds"].astype(int).tolist()}, ddof=ddof)


def _dedupe(labels: list[str], conditions: list[str]) -> list[str]:
    counts = Counter(labels)
    return [lab if counts[lab] == 1 else f"{lab} [{cond}]" for lab, cond in zip(labels, conditions)]


def pivot_table(df: pd.DataFrame, rows: str, cols: str, stat: str = "last15", layer=None,
                ddof: int | None = None, maximize: bool | None = None, best: str | None = "row") -> Table:
    """One statistic over two keys: rows = values of ``rows``, columns = values of ``cols``.

    Where other condition keys vary as well, each cell holds the best condition among
    them (``Table.chosen`` names it, a note says so). Best cell per row marked. std:
    ``ddof`` (None = the runs' paper's convention, summaries.default_ddof).
    """
    kind, metric, fraction = parse_stat(stat)
    ddof = resolve_ddof(df, ddof)
    summary = condition_summaries(df, metric, layer, fraction, ddof)
    for key in (rows, cols):
        if key not in summary.columns:
            raise KeyError(f"{key!r} is not a column of these runs; try one of "
                           f"{', '.join(c for c in summary.columns if '.' in c)}")
    maximize = higher_is_better(metric) if maximize is None else maximize
    keys = condition_keys_of(df)
    others = [k for k in keys if k not in (rows, cols)]
    summary = summary.assign(_r=summary[rows].map(value_text), _c=summary[cols].map(value_text))
    ordered = summary.sort_values(stat, ascending=not maximize, na_position="last", kind="stable")
    cells = ordered.drop_duplicates(["_r", "_c"], keep="first")
    row_order = [value_text(v) for v in _ordered_values(summary, rows)]
    col_order = [value_text(v) for v in _ordered_values(summary, cols)]
    scale, decimals = _scale(metric)
    pivot = lambda col: cells.pivot(index="_r", columns="_c", values=col).reindex(  # noqa: E731
        index=row_order, columns=col_order)
    mean = pivot(stat).astype(float) * scale
    std = pivot(f"{stat}_std").astype(float) * scale
    n = pivot("n_seeds")
    chosen = pivot("condition")
    label = lambda key, v: "—" if is_missing(v) else value_label(key, v)  # noqa: E731
    row_labels = [label(rows, v) for v in _ordered_values(summary, rows)]
    col_labels = [label(cols, v) for v in _ordered_values(summary, cols)]
    for frame in (mean, std, n, chosen):
        frame.index, frame.columns = row_labels, col_labels
    notes = []
    if others:
        names = ", ".join(short_names(others).values())
        notes.append(f"Each cell: best over {names} ({'highest' if maximize else 'lowest'} {stat}).")
    seeds = sorted(set(int(v) for v in n.to_numpy().ravel() if not is_missing(v)))
    title = (f"{stat_label(stat)}: mean ± std ({std_convention(ddof)}) over {'/'.join(map(str, seeds))} seed(s); "
             f"rows {key_label(rows)}, columns {key_label(cols)}.")
    return Table(mean=mean, std=std, n=n, is_best=_mark_best(mean, maximize, best), title=title,
                 row_header=key_label(rows), decimals=decimals, chosen=chosen, notes=notes, ddof=ddof)


def is_grid(df: pd.DataFrame, rows: str, cols: str) -> bool:
    """True when ``rows`` and ``cols`` vary independently: two values of each occur in all
    four combinations somewhere (a 2 x 2 sub-grid). A pivot of keys that only vary together
    (the method and learner of a ``method`` sweep: a diagonal) or side by side (one learner's
    strategies next to the others' "—") would be the summary table's rows rearranged."""
    runs = df.drop_duplicates("run_id")
    columns = {}
    for r, c in zip(runs[rows].map(value_text), runs[cols].map(value_text)):
        columns.setdefault(r, set()).add(c)
    return any(len(a & b) >= 2 for a, b in itertools.combinations(columns.values(), 2))


def value_text(value) -> str:
    return "—" if is_missing(value) else format_value(value)


def _ordered_values(summary: pd.DataFrame, key: str) -> list:
    seen, out = set(), []
    for v in sort_by_keys(summary, [key])[key]:
        t = value_text(v)
        if t not in seen:
            seen.add(t)
            out.append(v)
    return out
