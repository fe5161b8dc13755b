"""Activation-adapted low/high utility rescaling (SPEC 3.5) in the kernel backend; Purice 2025 [P].

Compiled (called by kernel/step.py every step): ``adapted_decide`` (steps 1-3's counting: ages,
#eligible, n_low = floor of the low accumulator, n_high from the units still eligible) and
``adapted_statistics`` (step 1: u <- lerp(u, mean_batch a, 1 - eta), a the SIGNED activation).

Python (at an event, ``KernelAdaptedRescaling.handle_event``): for the member, layer by layer,
the low pass (the n_low eligible units with the LOWEST u_hat: input row and bias times c_low,
age = u = 0) then the high pass (HIGHEST u_hat among the units still eligible, times c_high),
then the clip (step 5): ``every_step`` clamps every hidden layer (on other steps the kernel
fuses that clamp into the update), ``on_rescale`` only the layers rescaled at this step.

``KernelAdaptedRescaling`` IS the engine's ``AdaptedRescaling`` (hyperparameters, checkpointed
state, ``utility_stats``, ``freeze``) with its ages and utilities in the kernel's flat arrays.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from ...engine.learners.adapted import AdaptedRescaling
from ..codes import CLIP_EVERY_STEP, CLIP_NONE, CLIP_ON_RESCALE, F_CLIP, H_CLIP, LEARNER_ADAPTED
from ..layout import R_SIZES, R_UOFF
from .base import (ACTIVE, AGE_ONE, ETA, MATURITY, NUM_ROWS, ONE_MINUS_ETA, RATE_A, RATE_B, KernelLearner, accumulate,
                   age_layer, age_one, bias_correction_factor, lerp, lowest_first)


@njit(cache=True)
def adapted_decide(layout, lp, age, acc_low, acc_high, n_due, L):
    """n_due[0, l] (low pass) and n_due[1, l] (high pass) for every hidden layer; returns whether any is due."""
    event = False
    for l in range(L):
        n_due[0, l] = 0
        n_due[1, l] = 0
        if lp[ACTIVE, l] == 0:
            continue
        eligible = age_layer(layout, lp, age, l)
        n_low = accumulate(acc_low, l, lp[RATE_A, l], eligible)
        n_high = accumulate(acc_high, l, lp[RATE_B, l], eligible - n_low)  # the low pass's units have age 0
        n_due[0, l] = n_low
        n_due[1, l] = n_high
        if n_low > 0 or n_high > 0:
            event = True
    return event


@njit(cache=True)
def adapted_statistics(layout, lpt, u, h, B, L):
    """Step 1 after the step's update: u <- lerp(u, mean_batch a, 1 - eta) (a signed; no |.|)."""
    for l in range(L):
        if lpt[ACTIVE, l] == 0:
            continue
        o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
        w = lpt[ONE_MINUS_ETA, l]
        for i in range(o, o + H):
            mean_h = h[0, i]
            for b in range(1, B):
                mean_h += h[b, i]
            if B > 1:
                mean_h /= B
            u[i] = lerp(u[i], mean_h, w)


class KernelAdaptedRescaling(KernelLearner, AdaptedRescaling):
    """The engine's AdaptedRescaling with its ages and utilities in the kernel's flat (K, units) arrays."""

    LEARNER_CODE = LEARNER_ADAPTED

    def setup(self, pop) -> None:
        super().setup(pop)
        K, L, layout = pop.K, pop.spec.num_hidden, pop.layout
        self.units = torch.zeros(2, K, layout.num_hidden_units, dtype=pop.dtype)  # age, u
        self.age = [layout.hidden_view(self.units[0], l) for l in range(L)]
        self.u = [layout.hidden_view(self.units[1], l) for l in range(L)]
        eta = np.stack([e.cpu().double().numpy()[:, 0] for e in self.eta], axis=1)  # (K, L)
        lp = np.zeros((K, NUM_ROWS, L))
        lp[:, RATE_A] = self.rates["low"]
        lp[:, RATE_B] = self.rates["high"]
        lp[:, ETA] = eta
        lp[:, MATURITY] = self.m
        lp[:, ACTIVE] = self.active
        lp[:, ONE_MINUS_ETA] = 1.0 - eta
        lp[:, AGE_ONE] = age_one(eta, np.dtype(str(pop.dtype).removeprefix("torch.")))
        self.lp = lp
        self.factors_np = {side: c.cpu().numpy() for side, c in self.factors.items()}  # (K, L) in the dtype
        self._none = (np.zeros(0, self.units.numpy().dtype), np.zeros(0))

    def kernel_state(self, k: int) -> tuple:
        units = self.units.numpy()
        no_f, no_sums = self._none
        return (self.lp[k], units[0, k], no_f, units[1, k], self.acc["low"][k], self.acc["high"][k],
                no_sums, no_sums)

    def kernel_flags(self, k: int, flags: np.ndarray, hyper: np.ndarray) -> None:
        super().kernel_flags(k, flags, hyper)
        clip = self.clip_bound(k)
        flags[F_CLIP] = (CLIP_NONE if not math.isfinite(clip)
                         else CLIP_EVERY_STEP if self.clip_mode == "every_step" else CLIP_ON_RESCALE)
        hyper[H_CLIP] = clip

    def after_load(self) -> None:
        """Nothing to rebuild: the kernel counts eligible units from the ages at every step."""

    def freeze(self, pop, k: int) -> None:
        super().freeze(pop, k)
        self.lp[k, ACTIVE] = 0.0

    def clip_bound(self, k: int) -> float:
        """Member k's clip (inf = none)."""
        return float(self.clip_host[k])

    def handle_event(self, pop, k: int, n_due: np.ndarray, sync: np.ndarray) -> None:
        """Steps 2-5 for member k: the low then the high pass of every hidden layer, then the clip."""
        layout = pop.layout
        units_np = self.units.numpy()
        for l in np.flatnonzero(n_due.sum(axis=0)):
            o, H = layout.uoff[l], layout.sizes[l + 1]
            age, u = units_np[0, k, o : o + H], units_np[1, k, o : o + H]
            u_hat = u / bias_correction_factor(self.lp[k, ETA, l], age)
            W, b = pop.layer_arrays(k, l)
            for row, side in ((0, "low"), (1, "high")):
                n = int(n_due[row, l])
                if n == 0:
                    continue
                keys = u_hat if side == "low" else -u_hat  # low: smallest u_hat first; high: largest first
                units = lowest_first(keys, age > self.lp[k, MATURITY, l], n)
                c = self.factors_np[side][k, l]
                W[:, units] *= c  # input row and bias; outgoing weights and optimiser state untouched
                b[units] *= c
                age[units] = 0.0
                u[units] = 0.0
        self.counts["units_rescaled_low"][k] += n_due[0]
        self.counts["units_rescaled_high"][k] += n_due[1]
        clip = self.clip_bound(k)
        if math.isfinite(clip):
            rescaled = n_due.sum(axis=0) > 0
            for l in range(pop.spec.num_hidden):
                if self.clip_mode == "every_step" or rescaled[l]:
                    for a in pop.layer_arrays(k, l):
                        np.clip(a, -clip, clip, out=a)
