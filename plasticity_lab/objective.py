"""What a run returns to a Hydra sweeper: the objective an Optuna sweep optimises.

``optimized_metric`` (train.yaml; the name lightning-hydra-template gives it) names one of
``multirun_analysis``'s statistics of the run's per-task metric, the same names as
``python -m multirun_analysis best --by``:

- ``mean_accuracy``: mean online accuracy over all tasks [P] (the default for image datasets);
- ``last15``: mean accuracy over the last 15% of tasks [J] (any ``last<percent>``);
- ``mean_error`` / ``last15_error``: the same of the regression datasets' mean squared error
  (``mean_error`` is their default); ``mean_loss`` / ``last15_loss``: of the classification loss.

``null`` (the default) = the mean over all tasks of the run's own metric (accuracy, or error
for regression). The value is computed from the run's folder by ``multirun_analysis`` (so a
study's values equal what its report and ``best`` say). A diverged run returns the worst value
there is, -inf for a metric that is maximised (accuracy) and +inf for one that is minimised
(error, loss): Optuna records it as a completed trial worse than every other, so TPE learns to
avoid that region (NaN would be a failed trial, which TPE ignores, and which Hydra's Optuna
sweeper cannot record).

An Optuna sweep must optimise in the metric's direction: ``check_direction`` refuses
``hydra.sweeper.direction=minimize`` with an accuracy, before anything runs.
"""

from __future__ import annotations

import math
from pathlib import Path

from .tasks import KINDS


def default_metric(is_regression: bool) -> str:
    """The task kind's summary (tasks.py): ``mean_accuracy``, regression ``mean_error``."""
    return KINDS[is_regression].summary_key


def parse(name: str, is_regression: bool) -> tuple[str, str, float]:
    """(``mean`` | ``last``, metric, last fraction) of ``optimized_metric``; ValueError saying
    what is allowed when the name is not a statistic of this run's metrics."""
    from multirun_analysis.summaries import parse_stat

    kind, metric, fraction = parse_stat(name)
    allowed = KINDS[is_regression].metrics  # the per-task metrics a run records (tasks.py)
    if metric not in allowed or not 0 < fraction <= 1:
        examples = ", ".join(f"mean_{m}, last15{'' if m == 'accuracy' else '_' + m}" for m in allowed)
        dataset = "regression" if is_regression else "image"
        raise ValueError(f"not a statistic of the per-task metrics of an {dataset} dataset's run; use one of "
                         f"{examples} (or last<percent>...), or null for {default_metric(is_regression)}")
    return kind, metric, fraction


def maximise(name: str, is_regression: bool) -> bool:
    """Whether ``optimized_metric`` (None: the default) is higher-is-better."""
    from multirun_analysis.summaries import higher_is_better

    return higher_is_better(parse(name or default_metric(is_regression), is_regression)[1])


def value(out_dir: Path, optimized_metric: str | None, is_regression: bool) -> float:
    """The run's objective, read from its folder (module docstring)."""
    from multirun_analysis.loading import load_runs
    from multirun_analysis.summaries import higher_is_better, run_summaries, stat_names

    name = optimized_metric or default_metric(is_regression)
    kind, metric, fraction = parse(name, is_regression)
    df = load_runs(out_dir, include=("completed", "diverged"), metrics=[metric])
    if (df["status"] == "diverged").any():
        return -math.inf if higher_is_better(metric) else math.inf
    summary = run_summaries(df, metric, last_fraction=fraction)
    return float(summary[stat_names(metric, fraction)[0 if kind == "mean" else 1]].iloc[0])


def of_run(cfg, out_dir: Path) -> float:
    """The objective of the trained run ``cfg`` (its composed config) in ``out_dir``: what ``run`` and
    the population launchers return to the sweeper for it."""
    from .config import parse_config

    s = parse_config(cfg)
    return value(out_dir, s.optimized_metric, s.dataset.is_regression)


def check_direction(settings, sweeper_cfg) -> None:
    """Refuse a sweeper ``direction`` (Optuna's) against the direction of the job's
    ``optimized_metric`` (``settings``: its RunSettings): ConfigError naming both keys."""
    from .config import ConfigError

    direction = sweeper_cfg.get("direction") if sweeper_cfg is not None else None
    direction = getattr(direction, "name", direction)  # Optuna's sweeper stores an enum
    if not isinstance(direction, str):
        return  # not an Optuna sweep, or several objectives (a list: the user's own)
    regression = settings.dataset.is_regression
    wanted = "maximize" if maximise(settings.optimized_metric, regression) else "minimize"
    if direction != wanted:
        shown = settings.optimized_metric or f"null ({default_metric(regression)})"
        raise ConfigError(f"hydra.sweeper.direction={direction}: optimized_metric={shown} is "
                          f"{'higher' if wanted == 'maximize' else 'lower'}-is-better; use "
                          f"hydra.sweeper.direction={wanted}")
