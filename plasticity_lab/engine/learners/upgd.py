"""UPGD, utility-based perturbed gradient descent, on the population engine.

Elsayed & Mahmood, "Addressing Loss of Plasticity and Catastrophic Forgetting in Continual
Learning", ICLR 2024 (arXiv:2404.00781); code: github.com/mohmdelsayed/upgd. Its first-order,
globally scaled variant (the paper's UPGD, its Algorithm 1 with the first-order utility), for every
weight and bias w of the network, at step t (the steps taken, this one included):

1. first-order utility of w: the change of the loss if w were removed, to first order,
   u~ = -g w, with g the loss gradient dL/dw;
2. its running average, decay ``beta_utility`` (beta_u): u <- beta_u u + (1 - beta_u) u~;
3. eta = the largest running utility u over every weight and bias of the network (per member),
   taken before the bias correction, as the algorithm and the authors' implementation take it;
4. the scaled utility s = sigmoid(u_hat / eta), u_hat = u / (1 - beta_u^t) (bias-corrected);
5. the update w <- w - alpha [(g + xi) (1 - s)], xi ~ N(0, ``sigma``^2) drawn afresh per weight and
   step, alpha the optimiser's step size: useful weights (s near 1) are protected from change and
   noise, useless ones (s near 0) are perturbed.

UPGD acts inside the update (``transform_gradients``): it replaces every gradient g by
(g + xi) (1 - s) and the optimiser steps on that. With SGD (the paper's setting), and the optional
``weight_decay`` lambda as the optimiser's coupled weight decay, the step is the authors' weight-decayed
UPGD exactly: w <- (1 - alpha lambda) w - alpha (g + xi) (1 - s). With momentum or Adam, the transformed
gradient goes through them as any gradient (a composition the paper does not study; its adaptive
variant is another algorithm). Step size: the paper's rule steps by alpha (so does the code of its
experiments); the snippet in the authors' README steps by 2 alpha, which is this rule at step size 2 alpha.
eta is not guarded: should every running utility of a member be <= 0 the scaling follows the formula
as written (eta = 0: the update is NaN and the member is recorded as diverged).

The noise comes from the member's ALGO/NOISE generator (seeding.py), float32 draws whatever the dtype,
layer by layer, weights then biases, so member k of a population draws exactly what it draws alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...learners import Learner, LearnerSettings
from ...schema import DECAY, PER_MEMBER, finite, non_negative, setting
from ...seeding import NOISE
from ..state import MEMBERS, PARTS
from .base import EngineLearner, member_generators, per_member_layer


@dataclass(frozen=True)
class UPGDSettings(LearnerSettings):
    """UPGD (Elsayed & Mahmood 2024), the paper's names: ``beta_utility`` in [0, 1), ``sigma`` >= 0 (the
    perturbation's std), ``weight_decay`` >= 0 (coupled, through the optimiser). Defaults: the authors'
    published implementation's (beta_utility 0.999, sigma 0.001, weight_decay 0.001)."""

    name: str = "upgd"
    beta_utility: float = setting(0.999, finite(DECAY), role=PER_MEMBER, label="Utility decay β_utility")
    sigma: float = setting(1e-3, finite(non_negative), role=PER_MEMBER, label="Perturbation σ")
    weight_decay: float = setting(1e-3, finite(non_negative), role=PER_MEMBER, label="Weight decay λ")


