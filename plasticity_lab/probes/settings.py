"""Validated probe settings (the ``probes`` config group), in config.py's pattern.

Each probe has a cadence: ``every: k`` (the tasks t with t % k == 0; 0 = never) and/or
``tasks: [t1, t2, ...]`` (explicit task indices). A probe "at task t" measures the
network at the START of task t, after training on tasks 0..t-1, on the first examples
of task t (SPEC 4). With ``final: true`` every enabled probe except timing also runs
once after the last task, as task ``num_tasks`` (the next, never-trained task's data).

``parse_probes(node, dataset)`` builds :class:`ProbeSettings` or raises ConfigError
naming the key (``probes.rank.every=-1: must be >= 0``). A config without a ``probes``
section gets :class:`ProbeSettings` defaults with every probe off (accuracy and loss only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

from ..data.permuted import SPLIT_SIZES
from ..schema import ConfigError, finite, non_negative, one_of, positive, read, setting, tuples
from .metrics import METHODS


def _task_list(v):
    if not isinstance(v, (list, tuple)):
        return "must be a list of task indices"
    for t in v:
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            return f"must be a list of task indices >= 0 (got {t!r})"
    return None


def _batch_sizes(v):
    if not isinstance(v, (list, tuple)) or not v:
        return "must be a non-empty list of batch sizes"
    for b in v:
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            return f"must be a list of positive integers (got {b!r})"
    return None


def _fraction(v):
    return None if 0 < v <= 1 else "must be in (0, 1]"


@dataclass(frozen=True)
class Scheduled:
    """Cadence shared by every probe: every k tasks (0 = never) and/or an explicit task list."""

    every: int = setting(0, non_negative)
    tasks: Any = setting((), _task_list)

    @property
    def enabled(self) -> bool:
        return self.every > 0 or bool(self.tasks)

    def due(self, task: int) -> bool:
        return (self.every > 0 and task % self.every == 0) or task in self.tasks


@dataclass(frozen=True)
class RankProbe(Scheduled):
    """rank, effective_rank, approximate_rank, abs_approximate_rank, stable_rank per hidden layer."""

    fraction: float = setting(0.99, finite(_fraction))  # approximate ranks: share of sum sigma^2 / sum sigma
    rtol: Union[float, None] = setting(None, finite(non_negative))  # rank: sigma > rtol * sigma_max; null = max(N, H) * eps
    method: str = setting("auto", one_of(*METHODS))  # first method tried (auto: gram for float32 features); the others are fall-backs
    save_singular_values: bool = False  # also write arrays/singular_values.npz (task_<t>_layer_<l>)


@dataclass(frozen=True)
class ActivityProbe(Scheduled):
    """dead_units, dead_fraction, dormant_ratio, feature_norm per hidden layer."""

    dormant_threshold: float = setting(0.1, finite(non_negative))  # ReDo's tau


@dataclass(frozen=True)
class WeightsProbe(Scheduled):
    """weight_magnitude (per linear layer and network) and weight_norm (per linear layer)."""


@dataclass(frozen=True)
class UtilityProbe(Scheduled):
    """utility_mean/median/min/max per hidden layer (learners that keep u_hat)."""


@dataclass(frozen=True)
class GradCovarianceProbe(Scheduled):
    """S x S cosine matrix of per-example gradients into arrays/grad_covariance.npz [P]."""

    examples: int = setting(50, positive)  # S


@dataclass(frozen=True)
class GradRankProbe(Scheduled):
    """grad_rank per linear layer and jointly [J]."""

    examples: int = setting(200, positive)
    fraction: float = setting(0.99, finite(_fraction))


@dataclass(frozen=True)
class ForgettingProbe(Scheduled):
    """past_task_accuracy_<j>, j = 1..previous, on held-out images (the last ``holdout`` of the split)."""

    previous: int = setting(5, positive)
    holdout: int = setting(1000, positive)


@dataclass(frozen=True)
class TimingProbe(Scheduled):
    """time_inference_b<B>, time_update_b<B> (seconds per example per member) on a scratch copy;
    wall_time_task and probe_time every task when ``wall_time``."""

    batch_sizes: Any = setting((1, 10, 100), _batch_sizes)
    examples: int = setting(1000, positive)  # examples timed per batch size and mode
    wall_time: bool = False


PROBES: dict[str, type] = {
    "rank": RankProbe, "activity": ActivityProbe, "weights": WeightsProbe, "utility": UtilityProbe,
    "grad_covariance": GradCovarianceProbe, "grad_rank": GradRankProbe, "forgetting": ForgettingProbe,
    "timing": TimingProbe,
}


@dataclass(frozen=True)
class _ProbeTop:
    """The probe settings that are not a probe of their own."""

    examples: int = setting(2000, positive)  # probe examples: the first N of each new task (at most its size)
    final: bool = True  # also probe after the last task (as task num_tasks)
    on_error: str = setting("warn", one_of("warn", "raise"))  # a failing probe: log and go on, or stop the run
    chunk: int = setting(500, positive)  # examples per forward pass of a probe (bounds memory)


@dataclass(frozen=True)
class ProbeSettings(_ProbeTop):
    """Every probe's settings; ``probes()`` maps probe name -> its settings."""

    rank: RankProbe = field(default_factory=RankProbe)
    activity: ActivityProbe = field(default_factory=ActivityProbe)
    weights: WeightsProbe = field(default_factory=WeightsProbe)
    utility: UtilityProbe = field(default_factory=UtilityProbe)
    grad_covariance: GradCovarianceProbe = field(default_factory=GradCovarianceProbe)
    grad_rank: GradRankProbe = field(default_factory=GradRankProbe)
    forgetting: ForgettingProbe = field(default_factory=ForgettingProbe)
    timing: TimingProbe = field(default_factory=TimingProbe)

    def probes(self) -> dict[str, Scheduled]:
        return {name: getattr(self, name) for name in PROBES}

    @property
    def any_enabled(self) -> bool:
        return any(p.enabled for p in self.probes().values()) or self.timing.wall_time


