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
from numba import njit

from ...engine.learners.cbp import CBP_REINIT_GAIN, UTIL_TYPES, ContinualBackprop
from ..codes import F_ACCUMULATE, F_BIAS_CORRECTION, F_NEED_IN, F_NEED_OUT, F_UTIL, LEARNER_CBP, NUM_FLAGS, NUM_HYPER
from ..draws import ReadAhead
from ..jit import INLINE, JIT
from ..layout import R_BOFF, R_SIZES, R_UOFF, R_WOFF
from ..rows import abs_row_sums
from .base import (ACTIVE, AGE_ONE, ETA, MATURITY, ONE_MINUS_ETA, RATE_A, RATE_B, KernelLearner, accumulate, age_layer,
                   lerp, smallest)

UTIL_CODES = {name: i for i, name in enumerate(UTIL_TYPES)}
CONTRIBUTION, ADAPTABLE, ZERO_CONTRIBUTION, WEIGHT, ADAPTATION, FEATURE_BY_INPUT, RANDOM = (
    UTIL_CODES[n] for n in ("contribution", "adaptable_contribution", "zero_contribution", "weight",
                            "adaptation", "feature_by_input", "random"))
NEEDS_IN_SUMS = {"adaptable_contribution", "adaptation", "feature_by_input"}  # mean_j |W_in[i, j]|
NEEDS_OUT_SUMS = {"contribution", "adaptable_contribution", "zero_contribution", "weight"}  # mean_k |W_next[k, i]|
BIAS_TABLE_AGES = 1 << 15  # the longest table of bias corrections (float32, eta 0.99: AGE_ONE is 1,794)


@njit(**INLINE)
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


@njit(**JIT)
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


@njit(**JIT)
def bias_corrections(lpt, table):
    """table[l, a] = 1 - eta_l^a for the ages a below layer l's ``AGE_ONE``, then 1: SPEC 3.4 step 3's
    bias correction as ``cbp_statistics`` computes it (the same expression, in float64 from the
    network's dtype), so that a step reads it instead of calling pow for every young unit."""
    for l in range(table.shape[0]):
        eta, a1 = lpt[ETA, l], lpt[AGE_ONE, l]
        for a in range(table.shape[1]):
            age = lpt.dtype.type(a)
            table[l, a] = 1 - eta ** age if age < a1 else 1.0


@njit(**INLINE)
def _instant(kind, out_i, in_i, h_i, fh_i, n_in, n_next):
    """Utility ``kind``'s instantaneous value of one unit, batch 1 (SPEC 3.4 step 3; float64)."""
    if kind == CONTRIBUTION:
        return (out_i / n_next) * abs(h_i)
    if kind == ADAPTABLE:
        return out_i * abs(h_i - fh_i) / in_i * (n_in / n_next)
    if kind == ZERO_CONTRIBUTION:
        return (out_i / n_next) * abs(h_i - fh_i)
    if kind == WEIGHT:
        return out_i / n_next
    if kind == ADAPTATION:
        return n_in / in_i
    return abs(h_i - fh_i) / in_i * n_in  # feature_by_input


@njit(**INLINE)
def _corrections(al, bcl, eta, a1, bc):
    """bc[i] = 1 - eta^age of every unit of a layer (1 from age a1 = AGE_ONE on), read from the layer's
    table ``bcl`` where it reaches, else as ``bias_corrections`` computes it. (A loop of its own: a
    table lookup in the loop that uses it kept that loop from vectorising.)"""
    n = bcl.shape[0]
    if n > a1:  # the table reaches AGE_ONE, where its last entry is 1
        for i in range(al.shape[0]):
            bc[i] = bcl[min(int(al[i]), n - 1)]
        return
    for i in range(al.shape[0]):
        a = al[i]
        bc[i] = bcl[int(a)] if a < n else (1 - eta ** a if a < a1 else 1.0)


@njit(**INLINE)
def _step_units(kind, fl, ul, hb, ins, outs, bc, w, n_in, n_next):
    """Steps 2-3 of one layer, batch 1, in one loop: f <- lerp(f, h, 1 - eta), f_hat = f / bc (bc from
    ``_corrections``; read only by the utilities that need f_hat), u <- lerp(u, x, 1 - eta). ``kind``
    is a constant where it is called, so each utility compiles to its own loop, which vectorises."""
    for i in range(fl.shape[0]):
        fl[i] = lerp(fl[i], hb[i], w)
        ul[i] = lerp(ul[i], _instant(kind, outs[i], ins[i], hb[i], fl[i] / bc[i], n_in, n_next), w)


