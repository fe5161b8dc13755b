"""The papers' names for learners, activations, strategies, metrics and config keys.

Used for legends, axis labels and table headers, so a figure regenerated from a
user's runs reads like the figure in the thesis it comes from:
Dohare et al. 2024 (Nature), Purice 2025 (TU Delft), Jucas 2025 (TU Delft).
The learners' names and their settings' labels come from the learners' declarations
(declared.py, generated from plasticity_lab/learners.py: this package never imports torch).
"""

from __future__ import annotations

import math
import numbers

import pandas as pd

from .declared import LEARNERS, SETTINGS

#: Display order of learners in legends and tables (baselines first).
LEARNER_ORDER = list(LEARNERS)

ACTIVATIONS = {
    "relu": "ReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "selu": "SELU",
    "elu": "ELU",
    "gelu": "GELU",
    "leaky_relu": "Leaky ReLU",
    "swish": "Swish",
    "celu": "CELU",
    "identity": "Identity",
}

#: Reset strategies of the activation-adapted learner [Purice 2025].
STRATEGIES = {
    "relu": "ReLU strategy",
    "tanh": "Tanh strategy",
    "matched": "matched per layer",
    "opposite": "opposite per layer",
    "none": "no reset",
}

#: metric -> (label, unit, scale). Values are multiplied by ``scale`` for display.
METRICS = {
    "accuracy": ("Online accuracy", "%", 100.0),
    "loss": ("Online loss", "", 1.0),
    "effective_rank": ("Effective rank", "units", 1.0),
    "rank": ("Rank", "units", 1.0),
    "approximate_rank": ("Approximate rank", "units", 1.0),
    "abs_approximate_rank": ("Abs. approximate rank", "units", 1.0),
    "stable_rank": ("Stable rank", "units", 1.0),
    "dead_units": ("Dead units", "count", 1.0),
    "dead_fraction": ("Dead units", "%", 100.0),
    "dormant_ratio": ("Dormant units", "%", 100.0),
    "weight_magnitude": ("Weight magnitude", "mean |w|", 1.0),
    "weight_norm": ("Weight norm", "L2", 1.0),
    "feature_norm": ("Feature norm", "mean L2", 1.0),
}

#: dotted config key (last component) -> axis / header label: the learners' and optimisers' settings
#: (declared.py), and the other keys an analysis shows.
KEYS = {
    "learner": "Learner",
    "activation": "Activation",
    "network_depth": "Depth",
    "depth": "Depth (hidden layers)",
    "width": "Width (units per layer)",
    "batch_size": "Batch size",
    "optimizer": "Optimizer",
    "dataset": "Dataset",
    **SETTINGS,
}


def metric_label(metric: str) -> tuple[str, str, float]:
    """(label, unit, scale) for a metric name; generic for unknown names."""
    if metric in METRICS:
        return METRICS[metric]
    if metric.startswith("time_"):
        return (metric[5:].replace("_", " ").capitalize() + " time", "s", 1.0)
    return (metric.replace("_", " ").capitalize(), "", 1.0)


def axis_label(metric: str) -> str:
    label, unit, _ = metric_label(metric)
    return f"{label} ({unit})" if unit else label


def key_label(key: str) -> str:
    """Readable name of a column such as ``learner.replacement_rate`` or ``choice.learner``."""
    last = key.split(".")[-1]
    return KEYS.get(last, last)


def is_missing(value) -> bool:
    """True for None, NaN and pandas.NA (a key a run's config does not have)."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def format_value(value) -> str:
    """Compact text for a config value: 0.0001, 1e-05, 3, relu, [relu,tanh]."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def value_label(key: str, value) -> str:
    """Display text of one value of ``key`` (paper names for learners/activations)."""
    last = key.split(".")[-1]
    if isinstance(value, str):
        if last in ("learner", "name") and value in LEARNERS and key.split(".")[0] in ("choice", "learner"):
            return LEARNERS[value]
        if last == "activation" and value in ACTIVATIONS:
            return ACTIVATIONS[value]
        if last == "reset_strategy" and value in STRATEGIES:
            return STRATEGIES[value]
    if isinstance(value, tuple) and last == "activation":
        return "[" + ", ".join(ACTIVATIONS.get(v, str(v)) for v in value) + "]"
    return format_value(value)
