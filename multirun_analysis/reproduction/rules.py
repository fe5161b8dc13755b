"""The rules that turn runs into a verdict on a paper's claim: reproduced / partly / not reproduced.

Each rule is explicit, computed from the runs, and states the numbers behind its verdict. A
condition is a set of runs picked by their settings (``Cond``: Hydra choices and config keys,
never folder names); runs of two conditions with the same seed saw the same task sequence
(SPEC 1), so comparisons are paired by seed.

Per run, from its per-task metric (accuracy, or a regression's error per bin):

- ``mean``: the mean over all tasks [P]; ``last15``: over the last 15% of tasks [J]
  (``summaries.last_count``); ``last10``: over the last 10%;
- the curve: the running mean over a trailing window of ``WINDOW`` tasks (as the figures);
  its best point (accuracy: highest, error: lowest) is the run's peak.

The rules (thresholds are constants of this module; the document prints them):

- ``beats(A, B)``: per common seed d = A - B (for errors and ranks where lower is better, B - A).
  reproduced: mean d > 0, d > 0 in every seed, and mean d larger than both conditions' std over
  seeds (and than ``min_gap`` where a claim says "far"); partly: mean d > 0 otherwise; not
  reproduced: mean d <= 0.
- ``beats_each(A, [B...])``: ``beats`` for each; reproduced if all are, not reproduced if none is
  better at all, partly otherwise (``combine``).
- ``declines(A)``: per seed, how much the end (last 10% of tasks) is worse than the peak:
  accuracy in percentage points, error relative to the peak (lowest error). reproduced: worse by
  more than ``DECLINE_PP`` (``DECLINE_REL`` for error) in every seed; not reproduced: in no seed;
  partly: in some. ``early=True`` also asks that the peak's window starts in the first ``EARLY_FRACTION`` of tasks.
- ``keeps(A)``: the opposite of ``declines``: reproduced when no seed declines, not reproduced
  when every seed does.
- ``rises_and_stays(A)``: per seed, the peak is above the first ``FIRST_FRACTION`` of tasks by more
  than ``DECLINE_PP`` and the end is within ``DECLINE_PP`` of the peak; all seeds / none / some.
- ``close(A, B)``: |mean paired difference| <= ``CLOSE_PP``: reproduced; <= ``CLOSE_PARTLY_PP``:
  partly; else not reproduced.
- ``ordered([A1, A2, ...], direction)``: Spearman's rank correlation between position and the
  conditions' means: exactly ``direction`` (-1: every step worse, +1: every step larger) ->
  reproduced; the same sign -> partly; else not reproduced.
- ``hardly_matters([A1, ...])``: range of the conditions' means <= ``SPREAD_PP``: reproduced;
  <= ``SPREAD_PARTLY_PP``: partly; else not reproduced.

A claim without the runs it needs is "not checked", never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..names import is_missing
from ..summaries import last_count

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_CHECKED = "reproduced", "partly", "not reproduced", "not checked"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_CHECKED)

WINDOW = 5  # tasks in the running mean of a curve (the papers' smoothing [P])
LAST_FRACTION = 0.10  # the "end" of a run for declines / keeps
FIRST_FRACTION = 0.05  # the "start" of a run for rises_and_stays
EARLY_FRACTION = 0.10  # "from the first tasks": the peak within this share of the tasks
DECLINE_PP = 2.0  # accuracy: percentage points between peak and end that count as a decline
DECLINE_REL = 0.10  # error: relative growth from its lowest point that counts as a decline
CLOSE_PP, CLOSE_PARTLY_PP = 1.0, 3.0  # "close": |difference| in percentage points
SPREAD_PP, SPREAD_PARTLY_PP = 2.0, 5.0  # "hardly matters": range of the means in percentage points
FAR_PP = 5.0  # "far below": the smallest gap, percentage points


@dataclass
class Verdict:
    """A verdict and why, with the numbers behind it."""

    verdict: str
    why: str
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: one of {VERDICTS}")


@dataclass(frozen=True)
class Cond:
    """A condition by its settings: ``Cond("ReLU strategy", {"choice.method": "adapted_relu"})``."""

    name: str
    where: tuple  # ((column, value), ...)

    def __init__(self, name: str, where: dict):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "where", tuple(where.items()))


# ------------------------------------------------------------------ data
def _matches(column: pd.Series, value) -> pd.Series:
    if isinstance(value, float):
        numeric = pd.to_numeric(column, errors="coerce")
        return pd.Series(np.isclose(numeric.astype(float), value, rtol=1e-9, atol=0.0), index=column.index)
    return column.map(lambda v: not is_missing(v) and v == value).astype(bool)


def select(df: pd.DataFrame, cond: Cond) -> pd.DataFrame:
    """Rows of the runs whose settings match ``cond`` (a key equal for all runs is looked up in
    ``df.attrs["constant"]``)."""
    mask = pd.Series(True, index=df.index)
    constant = df.attrs.get("constant", {})
    for key, value in cond.where:
        if key in df.columns:
            mask &= _matches(df[key], value)
        elif key in constant:
            if not bool(_matches(pd.Series([constant[key]]), value).iloc[0]):
                return df.iloc[:0]
        else:
            return df.iloc[:0]
    return df[mask]


def series(df: pd.DataFrame, cond: Cond, metric: str = "accuracy") -> dict[int, np.ndarray]:
    """Per seed, the per-task values of ``metric`` in task order (a per-layer metric: the mean over
    its layers). Several runs of one condition with the same seed are a mistake: ValueError."""
    rows = select(df, cond)
    rows = rows[rows["metric"] == metric]
    out = {}
    for (run_id, seed), g in rows.groupby(["run_id", "seed"], sort=True):
        if seed in out:
            raise ValueError(f"{cond.name}: two runs with seed {seed}; a condition must pick one run per seed")
        out[int(seed)] = g.groupby("task", sort=True)["value"].mean().to_numpy(dtype=float)
    return dict(sorted(out.items()))


def running_mean(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Trailing running mean; the first tasks average the ones there are (as ``plots.smoothed_curves``)."""
    return pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()