class UPGD(EngineLearner):
    """beta_utility and sigma per member (module docstring)."""

    def __init__(self, beta_utility=0.999, sigma=1e-3):
        self.beta_utility, self.sigma = beta_utility, sigma

    # checkpointed per member (engine/state.py): the running utilities of every weight and bias, the
    # noise generators
    STATE = {"u_W": PARTS, "u_b": PARTS, "noise_gen": MEMBERS}
    # from the settings; the members still training; the noise drawn every step
    REBUILT = ("beta", "one_minus_beta", "beta_64", "sigma_host", "sigma_dev", "live", "noise_W", "noise_b")

    def setup(self, pop) -> None:
        super().setup(pop)
        dev = dict(device=pop.device, dtype=pop.dtype)
        beta = per_member_layer(self.beta_utility, pop.K, 1, "beta_utility")[:, 0]
        self.beta_64 = torch.tensor(beta, device=pop.device, dtype=torch.float64)  # for 1 - beta^t
        self.beta = torch.tensor(beta, **dev)
        self.one_minus_beta = torch.tensor(1.0 - beta, **dev)  # 1 - beta in float64 first
        self.sigma_host = per_member_layer(self.sigma, pop.K, 1, "sigma")[:, 0]
        self.sigma_dev = torch.tensor(self.sigma_host, **dev)
        self.live = torch.ones(pop.K, dtype=torch.bool, device=pop.device)
        self.noise_gen = member_generators(pop, NOISE)
        self.u_W = [torch.zeros_like(W) for W in pop.W]
        self.u_b = [torch.zeros_like(b) for b in pop.b]
        # float32 draws whatever the dtype, so a float64 run sees the same noise
        self.noise_W = [torch.zeros_like(W, dtype=torch.float32) for W in pop.W]
        self.noise_b = [torch.zeros_like(b, dtype=torch.float32) for b in pop.b]

    @torch.no_grad()
    def transform_gradients(self, pop, grads: list) -> None:
        """Every gradient g (in ``grads``) becomes (g + xi) (1 - s) (module docstring, steps 1-5)."""
        parts = [(pop.W[l], gW, self.u_W[l], self.noise_W[l]) for l, (gW, _) in enumerate(grads)]
        parts += [(pop.b[l], gb, self.u_b[l], self.noise_b[l]) for l, (_, gb) in enumerate(grads)]
        eta = None
        for w, g, u, _ in parts:  # 1-3: u <- beta u + (1 - beta)(-g w), and eta = the largest u
            shape = (-1,) + (1,) * (w.dim() - 1)
            u.mul_(self.beta.view(shape)).addcmul_(torch.mul(g, w), self.one_minus_beta.view(shape), value=-1.0)
            largest = u.flatten(1).amax(dim=1)
            eta = largest if eta is None else torch.maximum(eta, largest)
        eta = torch.where(self.live, eta, torch.ones_like(eta))  # a frozen member's utilities are all 0
        bias_correction = (1.0 - torch.pow(self.beta_64, pop.t)).to(pop.dtype)  # 1 - beta^t
        self._draw_noise(pop)
        for w, g, u, noise in parts:  # 4-5: s = sigmoid(u_hat / eta); g <- (g + xi)(1 - s)
            shape = (-1,) + (1,) * (w.dim() - 1)
            s = torch.div(u, bias_correction.view(shape)).div_(eta.view(shape)).sigmoid_()
            g.addcmul_(noise.to(pop.dtype), self.sigma_dev.view(shape))
            g.mul_(s.neg_().add_(1.0))

    def _draw_noise(self, pop) -> None:
        """xi ~ N(0, 1) for every weight and bias of the members with sigma > 0 (the others keep zeros),
        member by member from its own generator, layer by layer, weights then biases."""
        for k in np.flatnonzero(self.sigma_host > 0):
            gen = self.noise_gen[k]
            for l in range(len(pop.W)):
                self.noise_W[l][k].normal_(generator=gen)
                self.noise_b[l][k].normal_(generator=gen)

    def freeze(self, pop, k: int) -> None:
        """Member k diverged: no more noise, zero utilities (its weights are zero: they stay zero)."""
        self.live[k] = False
        self.sigma_host[k] = 0.0
        self.sigma_dev[k] = 0.0
        for buf in (*self.u_W, *self.u_b, *self.noise_W, *self.noise_b):
            buf[k].zero_()


LEARNER = Learner(UPGDSettings, label="UPGD", order=7, engine=UPGD, reference="UPGD")
