"""Continual Backpropagation, readable (SPEC 3.4): the ground truth for engine/learners/cbp.py."""

from __future__ import annotations

import math

import torch

from ...engine.learners.cbp import CBP_REINIT_GAIN
from ...seeding import ALGO, COIN, REINIT, UTIL, UniformStream, generator
from .base import ReadableLearner, lowest, per_layer


class ContinualBackprop(ReadableLearner):
    """SPEC 3.4, Dohare et al. 2024 [D] (GnT); per-layer rates [J]; [P]'s high-utility pass
    (``high_replacement_rate``) and re-initialisation without the activation gain
    (``reinit='no_gain'``), SPEC 5 "Preset fidelity"."""

    COUNTS = ("units_reset",)

    def __init__(self, replacement_rate=1e-4, decay_rate=0.99, maturity_threshold=100,
                 util_type="adaptable_contribution", accumulate=True, bias_correction=False,
                 high_replacement_rate=0.0, reinit="init"):
        self.replacement_rate, self.decay_rate = replacement_rate, decay_rate
        self.maturity_threshold, self.util_type = maturity_threshold, util_type
        self.accumulate, self.bias_correction = accumulate, bias_correction
        self.high_replacement_rate, self.reinit = high_replacement_rate, reinit

    def setup(self, learner) -> None:
        super().setup(learner)
        L, widths = self.L, self.spec.sizes[1:-1]
        self.rho = per_layer(self.replacement_rate, L, "replacement_rate")
        self.rho_high = per_layer(self.high_replacement_rate, L, "high_replacement_rate")
        self.eta = per_layer(self.decay_rate, L, "decay_rate")
        self.m = per_layer(self.maturity_threshold, L, "maturity_threshold")
        dtype = self.linears[0].weight.dtype
        self.age = [torch.zeros(H, dtype=dtype) for H in widths]
        self.f = [torch.zeros(H, dtype=dtype) for H in widths]  # running mean activation
        self.u = [torch.zeros(H, dtype=dtype) for H in widths]  # running utility
        self.acc = [0.0] * L  # fractional replacements carried over (low-utility pass)
        self.acc_high = [0.0] * L  # ... of the high-utility pass
        self.reinit_gen = generator(self.seed, ALGO, REINIT)
        self.util_gen = generator(self.seed, ALGO, UTIL)
        self.coins = UniformStream(generator(self.seed, ALGO, COIN))

    def acts_on(self, l: int) -> bool:
        return self.rho[l] > 0 or self.rho_high[l] > 0

    @torch.no_grad()
    def after_step(self, features: list[torch.Tensor]) -> None:
        u_hat = [None] * self.L
        f_hat = [None] * self.L
        for l in range(self.L):
            if not self.acts_on(l):
                continue  # step 1: a layer whose rates are 0 skips the whole algorithm
            h, eta = features[l], self.eta[l]
            # 1-2. ages and the running mean activation, bias-corrected
            self.age[l] += 1
            self.f[l] = torch.lerp(self.f[l], h.mean(dim=0), 1 - eta)  # eta f + (1 - eta) mean_batch(h)
            bias_correction = 1 - eta**self.age[l]
            f_hat[l] = self.f[l] / bias_correction
            # 3. instantaneous utility and its running average
            x = self.instantaneous_utility(l, h, f_hat[l])
            self.u[l] = torch.lerp(self.u[l], x, 1 - eta)  # eta u + (1 - eta) x
            u_hat[l] = self.u[l] / bias_correction
        # 4-8: the low-utility pass in every layer, then [P]'s high-utility pass (its units: the
        # mature ones left after the low pass, chosen by this step's utilities)
        for high, rates in ((False, self.rho), (True, self.rho_high)):
            chosen = [None] * self.L
            for l in range(self.L):
                if rates[l] == 0:
                    continue
                # 4-5. eligible units and how many to replace
                eligible = self.age[l] > self.m[l]
                n = self.how_many(l, int(eligible.sum()), high)
                if n == 0:
                    continue
                keys = u_hat[l]
                if self.util_type == "random":
                    keys = torch.rand(len(keys), generator=self.util_gen).to(keys)
                chosen[l] = lowest(-keys if high else keys, eligible, n)  # highest / lowest utility first
            for l in range(self.L):  # 6-8. replace, layer by layer
                units = chosen[l]
                if units is None:
                    continue
                if self.bias_correction:
                    next_layer = self.linears[l + 1]
                    next_layer.bias += (next_layer.weight[:, units] * f_hat[l][units]).sum(dim=1)
                self.replace_units(l, units, self.reinit_gen, CBP_REINIT_GAIN[self.reinit])
                self.age[l][units] = 0
                self.u[l][units] = 0
                self.f[l][units] = 0
                self.counts["units_reset"][l] += len(units)

    def instantaneous_utility(self, l: int, h: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
        out_mag = self.linears[l + 1].weight.abs().mean(dim=0)  # mean_k |W_next[k, i]|
        in_mag = self.linears[l].weight.abs().mean(dim=1)  # mean_j |W_in[i, j]|
        deviation = (h - f_hat).abs().mean(dim=0)  # mean_batch |h_i - f_hat_i|
        kind = self.util_type
        if kind == "contribution":
            return out_mag * h.abs().mean(dim=0)
        if kind == "adaptable_contribution":
            return out_mag * deviation / in_mag
        if kind == "zero_contribution":
            return out_mag * deviation
        if kind == "weight":
            return out_mag
        if kind == "adaptation":
            return 1 / in_mag
        if kind == "feature_by_input":
            return deviation / in_mag
        if kind == "random":
            return torch.zeros_like(out_mag)  # u_hat is a fresh U(0, 1) draw when units are chosen
        raise ValueError(f"unknown util_type {kind!r}")

    def how_many(self, l: int, eligible: int, high: bool = False) -> int:
        """Step 5 for one pass (``high``: the high-utility pass, its own rate and accumulator):
        accumulate fractional replacements, or (accumulate=false) the coin rule."""
        rate, acc = (self.rho_high, self.acc_high) if high else (self.rho, self.acc)
        expected = rate[l] * eligible
        if self.accumulate:
            acc[l] += expected
            n = math.floor(acc[l])
            acc[l] -= n
            return n
        if eligible > 0 and expected < 1:
            return 1 if self.coins.next() <= expected else 0
        return math.floor(expected)