def stat(values: np.ndarray, name: str) -> float:
    """``mean`` (all tasks), ``last15`` / ``last10`` (the last 15% / 10% of tasks, ``last_count``)."""
    if name == "mean":
        return float(np.mean(values))
    if name.startswith("last"):
        return float(np.mean(values[-last_count(len(values), int(name[4:]) / 100):]))
    raise ValueError(f"unknown statistic {name!r}: mean, last15, last10")


# --------------------------------------------------------------- numbers
@dataclass(frozen=True)
class Scale:
    """How a metric's numbers read: accuracy in % and percentage points (pp); others as they are."""

    metric: str = "accuracy"

    @property
    def percent(self) -> bool:
        return self.metric == "accuracy"

    def value(self, v: float) -> str:
        return f"{100 * v:.1f}%" if self.percent else f"{v:.4g}"

    def diff(self, d: float) -> str:
        return f"{100 * d:+.2f} pp" if self.percent else f"{d:+.4g}"


def _std(values, ddof: int) -> float:
    return float(np.std(values, ddof=ddof)) if len(values) > ddof else float("nan")


def _missing(*conds_and_data) -> Verdict | None:
    for cond, data in conds_and_data:
        if not data:
            return Verdict(NOT_CHECKED, f"no completed runs of {cond.name}")
    return None


# ------------------------------------------------------------------ rules
def beats(df: pd.DataFrame, a: Cond, b: Cond, statistic: str = "mean", metric: str = "accuracy",
          ddof: int = 1, lower_is_better: bool | None = None, min_gap: float = 0.0) -> Verdict:
    """``A beats B`` on ``statistic`` of ``metric`` (module docstring); ``min_gap`` in the metric's units."""
    sa, sb = series(df, a, metric), series(df, b, metric)
    if (missing := _missing((a, sa), (b, sb))):
        return missing
    lower = (metric != "accuracy") if lower_is_better is None else lower_is_better
    va = {s: stat(v, statistic) for s, v in sa.items()}
    vb = {s: stat(v, statistic) for s, v in sb.items()}
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return Verdict(NOT_CHECKED, f"{a.name} and {b.name} share no seed")
    sign = -1.0 if lower else 1.0
    d = np.array([sign * (va[s] - vb[s]) for s in seeds]) + 0.0  # + 0.0: no "-0" in the text
    spread = np.nanmax([_std(list(va.values()), ddof), _std(list(vb.values()), ddof)])
    spread = 0.0 if np.isnan(spread) else float(spread)
    need = max(spread, min_gap)
    mean_d = float(d.mean())
    sc = Scale(metric)
    word = "lower" if lower else "higher"
    numbers = {"a": float(np.mean([va[s] for s in seeds])), "b": float(np.mean([vb[s] for s in seeds])),
               "mean_difference": mean_d, "differences": dict(zip(seeds, d.tolist())), "needed": need}
    text = (f"{a.name} {sc.value(numbers['a'])} vs {b.name} {sc.value(numbers['b'])} ({statistic}, {word} is better): "
            f"difference {sc.diff(mean_d)} over seed(s) {', '.join(map(str, seeds))} "
            f"({', '.join(sc.diff(x) for x in d)})")
    gap = (f"the {sc.diff(min_gap).lstrip('+')} gap a claim of 'far' asks (the seeds' std: "
           f"{sc.diff(spread).lstrip('+')})" if min_gap > spread else f"the seeds' std {sc.diff(spread).lstrip('+')}")
    if len(seeds) == 1:
        gap = "one seed: no spread over seeds" + (f"; the gap {sc.diff(min_gap).lstrip('+')}" if min_gap else "")
    if mean_d > need and (d > 0).all():
        return Verdict(REPRODUCED, f"{text}; better in every seed and by more than {gap}", numbers)
    if mean_d > 0:
        reason = "not in every seed" if not (d > 0).all() else f"by no more than {gap}"
        return Verdict(PARTLY, f"{text}; better on average but {reason}", numbers)
    return Verdict(NOT_REPRODUCED, f"{text}; not better", numbers)