@njit(**JIT)
def cbp_statistics(layout, lpt, age, f, u, h, in_sum, out_sum, util, B, L, bc, x, bias_corr):
    """Steps 2-3 after the step's update: f <- lerp(f, mean_batch h, 1 - eta), u <- lerp(u, x, 1 - eta),
    x the instantaneous utility of ``util`` from bias-corrected f_hat = f / (1 - eta^age), the
    corrections from ``bias_corr`` (L, ages), ``bias_corrections``' table. ``bc`` and ``x`` (hidden
    units,) are scratch space (float64). With one example (a run's usual step) one loop per layer
    and utility type (``_step_units``)."""
    for l in range(L):
        if lpt[ACTIVE, l] == 0:
            continue
        o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
        n_in, n_next = layout[R_SIZES, l], layout[R_SIZES, l + 2]
        w = lpt[ONE_MINUS_ETA, l]
        fl, ul, al, bcl, xl = f[o : o + H], u[o : o + H], age[o : o + H], bc[o : o + H], x[o : o + H]
        ins, outs = in_sum[o : o + H], out_sum[o : o + H]
        if util == ADAPTABLE or util == ZERO_CONTRIBUTION or util == FEATURE_BY_INPUT:  # the ones with f_hat
            _corrections(al, bias_corr[l], lpt[ETA, l], lpt[AGE_ONE, l], bcl)
        if B == 1:
            hb = h[0, o : o + H]
            if util == RANDOM:  # u_hat is a fresh U(0, 1) draw when units are chosen; u stays 0
                for i in range(H):
                    fl[i] = lerp(fl[i], hb[i], w)
            elif util == CONTRIBUTION:
                _step_units(CONTRIBUTION, fl, ul, hb, ins, outs, bcl, w, n_in, n_next)
            elif util == ADAPTABLE:
                _step_units(ADAPTABLE, fl, ul, hb, ins, outs, bcl, w, n_in, n_next)
            elif util == ZERO_CONTRIBUTION:
                _step_units(ZERO_CONTRIBUTION, fl, ul, hb, ins, outs, bcl, w, n_in, n_next)
            elif util == WEIGHT:
                _step_units(WEIGHT, fl, ul, hb, ins, outs, bcl, w, n_in, n_next)
            elif util == ADAPTATION:
                _step_units(ADAPTATION, fl, ul, hb, ins, outs, bcl, w, n_in, n_next)
            else:
                _step_units(FEATURE_BY_INPUT, fl, ul, hb, ins, outs, bcl, w, n_in, n_next)
            continue
        for i in range(H):
            mean_h = h[0, o + i]
            for b in range(1, B):
                mean_h += h[b, o + i]
            fl[i] = lerp(fl[i], mean_h / B, w)
        if util == RANDOM:
            continue
        for i in range(H):
            out_mag = outs[i] / n_next
            in_mag = ins[i] / n_in
            if util == WEIGHT:
                xl[i] = out_mag
            elif util == ADAPTATION:
                xl[i] = n_in / ins[i]
            elif util == CONTRIBUTION:
                a = abs(h[0, o + i])
                for b in range(1, B):
                    a += abs(h[b, o + i])
                xl[i] = out_mag * (a / B)
            else:
                f_hat = fl[i] / bcl[i]
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


@njit(**JIT)
def cbp_replace(layout, theta, buf, lp, age, f, u, l, n, highest, keys, fresh, bias_correction, in_sum, out_sum,
                need_in, need_out, L, masked, marks):
    """Steps 6-8 for one member and hidden layer l: the n eligible units with the smallest key
    (``highest``: the largest, [P]'s high-utility pass; u_hat = u / (1 - eta^age), or the given
    ``keys``: the ``random`` utility; ties: lowest index)
    get input weights ``fresh`` (n, in), bias 0, (``bias_correction``: the next bias += their
    outgoing weights times f_hat), outgoing weights 0, age = f = u = 0, momentum buffers 0.
    Then the |w| sums the replacement changed are recomputed exactly. ``masked`` (float64) and
    ``marks`` (2, at least H, int64) are work space; the units end in marks[0, :n]."""
    o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
    n_in, n_next = layout[R_SIZES, l], layout[R_SIZES, l + 2]
    w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
    wn0, bn0 = layout[R_WOFF, l + 1], layout[R_BOFF, l + 1]
    al, fl, ul = age[o : o + H], f[o : o + H], u[o : o + H]
    one, eta = f.dtype.type(1), f.dtype.type(lp[ETA, l])  # the engine's arithmetic, in the network's dtype
    m = lp[MATURITY, l]
    keyed = masked[:H]
    for i in range(H):
        key = keys[i] if keys.shape[0] > 0 else ul[i] / (one - eta ** al[i])  # u_hat: bias-corrected
        keyed[i] = (-key if highest else key) if al[i] > m else np.inf
    units = marks[0, :n]
    smallest(keyed, n, units, marks[1])
    W = theta[w0 : w0 + n_in * H].reshape((n_in, H))
    Wn = theta[wn0 : wn0 + H * n_next].reshape((H, n_next))
    momentum = buf.shape[0] > 0
    for t in range(n):
        i = units[t]
        for j in range(n_in):
            W[j, i] = fresh[t, j]
        theta[b0 + i] = 0
        if bias_correction:
            f_hat = fl[i] / (one - eta ** al[i])
            for k in range(n_next):
                theta[bn0 + k] += Wn[i, k] * f_hat
        for k in range(n_next):
            Wn[i, k] = 0
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
                s += abs(W[j, i])
            in_sum[o + i] = s
    if need_out and l >= 1:
        oo = layout[R_UOFF, l - 1]
        abs_row_sums(W, out_sum[oo : oo + n_in])
    if need_out:
        for t in range(n):
            out_sum[o + units[t]] = 0.0
    if need_in and l + 1 < L:
        sums = in_sum[layout[R_UOFF, l + 1] : layout[R_UOFF, l + 1] + n_next]
        sums[:] = 0.0
        for i in range(H):
            for k in range(n_next):
                sums[k] += abs(Wn[i, k])


