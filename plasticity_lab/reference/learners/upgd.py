"""UPGD, readable (Elsayed & Mahmood, ICLR 2024): the ground truth for engine/learners/upgd.py,
whose docstring states the algorithm (the first-order, globally scaled UPGD of the paper's Algorithm 1)."""

from __future__ import annotations

import torch

from ...seeding import ALGO, NOISE, generator
from .base import ReadableLearner


class UPGD(ReadableLearner):
    """Running first-order utilities of every weight and bias; each gradient g becomes
    (g + xi) (1 - sigmoid(u_hat / eta)) before the optimiser's step."""

    def __init__(self, beta_utility=0.999, sigma=1e-3):
        self.beta_utility, self.sigma = beta_utility, sigma

    def setup(self, learner) -> None:
        super().setup(learner)
        self.params = [p for layer in self.linears for p in (layer.weight, layer.bias)]
        self.running = [torch.zeros_like(p) for p in self.params]  # u, the running utility of each weight
        self.steps = 0  # t
        self.noise_gen = generator(self.seed, ALGO, NOISE)

    @torch.no_grad()
    def transform_gradients(self) -> None:
        beta = self.beta_utility
        self.steps += 1
        for w, u in zip(self.params, self.running):
            instantaneous = -w.grad * w  # first-order utility: the loss change if w were zero
            u.mul_(beta).add_(instantaneous * (1 - beta))
        eta = max(u.max() for u in self.running)  # over the whole network, before the bias correction
        bias_correction = 1 - beta**self.steps
        for w, u in zip(self.params, self.running):
            noise = torch.randn(w.shape, generator=self.noise_gen).to(w) if self.sigma > 0 else torch.zeros_like(w)
            scaled_utility = torch.sigmoid(u / bias_correction / eta)
            w.grad = (w.grad + noise * self.sigma) * (1 - scaled_utility)
