"""Bit-flipping / slowly-changing regression (SPEC 2) [D], [J], generated on the fly per member.

Input x_t: 20 bits (floats 0/1). The first f = 15 ("flipping") bits are constant within a
period of ``flip_after`` steps; the last 5 are i.i.d. Bernoulli(1/2) at every step. At a period
boundary either all f bits are redrawn (default) or, with ``flip_one``, one uniformly chosen
bit of the f is toggled.

Target: a fixed network 20 -> M LTUs -> 1 with every weight and bias -1 or +1 (prob. 1/2).
For LTU j, S_j = (n - sum_i w_ji + b_j) / 2 with n = 20, tau_j = beta (n + 1) - S_j, and
feature_j = 1 if w_j . x + b_j > tau_j else 0; y = v . feature + c (no noise). [D]'s
slowly-changing regression: M = 100, flip_after = 10,000; [J]'s bit-flipping: M = 500,
flip_after = 2,500 (the two config options differ only in these defaults).

Randomness (seeding.py), all in the member's DATA stream under a path of its own
(``REGRESSION`` = 2**32 - 1, a "task" index the permuted-image streams never reach):
the target from ``(seed, DATA, REGRESSION, 0)``, period p's flipping bits from
``(seed, DATA, REGRESSION, 1, p)`` (with ``flip_one`` the initial bits from p = 0 and the
toggled index of period p >= 1 from p), and the noise bits of bin (task) t from
``(seed, DATA, REGRESSION, 2, t)``. Everything follows from (seed, bin) alone, so a resumed
run needs no generator state and the probes can regenerate any bin.

The "task" of a regression run is a bin of ``bin_size`` consecutive steps: the runner records
the bin's mean squared online error as it records a permuted task's accuracy.
"""

from __future__ import annotations

import torch

from ..seeding import DATA, generator

REGRESSION = 2**32 - 1
NUM_BITS, FLIPPING_BITS = 20, 15


def target_network(seed: int, num_units: int, beta: float = 0.7) -> dict[str, torch.Tensor]:
    """The fixed LTU target of ``seed``: W (M, 20), b (M,), v (M,), c (), tau (M,), all float64."""
    g = generator(seed, DATA, REGRESSION, 0)

    def signs(*shape):
        return torch.randint(0, 2, shape, generator=g).double() * 2 - 1

    W, b, v, c = signs(num_units, NUM_BITS), signs(num_units), signs(num_units), signs(1)[0]
    return {"W": W, "b": b, "v": v, "c": c, "tau": ltu_thresholds(W, b, beta)}


def ltu_thresholds(W: torch.Tensor, b: torch.Tensor, beta: float = 0.7) -> torch.Tensor:
    """tau_j = beta (n + 1) - S_j with S_j = (n - sum_i w_ji + b_j) / 2, n = inputs (SPEC 2)."""
    n = W.shape[1]
    S = (n - W.sum(dim=1) + b) / 2
    return beta * (n + 1) - S


def target_outputs(target: dict, x: torch.Tensor) -> torch.Tensor:
    """y = v . feature(x) + c for inputs x (..., n) of bits 0/1 (float64).

    Evaluated once per DISTINCT input: a bin of [J]'s bit-flipping holds 40,000 steps but at most
    16 periods x 2^5 noise patterns, and the 500-LTU target on every step was most of a bin's time
    for the 5 x 6 learner (~0.3 s of ~0.32 s per member and bin). The numbers are those of every
    row computed on its own: weights, biases, inputs and features are integers, so every sum is
    exact in float64 (and tau a fixed number to compare with)."""
    n = target["W"].shape[1]
    bits = x.reshape(-1, n).double()
    codes = bits @ (2.0 ** torch.arange(n, dtype=torch.float64))  # each input's bits as one integer
    distinct, inverse = torch.unique(codes, return_inverse=True)
    inputs = ((distinct.long()[:, None] >> torch.arange(n)) & 1).double()
    features = ((inputs @ target["W"].T + target["b"]) > target["tau"]).double()
    return (features @ target["v"] + target["c"])[inverse].reshape(x.shape[:-1])