@njit(**JIT)
def cbp_draws(layout, n_due, random_utility, L):
    """The numbers the replacements ``n_due`` draw: (REINIT: n * fan_in per layer and pass, UTIL: the
    random utility's H keys per layer and pass that replaces units)."""
    reinit = util = 0
    for side in range(2):
        for l in range(L):
            if n_due[side, l] > 0:
                reinit += n_due[side, l] * layout[R_SIZES, l]
                util += layout[R_SIZES, l + 1] if random_utility else 0
    return reinit, util


@njit(**JIT)
def cbp_event(layout, theta, buf, lp, age, f, u, n_due, flags, fresh, fresh_row, keys, draw_pos, in_sum, out_sum,
              counts, masked, marks, L):
    """Steps 6-8 for one member at a step with units due: the low-utility pass layer by layer, then
    [P]'s high-utility pass (``cbp_replace``), counted in counts[0]. The member's draws in the
    engine's order, read ahead (kernel/draws.py): the fresh rows of layer l from row fresh_row[l]
    of ``fresh`` at draw_pos[0], the random utility's keys from ``keys`` at draw_pos[1]. Returns
    False, changing nothing, when the read-ahead draws do not cover them. (``masked``, ``marks``:
    ``cbp_replace``'s work space.)"""
    random_utility = flags[F_UTIL] == RANDOM
    need_reinit, need_util = cbp_draws(layout, n_due, random_utility, L)
    if draw_pos[0] + need_reinit > fresh.shape[1] or draw_pos[1] + need_util > keys.shape[0]:
        return False
    for side in range(2):
        for l in range(L):
            n = n_due[side, l]
            if n == 0:
                continue
            n_in, H = layout[R_SIZES, l], layout[R_SIZES, l + 1]
            p = draw_pos[0]
            rows = fresh[fresh_row[l], p : p + n * n_in].reshape((n, n_in))
            draw_pos[0] = p + n * n_in
            q = draw_pos[1]
            unit_keys = keys[q : q + H] if random_utility else keys[0:0]
            draw_pos[1] = q + (H if random_utility else 0)
            cbp_replace(layout, theta, buf, lp, age, f, u, l, n, side == 1, unit_keys, rows,
                        flags[F_BIAS_CORRECTION] != 0, in_sum, out_sum, flags[F_NEED_IN] != 0, flags[F_NEED_OUT] != 0, L,
                        masked, marks)
            counts[0, l] += n
    return True