def combine(parts: list[Verdict], joiner: str = "; ") -> Verdict:
    """All reproduced -> reproduced; all not reproduced -> not reproduced; any not checked -> not
    checked; otherwise partly. The parts' reasons are joined."""
    kinds = [p.verdict for p in parts]
    why = joiner.join(f"[{p.verdict}] {p.why}" for p in parts)
    if NOT_CHECKED in kinds:
        verdict = NOT_CHECKED
    elif all(k == REPRODUCED for k in kinds):
        verdict = REPRODUCED
    elif all(k == NOT_REPRODUCED for k in kinds):
        verdict = NOT_REPRODUCED
    else:
        verdict = PARTLY
    return Verdict(verdict, why, {"parts": [p.numbers for p in parts]})


def beats_each(df, a: Cond, others: list[Cond], **kw) -> Verdict:
    return combine([beats(df, a, b, **kw) for b in others])


def _worsening(values: np.ndarray, metric: str) -> tuple[float, int, float]:
    """(how much the end is worse than the peak, the peak's task index, the peak) of one run."""
    curve = running_mean(values)
    end = stat(values, "last10")
    if metric == "accuracy":
        peak_at = int(np.argmax(curve))
        return float(curve[peak_at] - end), peak_at, float(curve[peak_at])
    peak_at = int(np.argmin(curve))
    peak = float(curve[peak_at])
    return (float(end / peak - 1.0) if peak > 0 else float("inf")), peak_at, peak


def _threshold(metric: str) -> tuple[float, str]:
    if metric == "accuracy":
        return DECLINE_PP / 100, f"{DECLINE_PP:g} pp below the best"
    return DECLINE_REL, f"{100 * DECLINE_REL:g}% above the best (lowest)"


def per_seed_decline(df, a: Cond, metric: str, early: bool):
    sa = series(df, a, metric)
    if not sa:
        return None, None
    thr, words = _threshold(metric)
    rows = {}
    for seed, values in sa.items():
        worse, peak_at, peak = _worsening(values, metric)
        in_time = max(0, peak_at - WINDOW + 1) < max(1, round(EARLY_FRACTION * len(values)))  # the window's start
        rows[seed] = {"worse": worse, "peak_task": peak_at, "peak": peak, "tasks": len(values),
                      "declines": worse > thr and (in_time or not early)}
    return rows, words


def _decline_text(a: Cond, rows: dict, metric: str, words: str, early: bool) -> str:
    sc = Scale(metric)
    if metric == "accuracy":
        fmt = lambda w: f"{abs(100 * w):.2f} pp {'below' if w >= 0 else 'above'}"  # noqa: E731
    else:
        fmt = lambda w: f"{abs(100 * w):.1f}% {'above' if w >= 0 else 'below'}"  # noqa: E731
    parts = [f"seed {s}: end {fmt(r['worse'])} the best {sc.value(r['peak'])} (task {r['peak_task']})"
             for s, r in rows.items()]
    when = f", the best window starting within the first {100 * EARLY_FRACTION:g}% of tasks" if early else ""
    return (f"{a.name}, end = last {100 * LAST_FRACTION:g}% of tasks, best = best {WINDOW}-task running mean: "
            f"{'; '.join(parts)} (a decline: the end more than {words}{when})")


def declines(df, a: Cond, metric: str = "accuracy", early: bool = False) -> Verdict:
    """``A loses plasticity``: module docstring."""
    rows, words = per_seed_decline(df, a, metric, early)
    if rows is None:
        return Verdict(NOT_CHECKED, f"no completed runs of {a.name}")
    n = sum(r["declines"] for r in rows.values())
    text = _decline_text(a, rows, metric, words, early)
    verdict = REPRODUCED if n == len(rows) else NOT_REPRODUCED if n == 0 else PARTLY
    return Verdict(verdict, f"{text}: {n} of {len(rows)} seed(s) decline", {"seeds": rows})


