"""The reference learner behind the population interface, one network at a time.

Lets the runner drive K reference networks exactly like the engine (same data chunks,
same recording), so engine-vs-reference comparisons run through the same code path.
"""

from __future__ import annotations

import torch

from ..network import NetworkSpec
from .learner import ReferenceLearner


class ReferencePopulation:
    """K ReferenceLearners with the engine's ``train`` / ``take_totals`` / ``freeze`` interface."""

    def __init__(self, spec: NetworkSpec, seeds: list[int], step_size: list[float],
                 weight_decay: list[float], device="cpu", dtype=torch.float32):
        self.spec = spec
        self.K = len(seeds)
        self.members = [ReferenceLearner(spec, s, a, w, device).to(dtype)
                        for s, a, w in zip(seeds, step_size, weight_decay)]
        self.loss_sum = [0.0] * self.K
        self.correct = [0] * self.K
        self.frozen = [False] * self.K

    def train(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1) -> None:
        for k, member in enumerate(self.members):
            if self.frozen[k]:
                continue
            for s in range(0, x.shape[1], batch_size):
                loss, correct = member.step(x[k, s : s + batch_size], y[k, s : s + batch_size])
                self.loss_sum[k] += loss
                self.correct[k] += correct

    def take_totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.tensor(self.loss_sum, dtype=torch.float64), torch.tensor(self.correct)
        self.loss_sum = [0.0] * self.K
        self.correct = [0] * self.K
        return out

    def freeze(self, k: int) -> None:
        self.frozen[k] = True

    def parameters_of(self, k: int):
        return self.members[k].parameters()
