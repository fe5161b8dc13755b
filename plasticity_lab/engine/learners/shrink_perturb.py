"""Shrink and Perturb (SPEC 3.3) on the population engine.

Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020; as used for loss of
plasticity by Dohare et al., Nature 2024 [D].

- ``mode='noise'`` ([D]): the shrink is the optimiser's weight decay lambda (coupled, set
  through the optimiser's weight_decay), and after every step N(0, sigma^2) noise is added
  to every weight and bias of every layer. Each member draws its noise from its own
  generator (ALGO/NOISE sub-stream), layer by layer, weights then biases, so member k of
  a population draws exactly what it draws alone.
- ``mode='toward_init'`` (Plasticine's variant): after every step
  theta <- s theta + (1 - s) theta_init, computed as theta + (1 - s) (theta_init - theta),
  for every weight and bias. ``sigma`` is not used in this mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...learners import Learner, LearnerSettings
from ...schema import PER_MEMBER, UNIT_INTERVAL, finite, non_negative, one_of, setting
from ...seeding import NOISE
from ..state import MEMBERS, PARTS
from .base import EngineLearner, member_generators, per_member_layer

MODES = ("noise", "toward_init")


@dataclass(frozen=True)
class ShrinkPerturbSettings(LearnerSettings):
    """Shrink and Perturb (SPEC 3.3): weight decay plus N(0, sigma^2) noise on every weight and
    bias after every step (mode noise, [D]), or theta <- s theta + (1 - s) theta_init (mode toward_init)."""

    name: str = "shrink_perturb"
    mode: str = setting("noise", one_of(*MODES))
    weight_decay: float = setting(1e-4, finite(non_negative), role=PER_MEMBER, label="Weight decay λ")
    sigma: float = setting(1e-5, finite(non_negative), role=PER_MEMBER, label="Perturbation σ")
    shrink: float = setting(0.99999, finite(UNIT_INTERVAL), role=PER_MEMBER, label="Shrink s")


class ShrinkPerturb(EngineLearner):
    """sigma (noise std, >= 0; [D] grid 1e-4, 1e-5, 1e-6) and shrink s ([0, 1]) per member."""

    def __init__(self, sigma=1e-5, mode="noise", shrink=0.99999):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; known: {list(MODES)}")
        self.sigma, self.mode, self.shrink = sigma, mode, shrink

    # checkpointed per member (engine/state.py): the noise generators, the initial weights and biases
    STATE = {"noise_gen": MEMBERS, "init_W": PARTS, "init_b": PARTS}
    REBUILT = ("sigma_host", "sigma_dev", "pull", "noise_W", "noise_b")  # from the settings; noise scratch

    def setup(self, pop) -> None:
        super().setup(pop)
        K = pop.K
        if self.mode == "noise":
            self.sigma_host = per_member_layer(self.sigma, K, 1, "sigma")[:, 0]
            self.sigma_dev = torch.tensor(self.sigma_host, device=pop.device, dtype=pop.dtype)
            self.noise_gen = member_generators(pop, NOISE)
            # float32 draws whatever the dtype, so a float64 run sees the same noise
            self.noise_W = [torch.zeros_like(W, dtype=torch.float32) for W in pop.W]
            self.noise_b = [torch.zeros_like(b, dtype=torch.float32) for b in pop.b]
        else:
            s = per_member_layer(self.shrink, K, 1, "shrink")[:, 0]
            self.pull = torch.tensor(1.0 - s, device=pop.device, dtype=pop.dtype)  # 1 - s
            self.init_W = [W.clone() for W in pop.W]
            self.init_b = [b.clone() for b in pop.b]

    @torch.no_grad()
    def after_step(self, pop, fwd) -> None:
        if self.mode == "noise":
            self._perturb(pop)
        else:
            for l in range(len(pop.W)):
                pop.W[l].lerp_(self.init_W[l], self.pull.view(-1, 1, 1))
                pop.b[l].lerp_(self.init_b[l], self.pull.view(-1, 1))

    def _perturb(self, pop) -> None:
        members = np.flatnonzero(self.sigma_host > 0)
        if len(members) == 0:
            return
        for k in members:
            g = self.noise_gen[k]
            for l in range(len(pop.W)):
                self.noise_W[l][k].normal_(generator=g)
                self.noise_b[l][k].normal_(generator=g)
        for l in range(len(pop.W)):  # members with sigma 0 have zero noise buffers (never drawn)
            pop.W[l].addcmul_(self.noise_W[l].to(pop.dtype), self.sigma_dev.view(-1, 1, 1))
            pop.b[l].addcmul_(self.noise_b[l].to(pop.dtype), self.sigma_dev.view(-1, 1))

    def freeze(self, pop, k: int) -> None:
        if self.mode == "noise":
            self.sigma_host[k] = 0.0
            self.sigma_dev[k] = 0.0
            for buf in (*self.noise_W, *self.noise_b):
                buf[k].zero_()
        else:
            self.pull[k] = 0.0


LEARNER = Learner(ShrinkPerturbSettings, label="Shrink & Perturb", order=2, engine=ShrinkPerturb,
                  reference="ShrinkPerturb")
