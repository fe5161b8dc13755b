"""A member's torch generator read ahead, so that compiled code can use its draws (kernel backend).

CBP's replacements draw from the member's own generators (SPEC 1 "Randomness", engine/learners/
cbp.py): REINIT for the fresh input weights (``network.uniform``, U(-b, b) with the layer's bound
b), UTIL for the ``random`` utility (``torch.rand``). The kernel replaces units inside its
compiled loop (kernel/step.py), which cannot call torch, so ``ReadAhead`` draws a block of numbers
ahead, ONCE PER DISTINCT BOUND from the same generator state: torch's CPU uniform kernel draws one
number of the generator's stream per element whatever the bound, so row r of the block gives, at
every position, exactly what a draw with bound r at that position of the stream gives (the same
torch kernel computed it). The compiled code consumes the block from its position on (n fresh rows of
layer l: n * fan_in numbers of l's bound row, then the next draw starts where they end, whatever
its layer), and ``sync`` leaves the generator exactly where drawing the consumed numbers event by
event would have left it (the engine's state, so checkpoints and resume do not change).
"""

from __future__ import annotations

import numpy as np
import torch

from ..network import uniform


class ReadAhead:
    """``gen``'s next numbers U(low_r, high_r) for each (low_r, high_r) in ``ranges``, at least
    ``block`` at a time: ``blocks`` (len(ranges), n) float32, of which the first ``positions[at]``
    are consumed (the compiled code advances that entry of the int64 array ``positions``; kept as
    the array and an index, not a view, so that a deep copy of its owner keeps them together).

    Every refill doubles ``block``, up to GROWTH times the first: a refill is a return from the
    compiled loop to Python and a re-draw of the consumed numbers (``sync``): with CBP at rho 1e-4
    on the bench's network, 13 refills per 20,000 steps at 16x-fan_in blocks, 4 with growth (the
    time saved is within the bench's noise); a member that replaces units often soon draws far
    ahead, one that rarely does keeps small blocks."""

    GROWTH = 16

    def __init__(self, gen: torch.Generator, ranges: list[tuple[float, float]], block: int, positions: np.ndarray,
                 at: tuple):
        self.gen, self.ranges, self.block, self.positions, self.at = gen, ranges, block, positions, at
        self.largest = block * self.GROWTH
        self.forget()

    @property
    def used(self) -> int:
        return int(self.positions[self.at])

    def ensure(self, n: int) -> None:
        """At least n numbers ahead of the used ones."""
        if self.blocks.shape[1] - self.used >= n:
            return
        self.sync()
        size = max(n, self.block)
        self._start = self.gen.get_state()
        rows = []
        for low, high in self.ranges:
            self.gen.set_state(self._start)
            rows.append(uniform(self.gen, size, low, high).numpy())
        self.blocks = np.stack(rows)
        self.block = min(2 * self.block, self.largest)

    def sync(self) -> None:
        """Put the generator where the consumed numbers leave it; forget the rest of the blocks."""
        if self._start is not None:
            self.gen.set_state(self._start)
            uniform(self.gen, self.used, *self.ranges[0])  # advance by the numbers consumed
        self.forget()

    def forget(self) -> None:
        """Drop the blocks without touching the generator (also after it was set from a checkpoint)."""
        self._start = None  # the generator's state at the blocks' first number (None: nothing drawn ahead)
        self.blocks = np.zeros((len(self.ranges), 0), np.float32)
        self.positions[self.at] = 0
