"""The papers' claims, in their words, each judged by a rule of ``rules`` on a target's runs.

``CLAIMS[target name]`` lists the claims checked on that target's runs (issue #15, item 3). The
conditions are picked by their settings (``choice.method``, ``choice.experiment``,
``optimizer.step_size``, ``learner.replacement_rate``), never by folder names. Statistics: [P]'s mean
over all tasks, [J]'s last 15% of tasks, [D]'s error at the end (last 10% of bins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from . import rules
from .rules import Cond, Verdict, beats, beats_each, close, combine, declines, keeps, ordered, rises_and_stays


@dataclass(frozen=True)
class Claim:
    """A claim of a paper, the rule that judges it, and how the rule is applied."""

    paper: str
    text: str  # the claim, in the paper's words
    rule: str  # which rule(s) of rules.py and on what
    check: Callable[[pd.DataFrame, int], Verdict]  # (runs, ddof) -> verdict


def method(name: str, label: str, **more) -> Cond:
    return Cond(label, {"choice.method": name, **more})


BP, L2, CBP = method("bp", "Backprop"), method("l2", "L2"), method("cbp", "CBP")
RELU_S, TANH_S = method("adapted_relu", "ReLU strategy"), method("adapted_tanh", "tanh strategy")
MATCHED, OPPOSITE = method("adapted_matched", "matched"), method("adapted_opposite", "opposite")
RELU_ONLY, TANH_ONLY = method("adapted_relu", "relu-only"), method("adapted_tanh", "tanh-only")
LAYER = {k: method(f"cbp_layer_{k}", f"CBP layer {k}") for k in range(1, 6)}
LAYERS_2_L = method("cbp_layers_2_to_L", "CBP layers 2..L")


def _effective_rank_lower(df, ddof):
    rank = beats(df, RELU_S, CBP, "mean", "effective_rank", ddof, lower_is_better=True)
    accuracy = beats(df, RELU_S, CBP, "mean", "accuracy", ddof)
    return combine([rank, accuracy])


def _worst(df, ddof):
    return combine([beats(df, c, OPPOSITE, "mean", "accuracy", ddof) for c in (RELU_ONLY, TANH_ONLY, MATCHED)])


def _deeper_worse(df, ddof):
    means = rules.condition_means(df, list(LAYER.values()), "last15")
    return ordered(list(means), list(means.values()), -1, "CBP on one layer, last 15%",
                   fmt=lambda v: f"{100 * v:.1f}%")


def _hardly_matters(df, ddof):
    parts = []
    for activation in ("tanh", "selu"):
        conds = [method(f"cbp_layer_{k}", f"{activation} CBP layer {k}", **{"choice.experiment": f"jucas/{activation}"})
                 for k in range(1, 6)]
        parts.append(rules.hardly_matters(df, conds, "last15", f"{activation} net, CBP on one layer"))
    return combine(parts)


# [D] slowly-changing regression: Backprop per step size, CBP at its rates
SCR_BP, SCR_CBP = "dohare/slowly_changing_regression", "dohare/slowly_changing_regression_cbp"
SCR_STEPS = (0.001, 0.003, 0.01)


def scr_bp(step: float) -> Cond:
    return Cond(f"Backprop, step {step:g}", {"choice.experiment": SCR_BP, "optimizer.step_size": step})


def scr_best_cbp(df) -> Cond | None:
    """CBP at the replacement rate with the lowest mean error over all bins (mean over seeds)."""
    if "choice.experiment" not in df.columns or "learner.replacement_rate" not in df.columns:
        return None
    rows = df[df["choice.experiment"] == SCR_CBP]
    if rows.empty:
        return None
    conds = [Cond(f"CBP, rate {r:g}", {"choice.experiment": SCR_CBP, "learner.replacement_rate": float(r)})
             for r in sorted(rows["learner.replacement_rate"].dropna().unique())]
    means = rules.condition_means(df, conds, "mean", "error")
    if not means:
        return None
    return next(c for c in conds if c.name == min(means, key=means.get))


def _bp_grows(df, ddof):
    return combine([declines(df, scr_bp(s), "error") for s in SCR_STEPS])


def _more_at_larger_steps(df, ddof):
    names, growth = [], []
    for s in SCR_STEPS:
        rows, _ = rules.per_seed_decline(df, scr_bp(s), "error", False)
        if rows:
            names.append(f"step {s:g}")
            growth.append(float(np.mean([r["worse"] for r in rows.values()])))
    what = "Backprop's error growth (end vs best, mean over seeds) by step size"
    if growth and max(growth) <= rules.DECLINE_REL:
        shown = ", ".join(f"{n} {100 * g:+.1f}%" for n, g in zip(names, growth))
        return Verdict(rules.NOT_REPRODUCED, f"{what}: {shown}; no step size's error grows by more than "
                                             f"{100 * rules.DECLINE_REL:g}%, so there is no growth to order")
    return ordered(names, growth, +1, what, fmt=lambda v: f"{100 * v:+.1f}%")


def _cbp_keeps_low(df, ddof):
    cbp = scr_best_cbp(df)
    if cbp is None:
        return Verdict(rules.NOT_CHECKED, "no completed CBP runs")
    return combine([beats(df, cbp, scr_bp(0.01), "last10", "error", ddof), keeps(df, cbp, "error")])


CLAIMS: dict[str, list[Claim]] = {
    "purice-main-relu": [
        Claim("[P]", "the relu strategy beats L2, the tanh strategy, CBP and BP over all tasks",
              "beats each; mean accuracy over all tasks",
              lambda df, ddof: beats_each(df, RELU_S, [L2, TANH_S, CBP, BP], statistic="mean", ddof=ddof)),
        Claim("[P]", "its accuracy rises over the first tasks and stays up", "rises and stays up; ReLU strategy",
              lambda df, ddof: rises_and_stays(df, RELU_S)),
        Claim("[P]", "its effective rank is lower than CBP's although its accuracy is higher",
              "beats (effective rank, lower; mean over tasks and layers) and beats (mean accuracy)",
              _effective_rank_lower),
        Claim("[P]", "BP declines", "declines; Backprop", lambda df, ddof: declines(df, BP)),
        Claim("[P]", "CBP keeps plasticity", "keeps plasticity; CBP", lambda df, ddof: keeps(df, CBP)),
    ],
    "purice-main-tanh": [
        Claim("[P]", "the tanh strategy beats L2 and the relu strategy", "beats each; mean accuracy over all tasks",
              lambda df, ddof: beats_each(df, TANH_S, [L2, RELU_S], statistic="mean", ddof=ddof)),
        Claim("[P]", "CBP loses plasticity like BP", "declines, CBP and Backprop",
              lambda df, ddof: combine([declines(df, CBP), declines(df, BP)])),
        Claim("[P]", "a strategy on the \"wrong\" activation (the relu strategy on the tanh net) still beats BP",
              "beats; mean accuracy over all tasks",
              lambda df, ddof: beats(df, RELU_S, BP, "mean", ddof=ddof)),
    ],
    "purice-twisted": [
        Claim("[P]", "matched (\"combined\") beats relu-only, tanh-only and opposite",
              "beats each; mean accuracy over all tasks",
              lambda df, ddof: beats_each(df, MATCHED, [RELU_ONLY, TANH_ONLY, OPPOSITE], statistic="mean", ddof=ddof)),
        Claim("[P]", "opposite is the worst strategy", "relu-only, tanh-only and matched each beat opposite",
              _worst),
        Claim("[P]", "BP loses plasticity from the first tasks", "declines from the first tasks; Backprop",
              lambda df, ddof: declines(df, BP, early=True)),
    ],
    "jucas-relu": [
        Claim("[J]", "on the 5 x 100 relu net, replacing layer 1 alone is close to replacing all layers",
              "close; last 15% of tasks", lambda df, ddof: close(df, LAYER[1], CBP, "last15")),
        Claim("[J]", "the deeper the single replaced layer, the worse", "ordered (-1); layers 1..5, last 15%",
              _deeper_worse),
        Claim("[J]", "layers 2..L alone is far below all layers", f"beats, far (>= {rules.FAR_PP:g} pp); last 15%",
              lambda df, ddof: beats(df, CBP, LAYERS_2_L, "last15", ddof=ddof, min_gap=rules.FAR_PP / 100)),
    ],
    "jucas-tanh-selu": [
        Claim("[J]", "on tanh and SELU nets the layer hardly matters",
              "hardly matters; CBP on one layer (1..5), last 15%, per net", _hardly_matters),
    ],
    "dohare-scr": [
        Claim("[D]", "on slowly-changing regression BP's error grows over time", "declines (error); each step size",
              _bp_grows),
        Claim("[D]", "... more at larger step sizes",
              f"ordered (+1); growth by step size (not reproduced when no step size grows by more than "
              f"{100 * rules.DECLINE_REL:g}%)", _more_at_larger_steps),
        Claim("[D]", "CBP keeps it low",
              "CBP at its best rate (lowest mean error) beats Backprop at its step size 0.01 on the last 10% of bins, "
              "and keeps plasticity (error)", _cbp_keeps_low),
    ],
}
