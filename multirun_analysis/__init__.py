"""multirun_analysis: from any set of runs to the papers' figures and tables.

Never imports torch. Quick start::

    from multirun_analysis import load_runs, condition_summaries, best
    df = load_runs("multirun/2026-11-21/12-00-00")
    condition_summaries(df)            # mean accuracy [Purice 2025] and last 15% [Jucas 2025]
    print(best(df, by="last15").overrides)

Figures live in ``multirun_analysis.plots`` (imported on first use, it pulls in
matplotlib and seaborn). Command line: ``python -m multirun_analysis report <dirs...>``.
"""

from .grid import Best, best, ranking, to_overrides
from .loading import NoRunsError, find_run_dirs, load_arrays, load_runs, run_path, runs_of
from .summaries import condition_summaries, default_ddof, last_count, run_summaries, std_convention
from .tables import Table, pivot_table, summary_table

__all__ = [
    "Best", "NoRunsError", "Table", "best", "condition_summaries", "default_ddof", "find_run_dirs", "last_count",
    "load_arrays", "load_runs", "pivot_table", "ranking", "run_path", "run_summaries", "runs_of",
    "std_convention", "summary_table", "to_overrides", "plots", "build_report",
]


def __getattr__(name):
    """``multirun_analysis.plots`` and ``build_report`` load matplotlib/seaborn on first use."""
    import importlib

    if name == "plots":
        return importlib.import_module(".plots", __name__)
    if name == "build_report":
        return importlib.import_module(".report", __name__).build_report
    raise AttributeError(f"module 'multirun_analysis' has no attribute {name!r}")
