"""Measurements (SPEC 4): pure metric functions, validated settings, and the in-run probe runner.

- :mod:`.metrics`: rank family, dead units, dormant ratio, weight and feature norms,
  gradient Gram / cosine matrices and gradient rank, utility summaries (pure functions);
- :mod:`.settings`: the ``probes`` config group's schema and cadence logic;
- :mod:`.runner`: :class:`ProbeRunner`, called by ``run.py`` before every task;
- :mod:`.bench`: ``probe_overhead(...)``, the cost of a probe preset relative to training.
"""

from .runner import NullProbes, ProbeRunner, build_probes, time_backend
from .settings import ProbeSettings, parse_probes

__all__ = ["NullProbes", "ProbeRunner", "ProbeSettings", "build_probes", "parse_probes", "time_backend"]
