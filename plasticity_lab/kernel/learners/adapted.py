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

from ...config import PER_PASS_CLIP
from ...engine.learners.adapted import AdaptedRescaling
from ..codes import CLIP_EVERY_STEP, CLIP_NONE, F_CLIP, F_PER_PASS, H_CLIP, LEARNER_ADAPTED
from ..layout import R_BOFF, R_SIZES, R_UOFF, R_WOFF
from .base import ACTIVE, ETA, MATURITY, ONE_MINUS_ETA, RATE_A, RATE_B, KernelLearner, accumulate, age_layer, lerp

PER_PASS_WEIGHTS, PER_PASS_BIASES = PER_PASS_CLIP["weights"], PER_PASS_CLIP["biases"]


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy", inline="always")
def _batch_mean(h, i, B):
    """mean_batch h[:, i] (the engine's: the value itself for a batch of one)."""
    mean_h = h[0, i]
    for b in range(1, B):
        mean_h += h[b, i]
    if B > 1:
        mean_h /= B
    return mean_h


@njit(cache=True, error_model="numpy")
def adapted_statistics(layout, lp, lpt, u, h, B, L, per_pass):
    """Step 1 after the step's update: u <- lerp(u, mean_batch a, 1 - eta) (a signed; no |.|);
    ``per_pass``: once for each pass whose rate is > 0. (``lpt``: ``lp`` in the network's dtype.)"""
    for l in range(L):
        if lp[ACTIVE, l] == 0:
            continue
        ticks = 1 if not per_pass else (lp[RATE_A, l] > 0) + (lp[RATE_B, l] > 0)
        o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
        w = lpt[ONE_MINUS_ETA, l]
        for i in range(o, o + H):
            mean_h = _batch_mean(h, i, B)
            for _ in range(ticks):
                u[i] = lerp(u[i], mean_h, w)


@njit(cache=True, error_model="numpy")
def _clamp_row(theta, r, n, c):
    for i in range(r, r + n):
        theta[i] = min(max(theta[i], -c), c)


@njit(cache=True, error_model="numpy")
def _rescale(layout, theta, lp, age, u, l, n, highest, c, later, rescaled):
    """One pass on hidden layer l: the n units with age - ``later`` > m (``later``: ticks counted in
    the ages for a later pass) with the lowest u_hat = u / (1 - eta^(age - later)) (``highest``: the
    highest; ties: lowest index) get input row and bias times c; age = ``later``, u = 0; marks them
    in ``rescaled``."""
    o, H, n_in = layout[R_UOFF, l], layout[R_SIZES, l + 1], layout[R_SIZES, l]
    w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
    al, ul = age[o : o + H], u[o : o + H]
    typed = np.empty(3, u.dtype)  # eta, 1 and later in the network's dtype (the engine's arithmetic)
    typed[0] = lp[ETA, l]
    typed[1] = 1
    typed[2] = later
    masked = np.empty(H)
    for i in range(H):  # low: smallest u_hat first; high: largest first
        a = al[i] - typed[2]
        u_hat = ul[i] / (typed[1] - typed[0] ** a)
        masked[i] = (-u_hat if highest else u_hat) if a > lp[MATURITY, l] else np.inf
    chosen = np.argsort(masked, kind="mergesort")[:n]  # stable: ties by the lowest index
    for t in range(n):
        i = chosen[t]
        for j in range(n_in):
            theta[w0 + j * H + i] *= c  # input row and bias; outgoing weights untouched
        theta[b0 + i] *= c
        al[i] = typed[2]
        ul[i] = 0
        rescaled[i] = True


@njit(cache=True, error_model="numpy")
def adapted_rescale(layout, theta, lp, age, u, n_due, c_low, c_high, clip, whole, nz, nzc, B, L):
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
        rescaled = np.zeros(H, np.bool_)
        for side in range(2):
            if n_due[side, l] > 0:
                _rescale(layout, theta, lp, age, u, l, n_due[side, l], side == 1,
                         c_low[l] if side == 0 else c_high[l], 0, rescaled)
        if clip < 0:
            continue
        if whole:
            _clamp_row(theta, w0, n_in * H, clip)
        else:
            seg = 0 if l == 0 else layout[R_SIZES, 0] + layout[R_UOFF, l - 1]
            for b in range(B):
                for t in range(nzc[b, l]):
                    _clamp_row(theta, w0 + nz[b, seg + t] * H, H, clip)
            for i in range(H):
                if rescaled[i]:
                    for j in range(n_in):
                        theta[w0 + j * H + i] = min(max(theta[w0 + j * H + i], -clip), clip)
        _clamp_row(theta, b0, H, clip)


