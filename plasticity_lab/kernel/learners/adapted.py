"""Activation-adapted low/high utility rescaling (SPEC 3.5) in the kernel backend; Purice 2025 [P].

Compiled (called by kernel/step.py every step): ``adapted_decide`` (steps 1-3's counting: ages,
#eligible, n_low = floor of the low accumulator, n_high from the units still eligible) and
``adapted_statistics`` (step 1: u <- lerp(u, mean_batch a, 1 - eta), a the SIGNED activation).

At an event (``KernelAdaptedRescaling.handle_event`` -> compiled ``adapted_rescale``), for the
member, layer by layer: the low pass (the n_low eligible units with the LOWEST u_hat: input row
and bias times c_low, age = u = 0), then the high pass (HIGHEST u_hat among the units still
eligible, times c_high), then the clip (step 5) of the rescaled layers (the kernel clamps every
other layer, and every entry a step does not touch, itself). The kernel runs the published
schedule (``schedule: per_step``); [P]'s ``per_pass`` code trains on the torch engine
(kernel/support.py).

``KernelAdaptedRescaling`` IS the engine's ``AdaptedRescaling`` (hyperparameters, checkpointed
state, ``utility_stats``, ``freeze``) with its ages and utilities in the kernel's flat arrays.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...engine.learners.adapted import AdaptedRescaling
from ..codes import CLIP_EVERY_STEP, CLIP_NONE, F_CLIP, H_CLIP, LEARNER_ADAPTED
from ..layout import R_BOFF, R_SIZES, R_UOFF, R_WOFF
from .base import ACTIVE, ETA, MATURITY, ONE_MINUS_ETA, RATE_A, RATE_B, KernelLearner, accumulate, age_layer, lerp


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def _clamp_row(theta, r, n, c):
    for i in range(r, r + n):
        theta[i] = min(max(theta[i], -c), c)


@njit(cache=True, error_model="numpy")
def adapted_rescale(layout, theta, lp, age, u, n_due, c_low, c_high, clip, whole, nz, nzc, B, L):
    """Steps 2-5 for one member: in every hidden layer l, the n_due[0, l] eligible units with the
    LOWEST u_hat get input row and bias times c_low[l], then the n_due[1, l] with the HIGHEST among
    those still eligible times c_high[l] (ties: lowest index); age = u = 0. Then, with ``clip`` >= 0,
    the clamp of a rescaled layer (the kernel clamped every other entry of it already): the entries
    the last step touched (the last batch B's non-zero inputs ``nz``/``nzc``), the rescaled rows
    and the biases, or the whole layer (``whole``: the step was a chunk's first)."""
    for l in range(L):
        if n_due[0, l] + n_due[1, l] == 0:
            continue
        o, H, n_in = layout[R_UOFF, l], layout[R_SIZES, l + 1], layout[R_SIZES, l]
        w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
        al, ul = age[o : o + H], u[o : o + H]
        typed = np.empty(2, u.dtype)  # eta and 1 in the network's dtype (the engine's arithmetic)
        typed[0] = lp[ETA, l]
        typed[1] = 1
        u_hat = np.empty(H, u.dtype)
        for i in range(H):
            u_hat[i] = ul[i] / (typed[1] - typed[0] ** al[i])
        masked = np.empty(H)
        rescaled = np.zeros(H, np.bool_)
        for side in range(2):
            n = n_due[side, l]
            if n == 0:
                continue
            for i in range(H):  # low: smallest u_hat first; high: largest first
                key = u_hat[i] if side == 0 else -u_hat[i]
                masked[i] = key if al[i] > lp[MATURITY, l] else np.inf
            chosen = np.argsort(masked, kind="mergesort")[:n]  # stable: ties by the lowest index
            c = c_low[l] if side == 0 else c_high[l]
            for t in range(n):
                i = chosen[t]
                for j in range(n_in):
                    theta[w0 + j * H + i] *= c  # input row and bias; outgoing weights untouched
                theta[b0 + i] *= c
                al[i] = 0
                ul[i] = 0
                rescaled[i] = True
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


class KernelAdaptedRescaling(KernelLearner, AdaptedRescaling):
    """The engine's AdaptedRescaling with its ages and utilities in the kernel's flat (K, units) arrays."""

    LEARNER_CODE = LEARNER_ADAPTED

    def setup(self, pop) -> None:
        if self.schedule != "per_step":
            raise ValueError(f"schedule={self.schedule!r}: the kernel backend runs schedule=per_step only "
                             f"(per_pass trains on the population engine)")
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
        clip = self.clip_bound(k)
        flags[F_CLIP] = CLIP_EVERY_STEP if math.isfinite(clip) else CLIP_NONE
        hyper[H_CLIP] = clip

    def clip_bound(self, k: int) -> float:
        """Member k's clip (inf = none)."""
        return float(self.clip_host[k])

    def handle_event(self, pop, k: int, n_due: np.ndarray) -> None:
        """Steps 2-5 for member k (``adapted_rescale``): the low then the high pass of every hidden
        layer, then the clip."""
        units = self.units.numpy()
        theta, _ = pop.member_arrays(k)
        nz, nzc, B, whole = pop.last_step()
        clip = self.clip_bound(k)
        adapted_rescale(pop.layout.table, theta, self.lp[k], units[0, k], units[1, k], n_due,
                        self.factors_np["low"][k], self.factors_np["high"][k], clip if math.isfinite(clip) else -1.0,
                        whole, nz, nzc, B, pop.spec.num_hidden)
        self.counts["units_rescaled_low"][k] += n_due[0]
        self.counts["units_rescaled_high"][k] += n_due[1]
