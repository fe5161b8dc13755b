"""Activation-adapted low/high utility rescaling (SPEC 3.5) in the kernel backend; Purice 2025 [P].

Compiled (called by kernel/step.py every step): ``adapted_decide`` (steps 1-3's counting: ages,
#eligible, n_low = floor of the low accumulator, n_high from the units still eligible) and
``adapted_statistics`` (step 1: u <- lerp(u, mean_batch a, 1 - eta), a the SIGNED activation).

At an event (``KernelAdaptedRescaling.handle_event``), for the member, layer by layer:

- ``schedule: per_step`` (the published code; compiled ``adapted_rescale``): the low pass (the
  n_low eligible units with the LOWEST u_hat: input row and bias times c_low, age = u = 0), then
  the high pass (HIGHEST u_hat among the units still eligible, times c_high), then the clip
  (step 5) of the rescaled layers (the kernel clamps every other layer, and every entry a step
  does not touch, itself);
- ``schedule: per_pass`` ([P]'s "modified cfg" code, SPEC 5; compiled ``adapted_per_pass_event``):
  each pass whose rate is > 0 on a layer ages its units (``adapted_decide`` counted both ticks at
  the start of the step) and updates u again, then rescales, then clamps a layer it rescaled in to
  [-5, 5] (weights) and [-10, 10] (biases); on a step without an event ``adapted_statistics`` runs
  the passes' updates of u itself.

``KernelAdaptedRescaling`` IS the engine's ``AdaptedRescaling`` (hyperparameters, checkpointed
state, ``utility_stats``, ``freeze``) with its ages and utilities in the kernel's flat arrays.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...engine.learners.adapted import PER_PASS_CLIP, AdaptedRescaling
from ..codes import CLIP_EVERY_STEP, CLIP_NONE, F_CLIP, F_PER_PASS, H_CLIP, LEARNER_ADAPTED
from ..jit import INLINE, JIT
from ..layout import R_BOFF, R_SIZES, R_UOFF, R_WOFF
from .base import (ACTIVE, ETA, MATURITY, ONE_MINUS_ETA, RATE_A, RATE_B, KernelLearner, accumulate, age_layer, lerp,
                   smallest)

PER_PASS_WEIGHTS, PER_PASS_BIASES = PER_PASS_CLIP["weights"], PER_PASS_CLIP["biases"]


@njit(**JIT)
def adapted_decide(layout, lp, age, acc_low, acc_high, n_due, per_pass, L):
    """n_due[0, l] (low pass) and n_due[1, l] (high pass) for every hidden layer; returns whether any is due.
    ``per_pass``: each pass with rate > 0 ages the layer's units once more before it counts; the
    units the low pass rescales restart at age 0 and tick once in the high pass (eligible only if 1 > m)."""
    event = False
    for l in range(L):
        n_due[0, l] = 0
        n_due[1, l] = 0
        if lp[ACTIVE, l] == 0:
            continue
        if not per_pass:
            eligible = age_layer(layout, lp, age, l)
            n_low = accumulate(acc_low, l, lp[RATE_A, l], eligible)
            n_high = accumulate(acc_high, l, lp[RATE_B, l], eligible - n_low)  # the low pass's units have age 0
        else:
            n_low = n_high = 0
            if lp[RATE_A, l] > 0:
                n_low = accumulate(acc_low, l, lp[RATE_A, l], age_layer(layout, lp, age, l))
            if lp[RATE_B, l] > 0:
                eligible = age_layer(layout, lp, age, l)
                if not 1 > lp[MATURITY, l]:
                    eligible -= n_low
                n_high = accumulate(acc_high, l, lp[RATE_B, l], eligible)
        n_due[0, l] = n_low
        n_due[1, l] = n_high
        if n_low > 0 or n_high > 0:
            event = True
    return event


@njit(**INLINE)
def _batch_mean(h, i, B):
    """mean_batch h[:, i] (the engine's: the value itself for a batch of one)."""
    mean_h = h[0, i]
    for b in range(1, B):
        mean_h += h[b, i]
    if B > 1:
        mean_h /= B
    return mean_h


@njit(**JIT)
def adapted_statistics(layout, lp, lpt, u, h, B, L, per_pass):
    """Step 1 after the step's update: u <- lerp(u, mean_batch a, 1 - eta) (a signed; no |.|);
    ``per_pass``: once for each pass whose rate is > 0. (``lpt``: ``lp`` in the network's dtype.)"""
    for l in range(L):
        if lp[ACTIVE, l] == 0:
            continue
        twice = per_pass and lp[RATE_A, l] > 0 and lp[RATE_B, l] > 0
        o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
        w = lpt[ONE_MINUS_ETA, l]
        ul = u[o : o + H]
        if B == 1:  # (one loop per case, so that each vectorises)
            hb = h[0, o : o + H]
            if twice:
                for i in range(H):
                    ul[i] = lerp(ul[i], hb[i], w)
                    ul[i] = lerp(ul[i], hb[i], w)
            else:
                for i in range(H):
                    ul[i] = lerp(ul[i], hb[i], w)
        else:
            for i in range(H):
                mean_h = _batch_mean(h, o + i, B)
                ul[i] = lerp(ul[i], mean_h, w)
                if twice:
                    ul[i] = lerp(ul[i], mean_h, w)


@njit(**INLINE)
def _clamp(w, c):
    for i in range(w.shape[0]):
        w[i] = min(max(w[i], -c), c)


@njit(**JIT)
def _rescale(layout, theta, lp, age, u, l, n, highest, c, later, masked, marks):
    """One pass on hidden layer l: the n units with age - ``later`` > m (``later``: ticks counted in
    the ages for a later pass) with the lowest u_hat = u / (1 - eta^(age - later)) (``highest``: the
    highest; ties: lowest index) get input row and bias times c; age = ``later``, u = 0; marks[2, i]
    = 1 for each of them. (``masked`` float64, ``marks`` (3, at least H) int64: work space.)"""
    o, H, n_in = layout[R_UOFF, l], layout[R_SIZES, l + 1], layout[R_SIZES, l]
    w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
    W = theta[w0 : w0 + n_in * H].reshape((n_in, H))
    al, ul = age[o : o + H], u[o : o + H]
    # eta, 1 and later in the network's dtype (the engine's arithmetic)
    eta, one, after = u.dtype.type(lp[ETA, l]), u.dtype.type(1), u.dtype.type(later)
    keyed = masked[:H]
    for i in range(H):  # low: smallest u_hat first; high: largest first
        a = al[i] - after
        u_hat = ul[i] / (one - eta ** a)
        keyed[i] = (-u_hat if highest else u_hat) if a > lp[MATURITY, l] else np.inf
    chosen = marks[0, :n]
    smallest(keyed, n, chosen, marks[1])
    for t in range(n):
        i = chosen[t]
        for j in range(n_in):
            W[j, i] *= c  # input row and bias; outgoing weights untouched
        theta[b0 + i] *= c
        al[i] = after
        ul[i] = 0
        marks[2, i] = 1


@njit(**JIT)
def adapted_rescale(layout, theta, lp, age, u, n_due, c_low, c_high, clip, whole, nz, nzc, B, L, masked, marks):
    """Steps 2-5 for one member (``schedule: per_step``): in every hidden layer l, the n_due[0, l]
    eligible units with the LOWEST u_hat get input row and bias times c_low[l], then the n_due[1, l]
    with the HIGHEST among those still eligible times c_high[l]; age = u = 0. Then, with ``clip``
    >= 0, the clamp of a rescaled layer (the kernel clamped every other entry of it already): the
    entries the last step touched (the last batch B's non-zero inputs ``nz``/``nzc``), the rescaled
    rows and the biases, or the whole layer (``whole``: the step was a chunk's first)."""
    for l in range(L):
        if n_due[0, l] + n_due[1, l] == 0:
            continue
        H, n_in = layout[R_SIZES, l + 1], layout[R_SIZES, l]
        w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
        W = theta[w0 : w0 + n_in * H].reshape((n_in, H))
        rescaled = marks[2, :H]
        rescaled[:] = 0
        for side in range(2):
            if n_due[side, l] > 0:
                _rescale(layout, theta, lp, age, u, l, n_due[side, l], side == 1,
                         c_low[l] if side == 0 else c_high[l], 0, masked, marks)
        if clip < 0:
            continue
        c = theta.dtype.type(clip)
        if whole:
            _clamp(theta[w0 : w0 + n_in * H], c)
        else:
            seg = 0 if l == 0 else layout[R_SIZES, 0] + layout[R_UOFF, l - 1]
            for b in range(B):
                for t in range(nzc[b, l]):
                    _clamp(W[nz[b, seg + t]], c)
            for i in range(H):
                if rescaled[i]:
                    for j in range(n_in):
                        W[j, i] = min(max(W[j, i], -c), c)
        _clamp(theta[b0 : b0 + H], c)


@njit(**JIT)
def adapted_per_pass_event(layout, theta, lp, lpt, age, u, h, B, n_due, c_low, c_high, clamp, L, masked, marks):
    """``schedule: per_pass`` at an event step, after the step's update: for each pass (low, then
    high) and hidden layer whose rate is > 0, u <- lerp(u, mean_batch a, 1 - eta) again, then the
    pass's n_due units are rescaled (``_rescale``), then (``clamp``) the layer they are in is clamped,
    weights to [-5, 5] and biases to [-10, 10] (SPEC 5)."""
    bound_w, bound_b = theta.dtype.type(PER_PASS_WEIGHTS), theta.dtype.type(PER_PASS_BIASES)
    for side in range(2):
        for l in range(L):
            if lp[ACTIVE, l] == 0 or lp[RATE_A if side == 0 else RATE_B, l] == 0:
                continue
            o, H, n_in = layout[R_UOFF, l], layout[R_SIZES, l + 1], layout[R_SIZES, l]
            w = lpt[ONE_MINUS_ETA, l]
            ul = u[o : o + H]
            for i in range(H):
                ul[i] = lerp(ul[i], _batch_mean(h, o + i, B), w)
            n = n_due[side, l]
            if n == 0:
                continue
            later = 1 if side == 0 and lp[RATE_B, l] > 0 else 0  # the high pass's tick, already in the ages
            _rescale(layout, theta, lp, age, u, l, n, side == 1, c_low[l] if side == 0 else c_high[l], later,
                     masked, marks)
            if clamp:
                w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
                _clamp(theta[w0 : w0 + n_in * H], bound_w)
                _clamp(theta[b0 : b0 + H], bound_b)


@njit(**JIT)
def adapted_event(layout, theta, lp, lpt, age, u, h, B, n_due, factors, counts, per_pass, clip, whole, nz, nzc,
                  masked, marks, L):
    """Steps 2-5 for one member at a step with units due, after the step's update: ``adapted_rescale``
    (``schedule: per_step``; ``clip`` < 0: none; ``whole``: clamp the rescaled layers whole) or
    ``adapted_per_pass_event`` (``clip`` >= 0: its clamp is on), with c_low, c_high = factors[0],
    factors[1]; the units counted in counts[0] (low) and counts[1] (high). (``masked`` float64
    (at least H) and ``marks`` (3, at least H) int64: work space.)"""
    if per_pass:
        adapted_per_pass_event(layout, theta, lp, lpt, age, u, h, B, n_due, factors[0], factors[1], clip >= 0, L,
                               masked, marks)
    else:
        adapted_rescale(layout, theta, lp, age, u, n_due, factors[0], factors[1], clip, whole, nz, nzc, B, L,
                        masked, marks)
    for side in range(2):
        for l in range(L):
            counts[side, l] += n_due[side, l]


class KernelAdaptedRescaling(KernelLearner, AdaptedRescaling):
    """The engine's AdaptedRescaling with its ages and utilities in the kernel's flat (K, units) arrays."""

    LEARNER_CODE = LEARNER_ADAPTED
    REBUILT = ("factors_np", "_none")  # from the settings; empty placeholders

    def setup(self, pop) -> None:
        super().setup(pop)
        self._kernel_setup(pop, ("age", "u"), self.rates["low"], self.rates["high"])
        self.factors_np = np.stack([self.factors["low"].cpu().numpy(), self.factors["high"].cpu().numpy()],
                                   axis=1)  # (K, 2, L) in the dtype
        self._none = (np.zeros(0, self.units.numpy().dtype), np.zeros(0), np.zeros((pop.spec.num_hidden, 0)))

    def kernel_state(self, k: int) -> tuple:
        units = self.units.numpy()
        no_f, no_sums, no_table = self._none
        return (self.lp[k], self.lpt[k], units[0, k], no_f, units[1, k], self.acc["low"][k], self.acc["high"][k],
                no_sums, no_sums, self.factors_np[k], self.counts_np[k], no_table)

    def kernel_flags(self, k: int, flags: np.ndarray, hyper: np.ndarray) -> None:
        super().kernel_flags(k, flags, hyper)
        flags[F_PER_PASS] = self.schedule == "per_pass"
        clip = self.clip_bound(k)  # per_pass: finite = its own clamp, at events (adapted_per_pass_event)
        flags[F_CLIP] = CLIP_EVERY_STEP if math.isfinite(clip) and self.schedule == "per_step" else CLIP_NONE
        hyper[H_CLIP] = clip

    def clip_bound(self, k: int) -> float:
        """Member k's clip (inf = none)."""
        return float(self.clip_host[k])
