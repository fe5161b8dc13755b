"""Conditions: which varying settings tell runs apart, and readable labels for them.

A condition is a set of runs that differ only in their seed. Its label is built
from the config keys and Hydra choices that vary across the loaded runs, minus the
ones implied by others: ``learner=cbp`` already says ``learner.name=cbp`` and the
learner's default ``replacement_rate``, so the label is ``learner=cbp`` unless the
rate itself was swept.
"""

from __future__ import annotations

import numbers

import pandas as pd

from .names import LEARNER_ORDER, format_value, is_missing

CHOICE_PREFIX = "choice."
#: Hydra groups first in labels, in this order; then others; ``experiment`` last.
PREFERRED_CHOICES = ["learner", "activation", "reset_strategy", "network_depth", "network",
                     "optimizer", "dataset", "probes"]
LAST_CHOICES = ["experiment"]
PREFERRED_PREFIXES = ["learner.", "optimizer.", "network.", "dataset."]
#: Within a prefix, keys in the papers' order (Dohare 2024, Purice 2025), then alphabetical.
KEY_ORDER = ["name", "replacement_rate", "maturity_threshold", "decay_rate", "util_type", "c_low", "c_high",
             "rho_low", "rho_high", "weight_decay", "sigma", "step_size", "depth", "width", "activation"]
_MISSING = "\x00missing"


def is_seed_like(key: str) -> bool:
    """Keys named like a seed (``seed``, ``dataset.shuffle_seed``) never split conditions."""
    return "seed" in key.split(".")[-1].lower()


def _order(candidates: list[str]) -> list[str]:
    def rank(key: str):
        if key.startswith(CHOICE_PREFIX):
            group = key[len(CHOICE_PREFIX):]
            if group in PREFERRED_CHOICES:
                return (0, PREFERRED_CHOICES.index(group), group)
            return (2 if group in LAST_CHOICES else 1, 0, group)
        last = key.split(".")[-1]
        within = (KEY_ORDER.index(last) if last in KEY_ORDER else len(KEY_ORDER), key)
        for i, prefix in enumerate(PREFERRED_PREFIXES):
            if key.startswith(prefix):
                return (3, i, within)
        return (3, len(PREFERRED_PREFIXES), within)

    return sorted(candidates, key=rank)


def _text(value) -> str:
    return _MISSING if is_missing(value) else format_value(value)


def choose_condition_keys(table: pd.DataFrame, candidates: list[str]) -> list[str]:
    """The varying columns of a one-row-per-run table that define conditions.

    Greedy, in a fixed order (Hydra choices first): a column is kept when it varies
    and is not a function of the columns kept so far.
    """
    chosen: list[str] = []
    texts: dict[str, pd.Series] = {}
    for col in _order([c for c in candidates if c in table.columns]):
        texts[col] = table[col].map(_text)
        if texts[col].nunique() <= 1:
            continue
        if chosen:
            frame = pd.DataFrame({k: texts[k] for k in chosen + [col]})
            if frame.groupby(chosen, sort=False)[col].nunique().max() <= 1:
                continue
        chosen.append(col)
    return chosen


def short_names(keys: list[str]) -> dict[str, str]:
    """Shortest unambiguous names: ``choice.learner`` -> ``learner``,
    ``learner.replacement_rate`` -> ``replacement_rate``, ``learner.name`` -> ``learner``."""
    choice_names = {k[len(CHOICE_PREFIX):] for k in keys if k.startswith(CHOICE_PREFIX)}
    config = [k for k in keys if not k.startswith(CHOICE_PREFIX)]
    names = {}
    for key in keys:
        if key.startswith(CHOICE_PREFIX):
            names[key] = key[len(CHOICE_PREFIX):]
            continue
        parts = key.split(".")
        if parts[-1] == "name" and len(parts) > 1:
            parts = parts[:-1]
        names[key] = key
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            clash = cand in choice_names or any(
                o != key and (o == cand or o.endswith("." + cand)) for o in config
            )
            if not clash:
                names[key] = cand
                break
    return names


def condition_labels(table: pd.DataFrame, keys: list[str]) -> list[str]:
    """``"learner=cbp, replacement_rate=0.0001"`` per row; keys a run lacks are left out."""
    if not keys:
        return ["all runs"] * len(table)
    names = short_names(keys)
    out = []
    for row in table[keys].itertuples(index=False, name=None):
        parts = [f"{names[k]}={format_value(v)}" for k, v in zip(keys, row) if not is_missing(v)]
        out.append(", ".join(parts) if parts else "default")
    return out


def value_sort_key(key: str, value):
    """Sort order of values: missing first, learners in the papers' order, numbers, text."""
    if is_missing(value):
        return (0, 0, "")
    if key.split(".")[-1] in ("learner", "name") and value in LEARNER_ORDER:
        return (1, LEARNER_ORDER.index(value), "")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return (2, float(value), "")
    return (3, 0, format_value(value))


def sort_by_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows of ``frame`` ordered by ``keys`` with value_sort_key."""
    keys = [k for k in keys if k in frame.columns]
    if not keys or frame.empty:
        return frame
    order = sorted(
        range(len(frame)),
        key=lambda i: tuple(value_sort_key(k, frame[k].iloc[i]) for k in keys),
    )
    return frame.iloc[order]


def display_labels(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """Legend/table labels with the papers' names, one per row of ``frame``.

    ``learner`` becomes "Backprop", "L2", "Shrink & Perturb", "Continual Backprop",
    "Activation-adapted (ReLU strategy)", "ReDo"; activations "ReLU", "Tanh", ...;
    other keys stay ``key=value``. With no varying keys, the learner's name (or
    "all runs").
    """
    from .names import LEARNERS, STRATEGIES, value_label

    names = short_names(keys)
    learner_keys = [k for k in ("choice.learner", "learner.name") if k in frame.columns]
    strategy_keys = [k for k in ("choice.reset_strategy", "learner.reset_strategy") if k in frame.columns]
    out = []
    for _, row in frame.iterrows():
        parts = []
        shown_learner = any(k in keys for k in learner_keys) or not keys
        skip = set()
        if shown_learner and learner_keys:
            learner = next((row[k] for k in learner_keys if not is_missing(row[k])), None)
            if learner is not None:
                text = LEARNERS.get(learner, str(learner))
                if learner == "adapted":
                    strategy = next((row[k] for k in strategy_keys if not is_missing(row[k])), None)
                    if isinstance(strategy, str):
                        text += f" ({STRATEGIES.get(strategy, strategy)})"
                        skip.update(strategy_keys)
                parts.append(text)
            skip.update(learner_keys)
        for k in keys:
            if k in skip or is_missing(row[k]):
                continue
            last = k.split(".")[-1]
            if last in ("activation", "learner", "reset_strategy") or k.startswith(CHOICE_PREFIX) and last in (
                    "dataset", "optimizer"):
                parts.append(value_label(k, row[k]))
            else:
                parts.append(f"{names[k]}={format_value(row[k])}")
        out.append(", ".join(parts) if parts else ("all runs" if not keys else "default"))
    return out
