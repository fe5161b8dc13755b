"""Independent random streams derived from one integer seed (SPEC 1, "Randomness").

A run (or population member) has one seed. From it we derive separate streams for
(a) weight initialisation, (b) the data: task permutations and example order, and
(c) algorithm randomness (noise, re-initialisation, random utility). The data stream of
task t is derived from (seed, t) alone, so two learners with the same seed see the same
task sequence, a resumed run needs no generator state to continue it, and any earlier
task's permutation can be regenerated (e.g. for forgetting probes).
"""

from __future__ import annotations

import numpy as np
import torch

INIT, DATA, ALGO = 0, 1, 2  # stream identifiers: never reorder, results depend on them


def derive_seed(seed: int, stream: int, *path: int) -> int:
    """A 63-bit integer seed for ``stream`` (and optional sub-path, e.g. a task index)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    words = np.random.SeedSequence([seed, stream, *path]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def generator(seed: int, stream: int, *path: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded from ``derive_seed(seed, stream, *path)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, stream, *path))
    return g
