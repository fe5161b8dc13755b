"""Grid search: rank the conditions of a sweep and render the winner as Hydra overrides.

The winner is the condition with the best mean over seeds of a summary statistic:
``mean_accuracy`` (mean per-task accuracy over all tasks, Purice 2025 — the
criterion of its c_low/c_high/rho grid) or ``last15`` (last 15% of tasks, Jucas
2025). Its settings come out as overrides ready to paste::

    python train.py learner=adapted learner.c_low=-0.5 learner.c_high=0.5 learner.rho_low=0.0001
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field

import pandas as pd

from .conditions import CHOICE_PREFIX, display_labels
from .names import is_missing
from .summaries import condition_keys_of, condition_summaries, higher_is_better, parse_stat

_PLAIN = re.compile(r"[A-Za-z_][\w./-]*")
_LOOKS_TYPED = re.compile(r"[-+]?(\d[\d_]*\.?\d*([eE][-+]?\d+)?|\.\d+)|true|false|null|none|nan|inf",
                          re.IGNORECASE)


def hydra_value(value) -> str:
    """A value as Hydra's override grammar reads it back: 0.0001, 1e-05, true, null,
    [relu,tanh], 'quoted text' where needed."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.fullmatch(text) and not _LOOKS_TYPED.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(values: dict) -> str:
    """``{"choice.learner": "cbp", "learner.replacement_rate": 1e-4}`` ->
    ``"learner=cbp learner.replacement_rate=0.0001"`` (missing values left out)."""
    parts = []
    for key, value in values.items():
        if is_missing(value):
            continue
        if key.startswith(CHOICE_PREFIX):
            parts.append(f"{key[len(CHOICE_PREFIX):]}={value}")
        else:
            parts.append(f"{key}={hydra_value(value)}")
    return " ".join(parts)


@dataclass
class Best:
    """The winning condition of a sweep."""

    by: str
    condition: str
    label: str
    mean: float
    std: float
    n_seeds: int
    values: dict
    overrides: str
    ranking: pd.DataFrame = field(repr=False)

    def __str__(self) -> str:
        _, metric, _ = parse_stat(self.by)
        pct = metric == "accuracy"
        num = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.4g}")
        std = "" if is_missing(self.std) else f" ± {num(self.std)}"
        return (f"best by {self.by}: {self.label} [{self.condition}]\n"
                f"  {self.by} = {num(self.mean)}{std}{' %' if pct else ''} over {self.n_seeds} seed(s)\n"
                f"  overrides: {self.overrides}")


def ranking(df: pd.DataFrame, by: str = "mean_accuracy", layer=None, ddof: int | None = None,
            maximize: bool | None = None) -> pd.DataFrame:
    """condition_summaries sorted best first by the statistic ``by`` (std: ``ddof``, None = the runs'
    paper's convention, summaries.default_ddof)."""
    kind, metric, fraction = parse_stat(by)
    summary = condition_summaries(df, metric, layer, fraction, ddof)
    maximize = higher_is_better(metric) if maximize is None else maximize
    return summary.sort_values(by, ascending=not maximize, na_position="last", kind="stable").reset_index(drop=True)


def best(df: pd.DataFrame, by: str = "mean_accuracy", keys=None, layer=None, ddof: int | None = None,
         maximize: bool | None = None) -> Best:
    """The winning configuration of a sweep by ``by`` ("mean_accuracy", "last15",
    "mean_<metric>", "last<pct>[_<metric>]"); ties go to the first condition in the
    condition order.

    ``keys``: the settings to render as overrides (default: the condition keys, i.e.
    the swept config keys and Hydra choices).
    """
    table = ranking(df, by, layer, ddof, maximize)
    if table[by].isna().all():
        raise ValueError(f"no finite {by} to rank")
    top = table.iloc[0]
    keys = list(keys) if keys is not None else condition_keys_of(df)
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise KeyError(f"unknown keys {missing}; columns: {', '.join(c for c in table.columns if '.' in c)}")
    values = {k: _python(top[k]) for k in keys}
    return Best(
        by=by,
        condition=str(top["condition"]),
        label=display_labels(table.iloc[[0]], condition_keys_of(df))[0],
        mean=float(top[by]),
        std=float(top[f"{by}_std"]),
        n_seeds=int(top["n_seeds"]),
        values=values,
        overrides=to_overrides(values),
        ranking=table,
    )


def _python(value):
    """numpy scalars -> Python scalars (so ints stay ints in overrides)."""
    if hasattr(value, "item") and not isinstance(value, (tuple, list, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value