def keeps(df, a: Cond, metric: str = "accuracy") -> Verdict:
    """``A keeps plasticity``: no seed declines (``declines``)."""
    rows, words = per_seed_decline(df, a, metric, False)
    if rows is None:
        return Verdict(NOT_CHECKED, f"no completed runs of {a.name}")
    n = sum(r["declines"] for r in rows.values())
    text = _decline_text(a, rows, metric, words, False)
    verdict = REPRODUCED if n == 0 else NOT_REPRODUCED if n == len(rows) else PARTLY
    return Verdict(verdict, f"{text}: {n} of {len(rows)} seed(s) decline", {"seeds": rows})


def rises_and_stays(df, a: Cond) -> Verdict:
    """``A's accuracy rises over the first tasks and stays up`` (accuracy only)."""
    sa = series(df, a, "accuracy")
    if not sa:
        return Verdict(NOT_CHECKED, f"no completed runs of {a.name}")
    thr = DECLINE_PP / 100
    rows, good = {}, 0
    for seed, values in sa.items():
        first = float(np.mean(values[:max(1, round(FIRST_FRACTION * len(values)))]))
        worse, peak_at, peak = _worsening(values, "accuracy")
        ok = (peak - first) > thr and worse <= thr
        good += ok
        rows[seed] = {"first": first, "peak": peak, "peak_task": peak_at, "end_below_peak": worse, "ok": ok}
    parts = [f"seed {s}: first {100 * r['first']:.1f}% -> peak {100 * r['peak']:.1f}% (task {r['peak_task']}) -> "
             f"end {100 * (r['peak'] - r['end_below_peak']):.1f}%" for s, r in rows.items()]
    text = (f"{a.name} (first = first {100 * FIRST_FRACTION:g}% of tasks, end = last {100 * LAST_FRACTION:g}%): "
            f"{'; '.join(parts)}; rises = peak more than {DECLINE_PP:g} pp above the first tasks, stays up = end "
            f"within {DECLINE_PP:g} pp of the peak: {good} of {len(rows)} seed(s) both")
    verdict = REPRODUCED if good == len(rows) else NOT_REPRODUCED if good == 0 else PARTLY
    return Verdict(verdict, text, {"seeds": rows})


def _paired_mean_difference(df, a: Cond, b: Cond, statistic: str, metric: str):
    sa, sb = series(df, a, metric), series(df, b, metric)
    if (missing := _missing((a, sa), (b, sb))):
        return missing, None
    seeds = sorted(set(sa) & set(sb))
    if not seeds:
        return Verdict(NOT_CHECKED, f"{a.name} and {b.name} share no seed"), None
    d = [stat(sa[s], statistic) - stat(sb[s], statistic) for s in seeds]
    return None, (seeds, d, np.mean([stat(sa[s], statistic) for s in seeds]),
                  np.mean([stat(sb[s], statistic) for s in seeds]))


def close(df, a: Cond, b: Cond, statistic: str = "last15") -> Verdict:
    """``A is close to B`` (accuracy): module docstring."""
    missing, found = _paired_mean_difference(df, a, b, statistic, "accuracy")
    if missing:
        return missing
    seeds, d, ma, mb = found
    gap = abs(float(np.mean(d))) * 100
    text = (f"{a.name} {100 * ma:.1f}% vs {b.name} {100 * mb:.1f}% ({statistic}, seeds {', '.join(map(str, seeds))}): "
            f"absolute difference {gap:.2f} pp (close: <= {CLOSE_PP:g} pp; partly: <= {CLOSE_PARTLY_PP:g} pp)")
    verdict = REPRODUCED if gap <= CLOSE_PP else PARTLY if gap <= CLOSE_PARTLY_PP else NOT_REPRODUCED
    return Verdict(verdict, text, {"difference_pp": gap})


def condition_means(df, conds: list[Cond], statistic: str, metric: str = "accuracy") -> dict[str, float]:
    """Mean over seeds of ``statistic`` per condition (conditions without runs left out)."""
    out = {}
    for c in conds:
        s = series(df, c, metric)
        if s:
            out[c.name] = float(np.mean([stat(v, statistic) for v in s.values()]))
    return out


