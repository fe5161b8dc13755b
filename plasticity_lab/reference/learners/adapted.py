"""Activation-adapted low/high utility rescaling, readable (SPEC 3.5) [P]: the ground truth for
engine/learners/adapted.py."""

from __future__ import annotations

import math

import torch

from ...engine.learners.adapted import PER_PASS_CLIP
from .base import ReadableLearner, lowest, per_layer


class AdaptedRescaling(ReadableLearner):
    """SPEC 3.5, Purice 2025 [P]: low/high utility rescaling of input rows and biases.

    ``schedule='per_step'`` (the published code): one age / utility update per step, the low
    then the high pass, then every hidden layer clamped to [-clip, clip]. ``schedule='per_pass'``
    ([P]'s "modified cfg" code, SPEC 5): each pass updates ages and utilities itself, and clamps a
    layer in which it rescaled a unit to [-5, 5] (weights) and [-10, 10] (biases).
    """

    COUNTS = ("units_rescaled_low", "units_rescaled_high")

    def __init__(self, c_low=-0.5, c_high=0.5, rho_low=1e-4, rho_high=1e-5, decay_rate=0.99,
                 maturity_threshold=100, clip=10.0, schedule="per_step"):
        self.c_low, self.c_high, self.rho_low, self.rho_high = c_low, c_high, rho_low, rho_high
        self.decay_rate, self.maturity_threshold = decay_rate, maturity_threshold
        self.clip, self.schedule = clip, schedule

    def setup(self, learner) -> None:
        super().setup(learner)
        L, widths = self.L, self.spec.sizes[1:-1]
        self.c = {"low": per_layer(self.c_low, L, "c_low"), "high": per_layer(self.c_high, L, "c_high")}
        self.rho = {"low": per_layer(self.rho_low, L, "rho_low"), "high": per_layer(self.rho_high, L, "rho_high")}
        self.eta = per_layer(self.decay_rate, L, "decay_rate")
        self.m = per_layer(self.maturity_threshold, L, "maturity_threshold")
        dtype = self.linears[0].weight.dtype
        self.age = [torch.zeros(H, dtype=dtype) for H in widths]
        self.u = [torch.zeros(H, dtype=dtype) for H in widths]  # running mean of the SIGNED activation
        self.acc = {"low": [0.0] * L, "high": [0.0] * L}

    def acts_on(self, l: int) -> bool:
        return self.rho["low"][l] > 0 or self.rho["high"][l] > 0

    @torch.no_grad()
    def after_step(self, features: list[torch.Tensor]) -> None:
        if self.schedule == "per_pass":
            for side in ("low", "high"):
                for l in range(self.L):
                    if self.rho[side][l] == 0:
                        continue  # a pass with rate 0 does nothing on this layer, not even age it
                    self.update_utility(l, features[l])
                    if self.rescale(l, side) and self.clip is not None:
                        layer = self.linears[l]
                        layer.weight.clamp_(-PER_PASS_CLIP["weights"], PER_PASS_CLIP["weights"])
                        layer.bias.clamp_(-PER_PASS_CLIP["biases"], PER_PASS_CLIP["biases"])
            return
        for l in range(self.L):
            if not self.acts_on(l):
                continue  # nothing to do on this layer
            self.update_utility(l, features[l])
            for side in ("low", "high"):  # low pass first; its units (age 0) are not eligible for the high pass
                self.rescale(l, side)
        if self.clip is not None:
            for layer in self.linears[: self.L]:
                layer.weight.clamp_(-self.clip, self.clip)
                layer.bias.clamp_(-self.clip, self.clip)

    def update_utility(self, l: int, a: torch.Tensor) -> None:
        """age += 1; u <- eta u + (1 - eta) mean_batch(a), a the signed post-activation."""
        self.age[l] += 1
        self.u[l] = torch.lerp(self.u[l], a.mean(dim=0), 1 - self.eta[l])

    def rescale(self, l: int, side: str) -> int:
        """One pass on layer l: the n eligible units with the lowest (highest) u_hat get their
        input row and bias multiplied by c_side; returns n."""
        u_hat = self.u[l] / (1 - self.eta[l] ** self.age[l])
        eligible = self.age[l] > self.m[l]
        self.acc[side][l] += self.rho[side][l] * int(eligible.sum())
        n = math.floor(self.acc[side][l])
        self.acc[side][l] -= n
        if n == 0:
            return 0
        units = lowest(u_hat if side == "low" else -u_hat, eligible, n)  # lowest or highest utility first
        layer = self.linears[l]
        layer.weight[units] *= self.c[side][l]  # input row AND bias; outgoing weights untouched
        layer.bias[units] *= self.c[side][l]
        self.age[l][units] = 0
        self.u[l][units] = 0
        self.counts[f"units_rescaled_{side}"][l] += n
        return n