class KernelContinualBackprop(KernelLearner, ContinualBackprop):
    """The engine's ContinualBackprop with its ages, f and u in the kernel's flat (K, units) arrays
    and its REINIT and UTIL generators read ahead (kernel/draws.py) for the compiled replacements."""

    LEARNER_CODE = LEARNER_CBP
    # the |w| sums the utilities need (recomputed from the weights at every chunk start); placeholders;
    # the bias-correction table (from lpt); the read-ahead draws' rows and positions (synced into the
    # generators before a checkpoint, kernel/draws.py)
    REBUILT = ("abs_sums", "bias_corr", "_no_keys", "fresh_row", "draw_pos")

    def setup(self, pop) -> None:
        super().setup(pop)
        self._kernel_setup(pop, ("age", "f", "u"), self.rho, self.rho_high)
        self.util_code = UTIL_CODES[self.util_type]
        self.needs_in = self.util_type in NEEDS_IN_SUMS
        self.needs_out = self.util_type in NEEDS_OUT_SUMS
        # the fused |w| sums (float64), shared by the members (recomputed at the start of every chunk)
        self.abs_sums = np.zeros((2, pop.layout.num_hidden_units))
        # 1 - eta^age per member, layer and age up to the last AGE_ONE (at most BIAS_TABLE_AGES; a layer
        # whose AGE_ONE is beyond it calls pow, cbp_statistics)
        ages = int(min(self.lp[:, AGE_ONE].max(initial=1.0), BIAS_TABLE_AGES)) + 1
        self.bias_corr = np.empty((pop.K, pop.spec.num_hidden, ages))
        for k in range(pop.K):
            bias_corrections(self.lpt[k], self.bias_corr[k])
        # read-ahead draws: one row of fresh weights per distinct re-initialisation bound
        spec, gain = pop.spec, CBP_REINIT_GAIN[self.reinit]
        bounds = [spec.init_bound(l, gain) for l in range(spec.num_hidden)]
        distinct = sorted(set(bounds))
        self.fresh_row = np.array([distinct.index(b) for b in bounds], dtype=np.int64)
        fan_in = sum(spec.sizes[: spec.num_hidden])
        self.draw_pos = np.zeros((pop.K, 2), np.int64)
        self.reinit_ahead = [ReadAhead(self.reinit_gen[k], [(-b, b) for b in distinct], 16 * fan_in, self.draw_pos,
                                       (k, 0)) for k in range(pop.K)]
        self.util_ahead = [ReadAhead(self.util_gen[k], [(0.0, 1.0)], 16 * sum(self.widths), self.draw_pos, (k, 1))
                           for k in range(pop.K)] if self.util_type == "random" else None
        self._no_keys = np.zeros(0, np.float32)

    def kernel_state(self, k: int) -> tuple:
        units = self.units.numpy()
        return (self.lp[k], self.lpt[k], units[0, k], units[1, k], units[2, k], self.acc[k], self.acc_high[k],
                self.abs_sums[0], self.abs_sums[1], self._no_factors, self.counts_np[k], self.bias_corr[k])

    def kernel_flags(self, k: int, flags: np.ndarray, hyper: np.ndarray) -> None:
        super().kernel_flags(k, flags, hyper)
        flags[F_UTIL] = self.util_code
        flags[F_ACCUMULATE] = self.accumulate
        flags[F_BIAS_CORRECTION] = self.bias_correction
        flags[F_NEED_IN] = self.needs_in
        flags[F_NEED_OUT] = self.needs_out

    def coins_ahead(self, k: int, n: int) -> np.ndarray:
        return super().coins_ahead(k, n) if self.coins is None else self.coins[k].peek(n)

    def coins_used(self, k: int, n: int) -> None:
        if self.coins is not None:
            self.coins[k].skip(n)

    def draws_ahead(self, k: int) -> tuple:
        keys = self.util_ahead[k].blocks[0] if self.util_ahead is not None else self._no_keys
        return self.reinit_ahead[k].blocks, self.fresh_row, keys, self.draw_pos[k]

    def sync_draws(self, k: int) -> None:
        """Leave member k's generators where the draws it used leave them (the engine's states)."""
        for ahead in (self.reinit_ahead, self.util_ahead):
            if ahead is not None:
                ahead[k].sync()

    def after_load(self) -> None:
        for ahead in (self.reinit_ahead, self.util_ahead):
            for a in ahead or ():
                a.forget()

    def handle_event(self, pop, k: int, n_due: np.ndarray, flags: np.ndarray) -> None:
        """Steps 6-8 for member k when the compiled step's read-ahead draws ran out (``cbp_event``
        after drawing further ahead), or for a caller outside the compiled step."""
        reinit, util = cbp_draws(pop.layout.table, n_due, self.util_type == "random", pop.spec.num_hidden)
        self.reinit_ahead[k].ensure(reinit)
        if self.util_ahead is not None:
            self.util_ahead[k].ensure(util)
        theta, buf = pop.member_arrays(k)
        units = self.units.numpy()
        work = pop.work_space()
        done = cbp_event(pop.layout.table, theta, buf, self.lp[k], units[0, k], units[1, k], units[2, k], n_due, flags,
                         *self.draws_ahead(k), self.abs_sums[0], self.abs_sums[1], self.counts_np[k], work["work"][2],
                         work["marks"], pop.spec.num_hidden)
        assert done, "the read-ahead draws cover the event"

    def warm_up(self, pop) -> None:
        """Load ``cbp_event`` as called from Python (an event of no units: changes nothing)."""
        flags = np.zeros(NUM_FLAGS, np.int64)
        self.kernel_flags(0, flags, np.zeros(NUM_HYPER))
        self.handle_event(pop, 0, np.zeros((2, pop.spec.num_hidden), dtype=np.int64), flags)