class RegressionStream:
    """The bins (tasks) of K members, each from its own seed; chunks of (x (K,n,20), y (K,n))."""

    def __init__(self, seeds: list[int], bin_size: int, flip_after: int, num_target_units: int,
                 flip_one: bool = False, beta: float = 0.7, device="cpu", dtype=torch.float32,
                 chunk_examples: int = 1000):
        self.seeds = list(seeds)
        self.examples_per_task = bin_size
        self.flip_after, self.flip_one, self.beta = flip_after, flip_one, beta
        self.num_features, self.num_outputs = NUM_BITS, 1
        self.device = torch.device(device)
        self.dtype = dtype
        self.chunk_examples = chunk_examples
        self.targets = [target_network(s, num_target_units, beta) for s in self.seeds]
        self._flip_cache: dict[int, tuple[int, torch.Tensor]] = {}

    # ------------------------------------------------------------------ the generator
    def period_bits(self, seed: int, period: int) -> torch.Tensor:
        """The f flipping bits (float64 0/1) of ``period`` for member ``seed``."""
        if not self.flip_one:
            g = generator(seed, DATA, REGRESSION, 1, period)
            return torch.randint(0, 2, (FLIPPING_BITS,), generator=g).double()
        p, bits = self._flip_cache.get(seed, (None, None))
        if p is None or p > period:  # replay the toggles from the initial bits
            p, bits = 0, torch.randint(0, 2, (FLIPPING_BITS,), generator=generator(seed, DATA, REGRESSION, 1, 0)).double()
        bits = bits.clone()
        for q in range(p + 1, period + 1):
            i = int(torch.randint(0, FLIPPING_BITS, (1,), generator=generator(seed, DATA, REGRESSION, 1, q)))
            bits[i] = 1.0 - bits[i]
        self._flip_cache[seed] = (period, bits)
        return bits.clone()

    def member_bin(self, k: int, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member k's inputs (n, 20) and targets (n,) of bin ``task`` (float64, CPU)."""
        seed, n = self.seeds[k], self.examples_per_task
        steps = torch.arange(task * n, (task + 1) * n)
        periods = steps // self.flip_after
        x = torch.empty(n, NUM_BITS, dtype=torch.float64)
        for p in periods.unique().tolist():
            x[periods == p, :FLIPPING_BITS] = self.period_bits(seed, p)
        g = generator(seed, DATA, REGRESSION, 2, task)
        x[:, FLIPPING_BITS:] = torch.randint(0, 2, (n, NUM_BITS - FLIPPING_BITS), generator=g).double()
        return x, target_outputs(self.targets[k], x)

    # ------------------------------------------------------------------ the runner's / probes' interface
    def task_tensors(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the bin's data (K, n, 21): inputs then target, visiting order (K, n) = 0..n-1)."""
        data = torch.stack([torch.cat([x, y[:, None]], dim=1) for x, y in
                            (self.member_bin(k, task) for k in range(len(self.seeds)))])
        order = torch.arange(self.examples_per_task).expand(len(self.seeds), -1)
        return data.to(self.device, self.dtype), order.to(self.device)

    def gather(self, data: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (K, n, 20) and targets (K, n) of steps ``idx`` (K, n) of a bin's ``data``."""
        rows = torch.gather(data, 1, idx.unsqueeze(-1).expand(-1, -1, data.shape[2]))
        return rows[..., :NUM_BITS], rows[..., NUM_BITS]

    def chunks(self, task: int, batch_size: int = 1):
        """Yield (x, y) chunks covering the bin once, in order; chunk length is a multiple of B."""
        data, order = self.task_tensors(task)
        step = max(batch_size, self.chunk_examples // batch_size * batch_size)
        for start in range(0, self.examples_per_task, step):
            yield self.gather(data, order[:, start : start + step])
