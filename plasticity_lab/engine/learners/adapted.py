"""Activation-adapted low/high utility rescaling (SPEC 3.5) on the population engine.

V. Purice, "Maintaining Plasticity for Deep Continual Learning: Activation Function-Adapted
Parameter Resetting Approaches", TU Delft BSc thesis, 2025 [P].

Per hidden layer l and step, for every member at once:

1. age += 1; u <- eta u + (1 - eta) mean_batch(a), a the SIGNED post-activation;
   u_hat = u / (1 - eta^age);
2. low pass: c_low_acc += rho_low[l] * #eligible (age > m); n = floor; the n eligible units
   with the LOWEST u_hat have their input row AND bias multiplied by c_low[l]; age = u = 0;
3. high pass: the same with rho_high[l], c_high[l] and the HIGHEST u_hat among the units
   still eligible (the low pass's units have age 0);
4. outgoing weights and optimiser state are not touched;
5. ``clip`` (per member; None/inf disables): clamp every hidden layer's weights and biases to
   [-clip, clip] after the passes, every step (SPEC 3.5 step 5). ``clip_mode='on_rescale'``
   instead clamps only a layer in which some unit was rescaled at this step, which is what
   [P]'s code does (it clamps inside its rescaling routine).

A layer whose rho_low and rho_high are both 0 (for a member) is skipped like a CBP layer
with rate 0: its ages and utilities stay 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import UtilityLearner, Maturity, chosen_units, how_many, lowest_first, per_member_layer

CLIP_MODES = ("every_step", "on_rescale")


class AdaptedRescaling(UtilityLearner):
    """[P]'s rescaling for K members; c_low, c_high, rho_low, rho_high, decay_rate and
    maturity_threshold per member and hidden layer, clip per member.

    c_low, c_high: factors for the input row and bias, any real ([P] grid -2 ... 2);
    rho_low, rho_high: fractions of eligible units per step, [0, 1] ([P] grid 1e-2 ... 1e-7);
    decay_rate (eta) 0.99, maturity_threshold (m) 100; clip 10.0 (None disables).
    """

    COUNTS = ("units_rescaled_low", "units_rescaled_high")

    def __init__(self, c_low=-0.5, c_high=0.5, rho_low=1e-4, rho_high=1e-5, decay_rate=0.99,
                 maturity_threshold=100, clip=10.0, clip_mode="every_step"):
        if clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode={clip_mode!r}; known: {list(CLIP_MODES)}")
        self.c_low, self.c_high = c_low, c_high
        self.rho_low, self.rho_high = rho_low, rho_high
        self.decay_rate = decay_rate
        self.maturity_threshold = maturity_threshold
        self.clip = clip
        self.clip_mode = clip_mode

    _member_state = ("age", "u", "acc")  # checkpointed per member (engine/state.py)

    def setup(self, pop) -> None:
        super().setup(pop)
        K, L = pop.K, pop.spec.num_hidden
        dev = dict(device=pop.device, dtype=pop.dtype)
        self.rates = {"low": per_member_layer(self.rho_low, K, L, "rho_low"),
                      "high": per_member_layer(self.rho_high, K, L, "rho_high")}
        self.factors = {"low": torch.tensor(per_member_layer(self.c_low, K, L, "c_low"), **dev),
                        "high": torch.tensor(per_member_layer(self.c_high, K, L, "c_high"), **dev)}
        self._setup_layers(pop, (self.rates["low"] > 0) | (self.rates["high"] > 0))
        self.u = [torch.zeros(K, H, **dev) for H in self.widths]  # running mean of the signed activation
        self.acc = {"low": np.zeros((K, L)), "high": np.zeros((K, L))}
        clip = per_member_layer([math.inf if c is None else c for c in self._members(self.clip, K)], K, 1, "clip")
        self.clip_host = clip[:, 0]
        self._uniform_clip = float(clip[0, 0]) if (clip == clip[0, 0]).all() else None
        self._bc = [None] * L

    @staticmethod
    def _members(value, K):
        return list(value) if isinstance(value, (list, tuple)) else [value] * K

    @torch.no_grad()
    def after_step(self, pop, fwd) -> None:
        t = pop.t
        eligible = self.maturity.eligible(t)
        n_low = how_many(self.acc["low"], self.rates["low"], eligible)
        n_high = how_many(self.acc["high"], self.rates["high"], eligible - n_low)
        for l in self.layers:
            self._statistics(l, fwd.inputs[l + 1])
        for l in self.layers:
            for side, n in (("low", n_low[:, l]), ("high", n_high[:, l])):
                if n.any():
                    self._rescale(pop, l, side, n)
        n = n_low + n_high
        if n.any():
            self.maturity.reset(t, n)
            self.counts["units_rescaled_low"] += n_low
            self.counts["units_rescaled_high"] += n_high
        self._clip(pop, n)

    def _statistics(self, l: int, h: torch.Tensor) -> None:
        eta, ome, age, u = self.eta[l], self.one_minus_eta[l], self.age[l], self.u[l]
        inactive = self.inactive[l]
        age.add_(1.0 if inactive is None else (~inactive).to(age.dtype))
        u.lerp_(h.squeeze(1) if h.shape[1] == 1 else h.mean(dim=1), ome)  # eta u + (1 - eta) mean_batch(a)
        self._bc[l] = torch.pow(eta, age).neg_().add_(1.0)  # 1 - eta^age
        if inactive is not None:
            u.masked_fill_(inactive, 0.0)

    def _rescale(self, pop, l: int, side: str, n: np.ndarray) -> None:
        """Multiply the input rows and biases of n[k] units of member k by c_side[k, l]."""
        members = np.flatnonzero(n)
        sel = torch.as_tensor(members, device=pop.device)
        u_hat = self.u[l][sel] / self._bc[l][sel]
        keys = u_hat if side == "low" else -u_hat  # low: smallest u_hat first; high: largest first
        eligible = self.age[l][sel] > self.m_dev[l][sel]
        kk, uu = chosen_units(lowest_first(keys, eligible), members, n, pop.device)
        c = self.factors[side][kk, l]
        pop.W[l][kk, uu] = pop.W[l][kk, uu] * c.unsqueeze(1)
        pop.b[l][kk, uu] = pop.b[l][kk, uu] * c
        self.age[l][kk, uu] = 0.0
        self.u[l][kk, uu] = 0.0

    def _clip(self, pop, n: np.ndarray) -> None:
        finite = np.isfinite(self.clip_host)
        if not finite.any():
            return
        L = pop.spec.num_hidden
        if self.clip_mode == "every_step":
            if self._uniform_clip is not None:  # one bound for every member: one pass per tensor
                c = self._uniform_clip
                for l in range(L):
                    pop.W[l].clamp_(-c, c)
                    pop.b[l].clamp_(-c, c)
            else:  # clamp with per-member tensor bounds is a slow kernel: clamp member by member
                for k in np.flatnonzero(finite):
                    c = float(self.clip_host[k])
                    for l in range(L):
                        pop.W[l][k].clamp_(-c, c)
                        pop.b[l][k].clamp_(-c, c)
        else:  # on_rescale: only (member, layer) pairs that rescaled something this step
            for k, l in zip(*np.nonzero((n > 0) & finite[:, None])):
                c = float(self.clip_host[k])
                pop.W[l][k].clamp_(-c, c)
                pop.b[l][k].clamp_(-c, c)

    def freeze(self, pop, k: int) -> None:
        for rates in self.rates.values():
            rates[k] = 0.0
        for state in (*self.age, *self.u):
            state[k].zero_()