def parse_probes(node, dataset=None) -> ProbeSettings:
    """Validate the ``probes`` section (a plain dict, or None for "all off")."""
    if node is None:
        return ProbeSettings()
    if not isinstance(node, dict):
        raise ConfigError("probes: must be a mapping (choose an option of the 'probes' group)")
    flat = {k: v for k, v in node.items() if k not in PROBES}
    nested = {}
    for name, cls in PROBES.items():
        sub = node.get(name, {})
        if sub is None:
            sub = {}
        if not isinstance(sub, dict):
            raise ConfigError(f"probes.{name}: must be a mapping of settings (every, tasks, ...)")
        nested[name] = cls(**tuples(read(cls, sub, f"probes.{name}")))
    settings = ProbeSettings(**tuples(read(_ProbeTop, flat, "probes")), **nested)
    if dataset is not None:
        check_holdout(settings, dataset)
    return settings


def check_holdout(settings: ProbeSettings, dataset) -> None:
    """Forgetting needs images the protocol never trains on: the last ``holdout`` of the split.

    Training uses the first ``images_per_task`` images of the split when ``subset: fixed``
    and the whole split otherwise, so held-out images exist only with ``subset: fixed``
    and ``images_per_task + holdout <= split size``. We never shrink the training set
    behind the user's back: anything else is a ConfigError saying what to change.
    """
    f = settings.forgetting
    if not f.enabled:
        return
    if dataset.is_regression:
        raise ConfigError(f"probes.forgetting: measures past permuted-image tasks; dataset.name={dataset.name} "
                          "has none (turn it off: probes.forgetting.every=0 probes.forgetting.tasks=[])")
    size = SPLIT_SIZES[dataset.split]
    off = "or turn the probe off (probes.forgetting.every=0 probes.forgetting.tasks=[])"
    if dataset.subset != "fixed":
        raise ConfigError(f"probes.forgetting: needs held-out images, but dataset.subset={dataset.subset} trains on "
                          f"the whole {dataset.split} split; use dataset.subset=fixed with "
                          f"dataset.images_per_task<={size - f.holdout}, {off}")
    if dataset.images_per_task + f.holdout > size:
        raise ConfigError(f"probes.forgetting.holdout={f.holdout}: forgetting is measured on the last {f.holdout} "
                          f"images of the {dataset.split} split ({size} images), but dataset.images_per_task="
                          f"{dataset.images_per_task} trains on the first {dataset.images_per_task}; set "
                          f"dataset.images_per_task<={size - f.holdout}, a smaller probes.forgetting.holdout, {off}")


def replace(settings: ProbeSettings, **probes) -> ProbeSettings:
    """``settings`` with some probes' fields replaced: ``replace(s, rank={"every": 0})``."""
    changes = {name: dataclasses.replace(getattr(settings, name), **values) if isinstance(values, dict) else values
               for name, values in probes.items()}
    return dataclasses.replace(settings, **changes)


__all__ = ["PROBES", "ProbeSettings", "Scheduled", "parse_probes", "check_holdout", "replace",
           *[c.__name__ for c in PROBES.values()]]