@njit(cache=True, error_model="numpy")
def adapted_per_pass_event(layout, theta, lp, lpt, age, u, h, B, n_due, c_low, c_high, clamp, L):
    """``schedule: per_pass`` at an event step, after the step's update: for each pass (low, then
    high) and hidden layer whose rate is > 0, u <- lerp(u, mean_batch a, 1 - eta) again, then the
    pass's n_due units are rescaled (``_rescale``), then (``clamp``) the layer they are in is clamped,
    weights to [-5, 5] and biases to [-10, 10] (SPEC 5)."""
    for side in range(2):
        for l in range(L):
            if lp[ACTIVE, l] == 0 or lp[RATE_A if side == 0 else RATE_B, l] == 0:
                continue
            o, H, n_in = layout[R_UOFF, l], layout[R_SIZES, l + 1], layout[R_SIZES, l]
            w = lpt[ONE_MINUS_ETA, l]
            for i in range(o, o + H):
                u[i] = lerp(u[i], _batch_mean(h, i, B), w)
            n = n_due[side, l]
            if n == 0:
                continue
            later = 1 if side == 0 and lp[RATE_B, l] > 0 else 0  # the high pass's tick, already in the ages
            _rescale(layout, theta, lp, age, u, l, n, side == 1, c_low[l] if side == 0 else c_high[l], later,
                     np.zeros(H, np.bool_))
            if clamp:
                w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
                _clamp_row(theta, w0, n_in * H, PER_PASS_WEIGHTS)
                _clamp_row(theta, b0, H, PER_PASS_BIASES)


class KernelAdaptedRescaling(KernelLearner, AdaptedRescaling):
    """The engine's AdaptedRescaling with its ages and utilities in the kernel's flat (K, units) arrays."""

    LEARNER_CODE = LEARNER_ADAPTED

    def setup(self, pop) -> None:
        super().setup(pop)
        self._kernel_setup(pop, ("age", "u"), self.rates["low"], self.rates["high"])
        self.factors_np = {side: c.cpu().numpy() for side, c in self.factors.items()}  # (K, L) in the dtype
        self._none = (np.zeros(0, self.units.numpy().dtype), np.zeros(0))

    def kernel_state(self, k: int) -> tuple:
        units = self.units.numpy()
        no_f, no_sums = self._none
        return (self.lp[k], units[0, k], no_f, units[1, k], self.acc["low"][k], self.acc["high"][k],
                no_sums, no_sums)

    def kernel_flags(self, k: int, flags: np.ndarray, hyper: np.ndarray) -> None:
        super().kernel_flags(k, flags, hyper)
        flags[F_PER_PASS] = self.schedule == "per_pass"
        clip = self.clip_bound(k)  # per_pass: its own clamp, at events (adapted_per_pass_event)
        flags[F_CLIP] = CLIP_EVERY_STEP if math.isfinite(clip) and self.schedule == "per_step" else CLIP_NONE
        hyper[H_CLIP] = clip

    def clip_bound(self, k: int) -> float:
        """Member k's clip (inf = none; ``per_pass``: finite = its clamp is on)."""
        return float(self.clip_host[k])

    def handle_event(self, pop, k: int, n_due: np.ndarray) -> None:
        """Steps 2-5 for member k: the low then the high pass of every hidden layer, then the clip
        (``adapted_rescale``); ``per_pass``: ``adapted_per_pass_event``."""
        units = self.units.numpy()
        theta, _ = pop.member_arrays(k)
        nz, nzc, B, whole, h = pop.last_step()
        clip = self.clip_bound(k)
        c_low, c_high = self.factors_np["low"][k], self.factors_np["high"][k]
        if self.schedule == "per_pass":  # (warm_up, no units due: no layer, so that nothing changes)
            lp, L = self.lp[k], pop.spec.num_hidden if n_due.any() else 0
            adapted_per_pass_event(pop.layout.table, theta, lp, lp.astype(theta.dtype), units[0, k], units[1, k], h,
                                   B, n_due, c_low, c_high, math.isfinite(clip), L)
        else:
            adapted_rescale(pop.layout.table, theta, self.lp[k], units[0, k], units[1, k], n_due, c_low, c_high,
                            clip if math.isfinite(clip) else -1.0, whole, nz, nzc, B, pop.spec.num_hidden)
        self.counts["units_rescaled_low"][k] += n_due[0]
        self.counts["units_rescaled_high"][k] += n_due[1]