def spearman(values: list[float]) -> float:
    """Spearman's rank correlation between position (1, 2, ...) and ``values`` (average ranks for ties)."""
    ranks = pd.Series(values).rank().to_numpy()
    pos = np.arange(1, len(values) + 1, dtype=float)
    if np.std(ranks) == 0:
        return 0.0
    return float(np.corrcoef(pos, ranks)[0, 1])


def ordered(names: list[str], values: list[float], direction: int, what: str, fmt=lambda v: f"{v:.4g}") -> Verdict:
    """``values`` (in the order of ``names``) change monotonically in ``direction`` (-1 falling, +1 rising)."""
    if len(values) < 2:
        return Verdict(NOT_CHECKED, f"{what}: fewer than two conditions with runs")
    rho = spearman(values)
    shown = ", ".join(f"{n} {fmt(v)}" for n, v in zip(names, values))
    text = f"{what}: {shown}; Spearman's rank correlation with the order {rho:+.2f} (claim: {direction:+d})"
    if abs(rho - direction) < 1e-9:
        return Verdict(REPRODUCED, text + ", every step in the claimed direction", {"spearman": rho})
    if np.sign(rho) == direction:
        return Verdict(PARTLY, text + ", the trend in the claimed direction but not every step", {"spearman": rho})
    return Verdict(NOT_REPRODUCED, text + ", no trend in the claimed direction", {"spearman": rho})


def hardly_matters(df, conds: list[Cond], statistic: str = "last15", what: str = "") -> Verdict:
    """The conditions' means lie within ``SPREAD_PP`` of each other (accuracy)."""
    means = condition_means(df, conds, statistic)
    if len(means) < 2:
        return Verdict(NOT_CHECKED, f"{what}: fewer than two conditions with runs")
    spread = (max(means.values()) - min(means.values())) * 100
    shown = ", ".join(f"{n} {100 * v:.1f}%" for n, v in means.items())
    text = (f"{what}: {shown} ({statistic}); range {spread:.2f} pp (hardly matters: <= {SPREAD_PP:g} pp; "
            f"partly: <= {SPREAD_PARTLY_PP:g} pp)")
    verdict = REPRODUCED if spread <= SPREAD_PP else PARTLY if spread <= SPREAD_PARTLY_PP else NOT_REPRODUCED
    return Verdict(verdict, text, {"range_pp": spread})


def rules_text() -> list[str]:
    """The rules with their thresholds, for the document (from this module's constants)."""
    return [
        f"- **beats** (A beats B): per seed the difference of the statistic (paired: runs with the same seed saw "
        f"the same tasks; for errors and ranks lower is better). *Reproduced*: A better on average, in every seed, "
        f"and by more than both conditions' std over seeds (the paper's std convention) — and, where the claim "
        f"says *far*, by more than {FAR_PP:g} pp. *Partly*: better on average only. *Not reproduced*: not better "
        f"on average. With one seed there is no spread to clear.",
        "- **beats each**: *beats* against each; reproduced if every comparison is, not reproduced if none is "
        "even partly, partly otherwise.",
        f"- **declines** (loses plasticity): per seed, the end (mean of the last {100 * LAST_FRACTION:g}% of tasks) "
        f"against the peak (the best {WINDOW}-task running mean): accuracy more than {DECLINE_PP:g} percentage "
        f"points below it; error more than {100 * DECLINE_REL:g}% above its lowest point. *Reproduced*: every "
        f"seed declines; *not reproduced*: none; *partly*: some. *From the first tasks*: also the best {WINDOW}-task "
        f"window starts within the first {100 * EARLY_FRACTION:g}% of tasks.",
        "- **keeps plasticity**: the opposite of *declines*: reproduced when no seed declines, not reproduced when "
        "every seed does.",
        f"- **rises and stays up**: per seed, the peak more than {DECLINE_PP:g} pp above the first "
        f"{100 * FIRST_FRACTION:g}% of tasks and the end within {DECLINE_PP:g} pp of the peak; every seed / none / "
        "some.",
        f"- **close**: the absolute mean paired difference <= {CLOSE_PP:g} pp reproduced, <= {CLOSE_PARTLY_PP:g} pp "
        "partly, "
        "else not reproduced.",
        "- **ordered** (the deeper, the worse; the larger, the more): Spearman's rank correlation between the "
        "order and the conditions' means: exactly -1 (or +1) reproduced, the same sign partly, else not reproduced.",
        f"- **hardly matters**: the range of the conditions' means <= {SPREAD_PP:g} pp reproduced, <= "
        f"{SPREAD_PARTLY_PP:g} pp partly, else not reproduced.",
        "- A claim whose runs are missing is **not checked**.",
    ]
