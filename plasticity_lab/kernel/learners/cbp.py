"""Continual Backpropagation (SPEC 3.4) in the kernel backend; Dohare et al. 2024 [D], per-layer rates [J].

Compiled (called by kernel/step.py every step): ``cbp_decide`` (steps 1, 4, 5: ages, #eligible,
how many units are due, by accumulation or the coin rule with the member's pre-drawn coins)
and ``cbp_statistics`` (steps 2-3: the running mean activation f and the running utility u of
every ``util_type``, from the step's activations and the fused |w| sums).

At an event (``KernelContinualBackprop.handle_event``), layer by layer as the engine does:
Python draws with the member's own generators (REINIT: the fresh input weights via
``network.init_weight``; UTIL: the ``random`` utility), and the compiled ``cbp_replace`` does
steps 6-8: the n eligible units with the smallest u_hat (ties: lowest index), fresh input row
(``reinit``: the layer's init distribution, or without the activation gain, [P]),
bias 0, optional bias correction, outgoing weights 0, age = u = f = 0, momentum buffers 0, and
recomputes exactly the |w| sums the replacement changed.

``KernelContinualBackprop`` IS the engine's ``ContinualBackprop`` (same hyperparameters,
same checkpointed state, probes' ``utility_stats``, ``freeze``) with its per-unit state in
the flat arrays the kernel reads. The kernel runs the low-utility pass; [P]'s two-pass CBP
(``high_replacement_rate`` > 0) trains on the torch engine (kernel/support.py).
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
from .base import ACTIVE, AGE_ONE, ETA, MATURITY, ONE_MINUS_ETA, RATE_A, KernelLearner, accumulate, age_layer, lerp

UTIL_CODES = {name: i for i, name in enumerate(UTIL_TYPES)}
CONTRIBUTION, ADAPTABLE, ZERO_CONTRIBUTION, WEIGHT, ADAPTATION, FEATURE_BY_INPUT, RANDOM = (
    UTIL_CODES[n] for n in ("contribution", "adaptable_contribution", "zero_contribution", "weight",
                            "adaptation", "feature_by_input", "random"))
NEEDS_IN_SUMS = {"adaptable_contribution", "adaptation", "feature_by_input"}  # mean_j |W_in[i, j]|
NEEDS_OUT_SUMS = {"contribution", "adaptable_contribution", "zero_contribution", "weight"}  # mean_k |W_next[k, i]|


@njit(cache=True, error_model="numpy")
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
def cbp_replace(layout, theta, buf, lp, age, f, u, l, n, keys, fresh, bias_correction, in_sum, out_sum,
                need_in, need_out, L):
    """Steps 6-8 for one member and hidden layer l: the n eligible units with the smallest key
    (u_hat = u / (1 - eta^age), or the given ``keys``: the ``random`` utility; ties: lowest index)
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
        masked[i] = key if al[i] > m else np.inf
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
        if (self.rho_high > 0).any():
            raise ValueError("high_replacement_rate > 0: the kernel backend runs CBP's one (low-utility) pass; "
                             "the two-pass CBP trains on the population engine")
        self._kernel_setup(pop, ("age", "f", "u"), self.rho)
        self.util_code = UTIL_CODES[self.util_type]
        self.needs_in = self.util_type in NEEDS_IN_SUMS
        self.needs_out = self.util_type in NEEDS_OUT_SUMS
        # the fused |w| sums (float64), shared by the members (recomputed at the start of every chunk)
        self.abs_sums = np.zeros((2, pop.layout.num_hidden_units))
        self._no_acc = np.zeros(pop.spec.num_hidden)

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

    def handle_event(self, pop, k: int, n_due: np.ndarray) -> None:
        """Steps 6-8 for member k, layer by layer (``cbp_replace``); the member's generators draw
        the fresh input weights (REINIT, ``network.init_weight``) and the ``random`` utility
        (UTIL) exactly as the engine's do."""
        n = n_due[0]
        if not n.any():  # warm_up: load the compiled replacement without replacing anything
            theta, buf = pop.member_arrays(k)
            cbp_replace(pop.layout.table, theta, buf, self.lp[k], *self.units.numpy()[:, k], 0, 0,
                        self.units.numpy()[2, k, :0], np.zeros((0, pop.spec.sizes[0]), theta.dtype), False,
                        self.abs_sums[0], self.abs_sums[1], False, False, pop.spec.num_hidden)
            return
        units = self.units.numpy()
        theta, buf = pop.member_arrays(k)
        H = pop.layout.sizes
        for l in np.flatnonzero(n):
            l, count = int(l), int(n[l])
            if self.util_type == "random":  # a fresh U(0, 1) utility, drawn when it is used (float32 draws)
                keys = torch.rand(H[l + 1], generator=self.util_gen[k]).to(pop.dtype).numpy()
            else:
                keys = units[2, k, :0]
            fresh = init_weight(pop.spec, l, self.reinit_gen[k], count, CBP_REINIT_GAIN[self.reinit])
            fresh = fresh.to(pop.dtype).numpy()
            cbp_replace(pop.layout.table, theta, buf, self.lp[k], units[0, k], units[1, k], units[2, k], l, count,
                        keys, fresh, self.bias_correction, self.abs_sums[0], self.abs_sums[1], self.needs_in,
                        self.needs_out, pop.spec.num_hidden)
        self.counts["units_reset"][k] += n
