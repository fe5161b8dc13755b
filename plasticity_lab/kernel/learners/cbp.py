"""Continual Backpropagation (SPEC 3.4) in the kernel backend; Dohare et al. 2024 [D], per-layer rates [J].

Compiled (called by kernel/step.py every step): ``cbp_decide`` (steps 1, 4, 5: ages, #eligible,
how many units are due, by accumulation or the coin rule with the member's pre-drawn coins)
and ``cbp_statistics`` (steps 2-3: the running mean activation f and the running utility u of
every ``util_type``, from the step's activations and the fused |w| sums).

Python (at an event, ``KernelContinualBackprop.handle_event``): steps 6-8 for the member,
layer by layer as the engine does, with the member's own generators (REINIT for the fresh
input weights via ``network.init_weight``, UTIL for the ``random`` utility): the n eligible
units with the smallest u_hat (ties: lowest index), fresh input row, bias 0, optional bias
correction, outgoing weights 0, age = u = f = 0, optimiser state zeroed.

``KernelContinualBackprop`` IS the engine's ``ContinualBackprop`` (same hyperparameters,
same checkpointed state, probes' ``utility_stats``, ``freeze``) with its per-unit state in
the flat arrays the kernel reads.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from ...engine.learners.cbp import UTIL_TYPES, ContinualBackprop
from ...network import init_weight
from ..codes import F_ACCUMULATE, F_NEED_IN, F_NEED_OUT, F_UTIL, LEARNER_CBP
from ..layout import R_SIZES, R_UOFF
from .base import (ACTIVE, AGE_ONE, ETA, MATURITY, NUM_ROWS, ONE_MINUS_ETA, RATE_A, KernelLearner, accumulate, age_layer,
                   age_one, bias_correction_factor, lerp, lowest_first)

UTIL_CODES = {name: i for i, name in enumerate(UTIL_TYPES)}
CONTRIBUTION, ADAPTABLE, ZERO_CONTRIBUTION, WEIGHT, ADAPTATION, FEATURE_BY_INPUT, RANDOM = (
    UTIL_CODES[n] for n in ("contribution", "adaptable_contribution", "zero_contribution", "weight",
                            "adaptation", "feature_by_input", "random"))
NEEDS_IN_SUMS = {"adaptable_contribution", "adaptation", "feature_by_input"}  # mean_j |W_in[i, j]|
NEEDS_OUT_SUMS = {"contribution", "adaptable_contribution", "zero_contribution", "weight"}  # mean_k |W_next[k, i]|


@njit(cache=True)
def cbp_decide(layout, lp, age, acc, accumulate_on, coins, coin, n_due, L):
    """Steps 1, 4, 5 for every hidden layer: n_due[0, l] units due this step; returns (any due, coins used so far)."""
    event = False
    for l in range(L):
        n_due[0, l] = 0
        n_due[1, l] = 0
        if lp[ACTIVE, l] == 0:
            continue  # step 1: a layer with rate 0 skips the whole algorithm
        eligible = age_layer(layout, lp, age, l)
        rate = lp[RATE_A, l]
        if accumulate_on:
            n = accumulate(acc, l, rate, eligible)
        else:  # the coin rule (engine/learners/base.coin_counts)
            expected = rate * eligible
            n = int(np.floor(expected))
            if eligible > 0 and expected < 1:
                n = 1 if coins[coin] <= expected else 0
                coin += 1
        n_due[0, l] = n
        if n > 0:
            event = True
    return event, coin


@njit(cache=True)
def cbp_statistics(layout, lpt, age, f, u, h, in_sum, out_sum, util, B, L, bc):
    """Steps 2-3 after the step's update: f <- lerp(f, mean_batch h, 1 - eta), u <- lerp(u, x, 1 - eta),
    x the instantaneous utility of ``util`` from bias-corrected f_hat = f / (1 - eta^age).
    ``bc`` (hidden units,) is scratch space for the bias corrections."""
    for l in range(L):
        if lpt[ACTIVE, l] == 0:
            continue
        o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
        n_in, n_next = layout[R_SIZES, l], layout[R_SIZES, l + 2]
        eta, w, a1 = lpt[ETA, l], lpt[ONE_MINUS_ETA, l], lpt[AGE_ONE, l]
        fl, ul, al, bl = f[o : o + H], u[o : o + H], age[o : o + H], bc[o : o + H]
        if B == 1:
            hb = h[0, o : o + H]
            for i in range(H):
                fl[i] = lerp(fl[i], hb[i], w)
        else:
            for i in range(H):
                mean_h = h[0, o + i]
                for b in range(1, B):
                    mean_h += h[b, o + i]
                fl[i] = lerp(fl[i], mean_h / B, w)
        if util == RANDOM:
            continue  # u_hat is a fresh U(0, 1) draw when units are chosen; u stays 0
        for i in range(H):  # 1 - eta^age: pow only for the young units (it is exactly 1 for the others)
            bl[i] = 1.0
            if al[i] < a1:
                bl[i] = 1 - eta ** al[i]
        ins, outs = in_sum[o : o + H], out_sum[o : o + H]
        for i in range(H):
            out_mag = outs[i] / n_next
            in_mag = ins[i] / n_in
            if util == WEIGHT:
                x = out_mag
            elif util == ADAPTATION:
                x = 1.0 / in_mag
            elif util == CONTRIBUTION:
                a = abs(h[0, o + i])
                for b in range(1, B):
                    a += abs(h[b, o + i])
                x = out_mag * (a / B)
            else:
                f_hat = fl[i] / bl[i]
                dev = abs(h[0, o + i] - f_hat)
                for b in range(1, B):
                    dev += abs(h[b, o + i] - f_hat)
                dev /= B
                if util == ADAPTABLE:
                    x = out_mag * dev / in_mag
                elif util == ZERO_CONTRIBUTION:
                    x = out_mag * dev
                else:  # feature_by_input
                    x = dev / in_mag
            ul[i] = lerp(ul[i], x, w)


class KernelContinualBackprop(KernelLearner, ContinualBackprop):
    """The engine's ContinualBackprop with its ages, f and u in the kernel's flat (K, units) arrays."""

    LEARNER_CODE = LEARNER_CBP

    def setup(self, pop) -> None:
        super().setup(pop)
        K, L, layout = pop.K, pop.spec.num_hidden, pop.layout
        self.units = torch.zeros(3, K, layout.num_hidden_units, dtype=pop.dtype)  # age, f, u
        self.age = [layout.hidden_view(self.units[0], l) for l in range(L)]
        self.f = [layout.hidden_view(self.units[1], l) for l in range(L)]
        self.u = [layout.hidden_view(self.units[2], l) for l in range(L)]
        eta = np.stack([e.cpu().double().numpy()[:, 0] for e in self.eta], axis=1)  # (K, L)
        lp = np.zeros((K, NUM_ROWS, L))
        lp[:, RATE_A] = self.rho
        lp[:, ETA] = eta
        lp[:, MATURITY] = self.m
        lp[:, ACTIVE] = self.active
        lp[:, ONE_MINUS_ETA] = 1.0 - eta
        lp[:, AGE_ONE] = age_one(eta, np.dtype(str(pop.dtype).removeprefix("torch.")))
        self.lp = lp
        self.util_code = UTIL_CODES[self.util_type]
        self.needs_in = self.util_type in NEEDS_IN_SUMS
        self.needs_out = self.util_type in NEEDS_OUT_SUMS
        # the fused |w| sums (float64), shared by the members (recomputed at the start of every call)
        self.abs_sums = np.zeros((2, layout.num_hidden_units))
        self._no_acc = np.zeros(L)

    def kernel_state(self, k: int) -> tuple:
        units = self.units.numpy()
        return (self.lp[k], units[0, k], units[1, k], units[2, k], self.acc[k], self._no_acc,
                self.abs_sums[0], self.abs_sums[1])

    def kernel_flags(self, k: int, flags: np.ndarray, hyper: np.ndarray) -> None:
        super().kernel_flags(k, flags, hyper)
        flags[F_UTIL] = self.util_code
        flags[F_ACCUMULATE] = self.accumulate
        flags[F_NEED_IN] = self.needs_in
        flags[F_NEED_OUT] = self.needs_out

    def coins_ahead(self, k: int, n: int) -> np.ndarray:
        return super().coins_ahead(k, n) if self.coins is None else self.coins[k].peek(n)

    def coins_used(self, k: int, n: int) -> None:
        if self.coins is not None:
            self.coins[k].skip(n)

    def after_load(self) -> None:
        """Nothing to rebuild: the kernel counts eligible units from the ages at every step."""

    def freeze(self, pop, k: int) -> None:
        super().freeze(pop, k)
        self.lp[k, ACTIVE] = 0.0

    def handle_event(self, pop, k: int, n_due: np.ndarray, sync: np.ndarray) -> None:
        """Steps 6-8 for member k: replace n_due[0, l] units of every hidden layer l, layer by layer;
        the |w| sums of the two weight matrices a replacement changes are to be recomputed."""
        n = n_due[0]
        for l in np.flatnonzero(n):
            self._replace(pop, k, int(l), int(n[l]))
            sync[l : l + 2] = 1
        self.counts["units_reset"][k] += n

    def _replace(self, pop, k: int, l: int, n: int) -> None:
        layout = pop.layout
        o, H = layout.uoff[l], layout.sizes[l + 1]
        age, f, u = (self.units.numpy()[s, k, o : o + H] for s in range(3))
        bc = bias_correction_factor(self.lp[k, ETA, l], age)
        if self.util_type == "random":  # a fresh U(0, 1) utility, drawn when it is used (float32 draws, as the engine)
            keys = torch.rand(H, generator=self.util_gen[k]).to(pop.dtype).numpy()
        else:
            keys = u / bc
        units = lowest_first(keys, age > self.lp[k, MATURITY, l], n)
        W, b = pop.layer_arrays(k, l)  # W^T (in, out), b (out,)
        W[:, units] = init_weight(pop.spec, l, self.reinit_gen[k], n).to(pop.dtype).numpy().T
        b[units] = 0.0
        W_next, b_next = pop.layer_arrays(k, l + 1)
        if self.bias_correction:
            f_hat = f[units] / bc[units]
            for unit, fh in zip(units, f_hat):
                b_next += W_next[unit] * fh
        W_next[units] = 0.0
        age[units] = 0.0
        f[units] = 0.0
        u[units] = 0.0
        pop.optimizer.reset_member_units(k, l, units)
