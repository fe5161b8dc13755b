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
SHUFFLE = 3  # the once-shuffled image split: derived from dataset.shuffle_seed, not from the run's seed

# Sub-streams of ALGO (``generator(seed, ALGO, REINIT)``), one per kind of algorithm
# randomness, so that e.g. drawing S&P noise never shifts the units CBP re-initialises,
# and the reference learner and the engine consume each stream in the same order.
REINIT, COIN, UTIL, NOISE = 0, 1, 2, 3  # re-initialised units, accumulate=false coins, random utility, S&P noise


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


class UniformStream:
    """U(0, 1) numbers (Python floats) from a CPU generator, drawn in blocks to keep per-step cost low.

    Used for host-side decisions such as CBP's ``accumulate: false`` coin flips. The reference
    learner, the engine and the kernel backend all read a member's coins through this class, so
    they see the same sequence: ``next()`` one at a time, or ``peek(n)`` the next n without
    consuming them and ``skip(n)`` those used (the kernel reads ahead). The sequence is the
    blocks of ``torch.rand(block, float64)`` one after another, whenever they are drawn.
    """

    def __init__(self, gen: torch.Generator, block: int = 1024):
        self.gen, self.block = gen, block
        self._buf = np.zeros(0)
        self._pos = 0

    def get_state(self) -> dict:
        """The generator's state and the drawn, unused numbers (last first)."""
        return {"gen": self.gen.get_state(), "buf": self._buf[self._pos :][::-1].tolist()}

    def set_state(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self._buf = np.array(state["buf"][::-1], dtype=np.float64)
        self._pos = 0

    def next(self) -> float:
        if self._pos >= len(self._buf):
            self._buf = self._block()
            self._pos = 0
        self._pos += 1
        return float(self._buf[self._pos - 1])

    def peek(self, n: int) -> np.ndarray:
        """The next n numbers (a view: read, do not write), without consuming them."""
        while len(self._buf) - self._pos < n:
            self._buf = np.concatenate([self._buf[self._pos :], self._block()])
            self._pos = 0
        return self._buf[self._pos : self._pos + n]

    def skip(self, n: int) -> None:
        """Consume n numbers (after ``peek``)."""
        if n > len(self._buf) - self._pos:
            raise ValueError(f"cannot skip {n} numbers: only {len(self._buf) - self._pos} were peeked")
        self._pos += n

    def _block(self) -> np.ndarray:
        return torch.rand(self.block, generator=self.gen, dtype=torch.float64).numpy()
