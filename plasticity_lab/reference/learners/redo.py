"""ReDo, readable (SPEC 3.6, Sokar et al. 2023): the ground truth for engine/learners/redo.py."""

from __future__ import annotations

import torch

from ...seeding import ALGO, REINIT, generator
from .base import ReadableLearner, per_layer


class ReDo(ReadableLearner):
    """SPEC 3.6, Sokar et al. 2023: every reset_period steps recycle units with score <= tau."""

    COUNTS = ("units_reset",)

    def __init__(self, reset_period=100, tau=0.1):
        self.reset_period, self.tau = reset_period, tau

    def setup(self, learner) -> None:
        super().setup(learner)
        self.taus = per_layer(self.tau, self.L, "tau")
        dtype = self.linears[0].weight.dtype
        self.act_sum = [torch.zeros(H, dtype=dtype) for H in self.spec.sizes[1:-1]]
        self.examples = 0
        self.steps = 0
        self.reinit_gen = generator(self.seed, ALGO, REINIT)

    @torch.no_grad()
    def after_step(self, features: list[torch.Tensor]) -> None:
        for l, h in enumerate(features):
            self.act_sum[l] += h.abs().sum(dim=0)
        self.examples += features[0].shape[0]
        self.steps += 1
        if self.steps % self.reset_period:
            return
        for l in range(self.L):
            mean_abs = self.act_sum[l] / self.examples
            score = mean_abs / (mean_abs.mean() + 1e-9)
            dormant = torch.nonzero(score <= self.taus[l]).flatten()
            if len(dormant):
                self.replace_units(l, dormant, self.reinit_gen)
                self.counts["units_reset"][l] += len(dormant)
            self.act_sum[l].zero_()
        self.examples = 0
