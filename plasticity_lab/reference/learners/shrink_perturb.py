"""Shrink and Perturb, readable (SPEC 3.3): the ground truth for engine/learners/shrink_perturb.py."""

from __future__ import annotations

import torch

from ...seeding import ALGO, NOISE, generator
from .base import ReadableLearner


class ShrinkPerturb(ReadableLearner):
    """SPEC 3.3: after every step, N(0, sigma^2) noise on every weight and bias (the shrink is
    the optimiser's weight decay), or (mode toward_init) theta <- s theta + (1 - s) theta_init."""

    def __init__(self, sigma=1e-5, mode="noise", shrink=0.99999):
        self.sigma, self.mode, self.shrink = sigma, mode, shrink

    def setup(self, learner) -> None:
        super().setup(learner)
        self.params = [p for layer in self.linears for p in (layer.weight, layer.bias)]
        self.initial = [p.detach().clone() for p in self.params]
        self.noise_gen = generator(self.seed, ALGO, NOISE)

    @torch.no_grad()
    def after_step(self, features) -> None:
        for p, p0 in zip(self.params, self.initial):
            if self.mode == "noise":
                if self.sigma > 0:
                    p += torch.randn(p.shape, generator=self.noise_gen).to(p) * self.sigma
            else:
                p.lerp_(p0, 1 - self.shrink)  # = s p + (1 - s) p0
