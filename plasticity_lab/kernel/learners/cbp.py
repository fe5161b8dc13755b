"""Continual Backpropagation (SPEC 3.4) in the kernel backend; Dohare et al. 2024 [D], per-layer rates [J],
the high-utility pass and ``reinit: no_gain`` of Purice 2025 [P] (SPEC 5, "Preset fidelity").

Compiled (called by kernel/step.py every step): ``cbp_decide`` (steps 1, 4, 5: ages, #eligible,
how many units are due in the low-utility pass and then in [P]'s high-utility pass, each by its own
accumulator or the coin rule with the member's pre-drawn coins) and ``cbp_statistics`` (steps 2-3:
the running mean activation f and the running utility u of every ``util_type``, from the step's
activations and the fused |w| sums).

At an event (``KernelContinualBackprop.handle_event``), pass by pass (low, then high) and layer by
layer as the engine does: Python draws with the member's own generators (REINIT: the fresh input
weights via ``network.init_weight``; UTIL: the ``random`` utility), and the compiled
``cbp_replace`` does steps 6-8: the n eligible units with the smallest u_hat (the high pass: the
largest; ties: lowest index), fresh input row (``reinit``: the layer's init distribution, or
without the activation gain, [P]), bias 0, optional bias correction, outgoing weights 0,
age = u = f = 0, momentum buffers 0, and recomputes exactly the |w| sums the replacement changed.

``KernelContinualBackprop`` IS the engine's ``ContinualBackprop`` (same hyperparameters,
same checkpointed state, probes' ``utility_stats``, ``freeze``) with its per-unit state in
the flat arrays the kernel reads.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from ...config import CBP_REINIT_GAIN
from ...engine.learners.cbp import UTIL_TYPES, ContinualBackprop
from ...network import init_weight
from ..codes import F_ACCUMULATE, F_NEED_IN, F_NEED_OUT, F_UTIL, LEARNER_CBP
from ..layout import R_BOFF, R_SIZES, R_UOFF, R_WOFF
from .base import (ACTIVE, AGE_ONE, ETA, MATURITY, ONE_MINUS_ETA, RATE_A, RATE_B, KernelLearner, accumulate, age_layer,
                   lerp)

UTIL_CODES = {name: i for i, name in enumerate(UTIL_TYPES)}
CONTRIBUTION, ADAPTABLE, ZERO_CONTRIBUTION, WEIGHT, ADAPTATION, FEATURE_BY_INPUT, RANDOM = (
    UTIL_CODES[n] for n in ("contribution", "adaptable_contribution", "zero_contribution", "weight",
                            "adaptation", "feature_by_input", "random"))
NEEDS_IN_SUMS = {"adaptable_contribution", "adaptation", "feature_by_input"}  # mean_j |W_in[i, j]|
NEEDS_OUT_SUMS = {"contribution", "adaptable_contribution", "zero_contribution", "weight"}  # mean_k |W_next[k, i]|


@njit(cache=True, error_model="numpy", inline="always")
def _pass_count(acc, l, rate, eligible, accumulate_on, coins, coin):
    """Step 5 for one pass on layer l: (units due, coins used so far); rate 0: none, and no coin."""
    if rate == 0:
        return 0, coin
    if accumulate_on:
        return accumulate(acc, l, rate, eligible), coin
    expected = rate * eligible  # the coin rule (engine/learners/base.coin_counts)
    if eligible > 0 and expected < 1:
        return (1 if coins[coin] <= expected else 0), coin + 1
    return int(np.floor(expected)), coin


@njit(cache=True, error_model="numpy")
def cbp_decide(layout, lp, age, acc_low, acc_high, accumulate_on, coins, coin, n_due, L):
    """Steps 1, 4, 5 for every hidden layer: n_due[0, l] units due this step in the low-utility pass
    (rate RATE_A, accumulator ``acc_low``), then n_due[1, l] in [P]'s high-utility pass (RATE_B,
    ``acc_high``) among the eligible units the low pass leaves (its units have age 0). Coins are read
    in the engine's order: the low pass's layers, then the high pass's. Returns (any due, coins used
    so far)."""
    for l in range(L):  # step 1 (a layer whose rates are 0 skips the whole algorithm); n_due[1] holds
        n_due[0, l] = 0  # #eligible until the high pass replaces it by its count
        n_due[1, l] = age_layer(layout, lp, age, l) if lp[ACTIVE, l] != 0 else 0
    for l in range(L):
        if lp[ACTIVE, l] != 0:
            n_due[0, l], coin = _pass_count(acc_low, l, lp[RATE_A, l], n_due[1, l], accumulate_on, coins, coin)
    for l in range(L):
        if lp[ACTIVE, l] != 0:
            n_due[1, l], coin = _pass_count(acc_high, l, lp[RATE_B, l], n_due[1, l] - n_due[0, l], accumulate_on,
                                            coins, coin)
    event = False
    for l in range(L):
        event |= n_due[0, l] + n_due[1, l] > 0
    return event, coin


@njit(cache=True, error_model="numpy")
def cbp_statistics(layout, lpt, age, f, u, h, in_sum, out_sum, util, B, L, bc, x):
    """Steps 2-3 after the step's update: f <- lerp(f, mean_batch h, 1 - eta), u <- lerp(u, x, 1 - eta),
    x the instantaneous utility of ``util`` from bias-corrected f_hat = f / (1 - eta^age).
    ``bc`` and ``x`` (hidden units,) are scratch space (float64). One loop per utility type and
    a batch-1 path, so that every loop vectorises."""
    for l in range(L):
        if lpt[ACTIVE, l] == 0:
            continue
        o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
        n_in, n_next = layout[R_SIZES, l], layout[R_SIZES, l + 2]
        eta, w, a1 = lpt[ETA, l], lpt[ONE_MINUS_ETA, l], lpt[AGE_ONE, l]
        fl, ul, al, bl, xl = f[o : o + H], u[o : o + H], age[o : o + H], bc[o : o + H], x[o : o + H]
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
        if util == WEIGHT:
            for i in range(H):
                xl[i] = outs[i] / n_next
        elif util == ADAPTATION:
            for i in range(H):
                xl[i] = 1.0 / (ins[i] / n_in)
        elif B == 1:
            hb = h[0, o : o + H]
            if util == CONTRIBUTION:
                for i in range(H):
                    xl[i] = (outs[i] / n_next) * abs(hb[i])
            elif util == ADAPTABLE:
                for i in range(H):
                    xl[i] = (outs[i] / n_next) * abs(hb[i] - fl[i] / bl[i]) / (ins[i] / n_in)
            elif util == ZERO_CONTRIBUTION:
                for i in range(H):
                    xl[i] = (outs[i] / n_next) * abs(hb[i] - fl[i] / bl[i])
            else:  # feature_by_input
                for i in range(H):
                    xl[i] = abs(hb[i] - fl[i] / bl[i]) / (ins[i] / n_in)
        else:
            for i in range(H):
                out_mag = outs[i] / n_next
                in_mag = ins[i] / n_in
                if util == CONTRIBUTION:
                    a = abs(h[0, o + i])
                    for b in range(1, B):
                        a += abs(h[b, o + i])
                    xl[i] = out_mag * (a / B)
                else:
                    f_hat = fl[i] / bl[i]
                    dev = abs(h[0, o + i] - f_hat)
                    for b in range(1, B):
                        dev += abs(h[b, o + i] - f_hat)
                    dev /= B
                    if util == ADAPTABLE:
                        xl[i] = out_mag * dev / in_mag
                    elif util == ZERO_CONTRIBUTION:
                        xl[i] = out_mag * dev
                    else:  # feature_by_input
                        xl[i] = dev / in_mag
        for i in range(H):
            ul[i] = lerp(ul[i], xl[i], w)


@njit(cache=True, error_model="numpy")
def cbp_replace(layout, theta, buf, lp, age, f, u, l, n, highest, keys, fresh, bias_correction, in_sum, out_sum,
                need_in, need_out, L):
    """Steps 6-8 for one member and hidden layer l: the n eligible units with the smallest key
    (``highest``: the largest, [P]'s high-utility pass; u_hat = u / (1 - eta^age), or the given
    ``keys``: the ``random`` utility; ties: lowest index)
    get input weights ``fresh`` (n, in), bias 0, (``bias_correction``: the next bias += their
    outgoing weights times f_hat), outgoing weights 0, age = f = u = 0, momentum buffers 0.
    Then the |w| sums the replacement changed are recomputed exactly. Returns the units."""
    o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
    n_in, n_next = layout[R_SIZES, l], layout[R_SIZES, l + 2]
    w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
    wn0, bn0 = layout[R_WOFF, l + 1], layout[R_BOFF, l + 1]
    al, fl, ul = age[o : o + H], f[o : o + H], u[o : o + H]
    typed = np.empty(2, f.dtype)  # eta and 1 in the network's dtype (the engine's arithmetic)
    typed[0] = lp[ETA, l]
    typed[1] = 1
    m = lp[MATURITY, l]
    bc = np.empty(H, f.dtype)
    masked = np.empty(H)
    for i in range(H):
        bc[i] = typed[1] - typed[0] ** al[i]  # the bias correction 1 - eta^age
        key = keys[i] if keys.shape[0] > 0 else ul[i] / bc[i]
        masked[i] = (-key if highest else key) if al[i] > m else np.inf
    units = np.argsort(masked, kind="mergesort")[:n]  # stable: ties by the lowest index
    momentum = buf.shape[0] > 0
    for t in range(n):
        i = units[t]
        for j in range(n_in):
            theta[w0 + j * H + i] = fresh[t, j]
        theta[b0 + i] = 0
        if bias_correction:
            f_hat = fl[i] / bc[i]
            for k in range(n_next):
                theta[bn0 + k] += theta[wn0 + i * n_next + k] * f_hat
        for k in range(n_next):
            theta[wn0 + i * n_next + k] = 0
        al[i] = 0
        fl[i] = 0
        ul[i] = 0
        if momentum:
            for j in range(n_in):
                buf[w0 + j * H + i] = 0
            buf[b0 + i] = 0
            for k in range(n_next):
                buf[wn0 + i * n_next + k] = 0
    # the |w| sums: W_l's columns of the new units, all of W_l's rows, W_{l+1}'s zeroed rows and columns
    if need_in:
        for t in range(n):
            i = units[t]
            s = 0.0
            for j in range(n_in):
                s += abs(theta[w0 + j * H + i])
            in_sum[o + i] = s
    if need_out and l >= 1:
        oo = layout[R_UOFF, l - 1]
        for j in range(n_in):
            out_sum[oo + j] = _abs_row_sum(theta, w0 + j * H, H)
    if need_out:
        for t in range(n):
            out_sum[o + units[t]] = 0.0
    if need_in and l + 1 < L:
        on = layout[R_UOFF, l + 1]
        for k in range(n_next):
            in_sum[on + k] = 0.0
        for i in range(H):
            for k in range(n_next):
                in_sum[on + k] += abs(theta[wn0 + i * n_next + k])
    return units


@njit(cache=True, error_model="numpy", inline="always")
def _abs_row_sum(theta, r, n):
    s = 0.0
    for i in range(n):
        s += abs(theta[r + i])
    return s


class KernelContinualBackprop(KernelLearner, ContinualBackprop):
    """The engine's ContinualBackprop with its ages, f and u in the kernel's flat (K, units) arrays."""

    LEARNER_CODE = LEARNER_CBP

    def setup(self, pop) -> None:
        super().setup(pop)
        self._kernel_setup(pop, ("age", "f", "u"), self.rho, self.rho_high)
        self.util_code = UTIL_CODES[self.util_type]
        self.needs_in = self.util_type in NEEDS_IN_SUMS
        self.needs_out = self.util_type in NEEDS_OUT_SUMS
        # the fused |w| sums (float64), shared by the members (recomputed at the start of every chunk)
        self.abs_sums = np.zeros((2, pop.layout.num_hidden_units))

    def kernel_state(self, k: int) -> tuple:
        units = self.units.numpy()
        return (self.lp[k], units[0, k], units[1, k], units[2, k], self.acc[k], self.acc_high[k],
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

    def handle_event(self, pop, k: int, n_due: np.ndarray) -> None:
        """Steps 6-8 for member k: the low-utility pass layer by layer, then [P]'s high-utility pass
        (``cbp_replace``), as the engine; the member's generators draw the fresh input weights
        (REINIT, ``network.init_weight``) and the ``random`` utility (UTIL, each pass its own draw)
        exactly as the engine's do."""
        units = self.units.numpy()
        theta, buf = pop.member_arrays(k)
        if not n_due.any():  # warm_up: load the compiled replacement without replacing anything
            cbp_replace(pop.layout.table, theta, buf, self.lp[k], *units[:, k], 0, 0, False, units[2, k, :0],
                        np.zeros((0, pop.spec.sizes[0]), theta.dtype), False, self.abs_sums[0], self.abs_sums[1],
                        False, False, pop.spec.num_hidden)
            return
        H = pop.layout.sizes
        for side in range(2):
            for l in np.flatnonzero(n_due[side]):
                l, count = int(l), int(n_due[side, l])
                if self.util_type == "random":  # a fresh U(0, 1) utility, drawn when it is used (float32 draws)
                    keys = torch.rand(H[l + 1], generator=self.util_gen[k]).to(pop.dtype).numpy()
                else:
                    keys = units[2, k, :0]
                fresh = init_weight(pop.spec, l, self.reinit_gen[k], count, CBP_REINIT_GAIN[self.reinit])
                fresh = fresh.to(pop.dtype).numpy()
                cbp_replace(pop.layout.table, theta, buf, self.lp[k], units[0, k], units[1, k], units[2, k], l,
                            count, side == 1, keys, fresh, self.bias_correction, self.abs_sums[0], self.abs_sums[1],
                            self.needs_in, self.needs_out, pop.spec.num_hidden)
        self.counts["units_reset"][k] += n_due[0] + n_due[1]
