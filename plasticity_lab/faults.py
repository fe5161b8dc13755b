"""Deterministic kill points for the fault-injection tests (tests/test_faults.py).

``PLASTICITY_LAB_FAULT=<point>:<n>`` makes a process kill itself with SIGKILL (no clean-up,
as the OOM killer, a node failure or ``kill -9`` would) the n-th time it passes ``<point>``;
forked workers inherit the variable and count for themselves. Without the variable (always,
outside the tests) a kill point costs one comparison. The points (``POINTS``):

- ``atomic_write``: inside every atomic write (run.json, metrics.csv, checkpoint.pt, the
  recorded settings, arrays), after the temporary file is written and fsynced, before the rename;
- ``flush``: between a flush's metrics.csv and its run.json;
- ``checkpoint``: after one member's checkpoint of a population's checkpoint round, before the next;
- ``chunk``: after a chunk of training steps, mid-task.
"""

from __future__ import annotations

import os
import signal

ENV = "PLASTICITY_LAB_FAULT"
POINTS = ("atomic_write", "flush", "checkpoint", "chunk")


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, n = spec.partition(":")
    if point not in POINTS or not n.isdigit() or int(n) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected <point>:<n> with point one of {list(POINTS)} and n >= 1")
    return point, int(n)


_FAULT = _parse(os.environ.get(ENV))
_passes = {p: 0 for p in POINTS}


def point(name: str) -> None:
    """A kill point: SIGKILL this process if the fault names ``name`` and this is its n-th pass."""
    if _FAULT is None or _FAULT[0] != name:
        return
    _passes[name] += 1
    if _passes[name] == _FAULT[1]:
        os.kill(os.getpid(), signal.SIGKILL)
