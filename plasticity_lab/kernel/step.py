"""The compiled training loop of one member: forward, loss, backward, optimiser step, learner statistics.

``train_member`` runs ONE member through the steps ``start .. stop`` of a chunk (member-major
time-blocking: its weights stay in cache for the whole block, DESIGN "Backends") and returns
early when its reset learner must act (an "event"), so that Python performs the
replacement / rescaling with the member's own generators exactly as the engine does
(kernel/learners/), after which the loop continues. What one step computes is SPEC 1 (the
test-then-train online step), 3.1/3.2 (SGD with coupled weight decay), 3.8 (momentum) and
the per-step statistics of 3.4 (cbp) and 3.5 (adapted).

Layout (kernel/layout.py). All of a member's weights and biases live in one flat vector
``theta``; linear layer l is stored INPUT-MAJOR, W_l^T of shape (in, out), so that

- the forward pass is z = b + sum_j x_j W^T[j, :] over the NON-ZERO inputs j only (a permuted
  MNIST image has ~19% non-zero pixels; a ReLU layer's output about half), each a contiguous
  row of ``out`` numbers;
- the backward pass's delta of the layer below is a contiguous dot product per input unit,
  skipped where the unit's derivative is exactly 0 (relu: h = 0);
- the SGD step W^T[j, :] -= x_j delta (rank-1 per example) touches only the rows of non-zero
  inputs, which are the only entries whose gradient is non-zero.

As in the engine, the output delta is pre-scaled by the step size alpha, so every layer's
update is one rank-1 update per example after the decay factor 1 - alpha lambda (coupled
weight decay, SPEC 3.2). Momentum (torch.optim.SGD semantics, engine/optim.py) materialises
the gradient and touches every entry.

Fused statistics (cbp). The utilities need n_in * mean_j |W_l[i, j]| ("in sums") and
n_next * mean_k |W_{l+1}[k, i]| ("out sums") after every step's update. They are kept in
float64 and updated inside the update loop, which is the only place weights change between
events: out sums (a row of W^T_{l+1}) are recomputed for every touched row, in sums (a column
of W^T_l) get |new| - |old| for every touched entry. ``sync_abs_sums`` recomputes them all from
scratch at the start of every chunk (``F_SYNC_SUMS``; a chunk is at most ``chunk_examples``
steps), and a replacement re-sums exactly what it changed (learners/cbp.py), so rounding drift
never outlives one chunk.

Clip (adapted, ``schedule: per_step``): the clamp to [-clip, clip] is fused into the update of the
entries a step touches; the first step of a chunk (``F_FULL_CLAMP``) clamps every hidden layer
whole, so the untouched entries are clamped too (they then stay so). On a step where the learner rescales,
the layers being rescaled are not clamped here: the event's handler rescales, then clamps the
entries this step touched there (``info[I_LAST_BATCH]``, the non-zero lists ``nz`` / ``nzc``),
the rescaled rows and the biases (the whole layers if this was the chunk's first step,
``info[I_UNCLAMPED]``), which is SPEC 3.5 step 5's order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import activations as A
from .codes import (CLIP_EVERY_STEP, EVENT_LEARNER, EVENT_NEED_COINS, EVENT_NONE, F_ACCUMULATE, F_BATCH, F_CLIP,
                    F_DECAY, F_FULL_CLAMP, F_LEARNER, F_LOSS, F_MOMENTUM, F_NEED_IN, F_NEED_OUT, F_PER_PASS, F_SYNC_SUMS, F_UTIL, H_ALPHA,
                    H_CLIP, H_DECAY, H_LAMBDA, H_MOMENTUM, I_COINS_USED, I_EVENT, I_LAST_BATCH, I_NEXT, I_UNCLAMPED,
                    LEARNER_ADAPTED, LEARNER_CBP, LOSS_CROSS_ENTROPY)
from .layout import R_ACT, R_BOFF, R_SIZES, R_UOFF, R_WOFF
from .learners.adapted import adapted_statistics, adapted_decide
from .learners.cbp import cbp_decide, cbp_statistics
from .rows import (FAST, axpy_rows, dot_rows, update_rows, update_rows_both, update_rows_clamp, update_rows_in,
                   update_rows_out)



@njit(cache=True, error_model="numpy", fastmath=FAST)
def _abs_sum(w):
    s = 0.0
    for i in range(w.shape[0]):
        s += abs(w[i])
    return s


@njit(cache=True, error_model="numpy")
def sync_abs_sums(layout, theta, in_sum, out_sum, L, need_in, need_out):
    """Every |w| sum, recomputed from scratch (float64): in_sum[i of hidden layer l] =
    sum_j |W_l[i, j]| and out_sum[j of hidden layer l - 1] = sum_i |W_l[i, j]|."""
    for l in range(L + 1):
        n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
        w0 = layout[R_WOFF, l]
        if need_in and l < L:
            o = layout[R_UOFF, l]
            cs = in_sum[o : o + n_out]
            cs[:] = 0.0
            for j in range(n_in):
                w = theta[w0 + j * n_out : w0 + (j + 1) * n_out]
                for i in range(n_out):
                    cs[i] += abs(w[i])
        if need_out and l >= 1:
            o = layout[R_UOFF, l - 1]
            for j in range(n_in):
                out_sum[o + j] = _abs_sum(theta[w0 + j * n_out : w0 + (j + 1) * n_out])


@njit(cache=True, error_model="numpy")
def _clamp(w, c):
    for i in range(w.shape[0]):
        w[i] = min(max(w[i], -c), c)


@njit(cache=True, error_model="numpy")
def clamp_hidden(layout, theta, L, c, skip):
    """Clamp every hidden layer's weights and biases to [-c, c] (SPEC 3.5 step 5), except the
    layers l with skip[l] (rescaled at this step: Python clamps them after the rescaling)."""
    for l in range(L):
        if skip[l]:
            continue
        n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
        w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
        _clamp(theta[w0 : w0 + n_in * n_out], c)
        _clamp(theta[b0 : b0 + n_out], c)


@njit(cache=True, error_model="numpy", inline="always")
def _typed(value, zero):
    """``value`` in the type of ``zero`` (the network's dtype)."""
    out = np.empty(1, np.asarray(zero).dtype)
    out[0] = value
    return out[0]


@njit(cache=True, error_model="numpy", inline="always")
def _nonzeros(v, out):
    """The indices of v's non-zero entries into out[:count]; returns count (branch-free: the
    pattern of zeros is random, and a mispredicted branch per entry costs more than the work)."""
    count = 0
    for j in range(v.shape[0]):
        out[count] = j
        count += v[j] != 0
    return count


@njit(cache=True, error_model="numpy", inline="always")
def _segment(layout, l):
    """Where linear layer l's list of non-zero inputs starts in a row of ``nz`` (B, in + units)."""
    return 0 if l == 0 else layout[R_SIZES, 0] + layout[R_UOFF, l - 1]


@njit(cache=True, error_model="numpy")
def _update_layer(layout, theta, buf, l, L, B, src, row0, col0, delta, nz, nzc, hyper, flags, clamp_now, in_sum,
                  out_sum, dcs_all, zero):
    """The optimiser step of linear layer l for a batch: inputs src[row0 + b, col0 + j] (x for
    l = 0, else the activations below; only the entries listed in nz[b, seg:] / nzc[b, l] are
    non-zero, and only their rows have a non-zero gradient),
    output deltas delta[b, uoff[l] + i], alpha-scaled unless momentum. (Whole 2-D arrays and
    offsets, so that every row slice below is contiguous to the compiler.)"""
    n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
    o = layout[R_UOFF, l]
    w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
    W = theta[w0 : w0 + n_in * n_out]
    W2 = W.reshape((n_in, n_out))
    bias = theta[b0 : b0 + n_out]
    c = _typed(hyper[H_CLIP], zero)  # the clip in the weights' dtype (no float64 round trip per entry)
    hidden = l < L
    track_in = flags[F_NEED_IN] != 0 and hidden
    track_out = flags[F_NEED_OUT] != 0 and l >= 1
    o_in = layout[R_UOFF, l] if hidden else 0
    o_out = layout[R_UOFF, l - 1] if l >= 1 else 0
    cs = in_sum[o_in : o_in + n_out] if track_in else in_sum[0:0]
    dcs = dcs_all[o_in : o_in + n_out] if track_in else dcs_all[0:0]
    do_clamp = clamp_now and hidden
    dense = flags[F_MOMENTUM] != 0 or flags[F_DECAY] != 0
    if flags[F_MOMENTUM] != 0:  # torch.optim.SGD: g += lambda p; buf = mu buf + g; p -= alpha buf
        alpha, lam, mu = hyper[H_ALPHA], hyper[H_LAMBDA], hyper[H_MOMENTUM]
        Wbuf = buf[w0 : w0 + n_in * n_out]
        bbuf = buf[b0 : b0 + n_out]
        for j in range(n_in):
            w = W[j * n_out : (j + 1) * n_out]
            wb = Wbuf[j * n_out : (j + 1) * n_out]
            for i in range(n_out):
                g = zero
                for b in range(B):
                    g += src[row0 + b, col0 + j] * delta[b, o + i]
                g += lam * w[i]
                wb[i] = mu * wb[i] + g
                w[i] -= alpha * wb[i]
        for i in range(n_out):
            g = zero
            for b in range(B):
                g += delta[b, o + i]
            g += lam * bias[i]
            bbuf[i] = mu * bbuf[i] + g
            bias[i] -= alpha * bbuf[i]
    else:
        if dense:  # coupled weight decay: W <- (1 - alpha lambda) W first, as the engine
            decay = hyper[H_DECAY]
            for e in range(W.shape[0]):
                W[e] *= decay
            for e in range(n_out):
                bias[e] *= decay
        tracking = (track_in or track_out) and not dense  # dense: sums recomputed below
        if tracking and track_in:
            dcs[:] = zero
        seg = _segment(layout, l)
        for b in range(B):
            d = delta[b, o : o + n_out]
            inp = src[row0 + b, col0 : col0 + n_in]
            active = nz[b, seg : seg + nzc[b, l]]
            if do_clamp and B == 1:
                update_rows_clamp(W2, active, inp, d, c)
            elif not tracking:
                update_rows(W2, active, inp, d)
            elif track_in and track_out:
                update_rows_both(W2, active, inp, d, dcs, out_sum, o_out, zero)
            elif track_in:
                update_rows_in(W2, active, inp, d, dcs)
            else:
                update_rows_out(W2, active, inp, d, out_sum, o_out, zero)
        if tracking and track_in:
            for i in range(n_out):
                cs[i] += dcs[i]
        if do_clamp and B > 1:  # clamp the batch's summed update, not each example's: a second pass
            for b in range(B):
                active = nz[b, seg : seg + nzc[b, l]]
                for t in range(active.shape[0]):
                    _clamp(W[active[t] * n_out : (active[t] + 1) * n_out], c)
        for i in range(n_out):
            s = zero
            for b in range(B):
                s += delta[b, o + i]
            bias[i] -= s
        if do_clamp:
            _clamp(bias, c)
    if dense:  # every entry changed: clamp and |w| sums over the whole layer
        if do_clamp:
            _clamp(W, c)
            _clamp(bias, c)
        if track_in:
            cs[:] = 0.0
        for j in range(n_in):
            w = W[j * n_out : (j + 1) * n_out]
            if track_in:
                for i in range(n_out):
                    cs[i] += abs(w[i])
            if track_out:
                out_sum[o_out + j] = _abs_sum(w)


# ---------------------------------------------------------------------------- the loop
@njit(cache=True, error_model="numpy")
def train_member(layout, theta, buf, hyper, flags, x, y_class, y_value, start, stop,
                 lp, age, f, u, acc_a, acc_b, in_sum, out_sum, coins,
                 z, h, delta, nz, nzc, n_due, totals, info):
    """Train one member on examples ``start .. stop`` of its chunk (x (n, in), y_class (n,) or
    y_value (n,)), in steps of ``flags[F_BATCH]`` examples (the last one may be shorter); stop
    early after a step at which the learner must act (``info[I_EVENT]`` = EVENT_LEARNER, with
    ``n_due`` (2, L) the units per layer: cbp replaced / adapted low, and adapted high) or
    before a step for which the coin buffer may run out (EVENT_NEED_COINS). ``info[I_NEXT]``
    is the next example to train on; ``info[I_COINS_USED]`` the coins used.

    ``lp`` (NUM_ROWS, L) float64 per hidden layer (kernel/learners/base.py); ``totals`` += (sum of
    the examples' losses, number correct).
    """
    L = layout.shape[1] - 2
    batch = flags[F_BATCH]
    learner = flags[F_LEARNER]
    n_lin = L + 1
    C = layout[R_SIZES, n_lin]
    out_o = layout[R_UOFF, L]
    alpha = hyper[H_ALPHA]
    fused = flags[F_MOMENTUM] == 0
    clip_kind = flags[F_CLIP]
    n_in0 = layout[R_SIZES, 0]
    zero = np.zeros(1, theta.dtype)[0]
    lpt = np.empty(lp.shape, theta.dtype)  # the learner's parameters in the network's dtype (as the engine)
    lpt[:] = lp
    bc = np.empty(layout[R_UOFF, L])
    xs = np.empty(layout[R_UOFF, L])
    dcs = np.empty(layout[R_UOFF, L], theta.dtype)
    every = np.arange(layout[R_UOFF, L])  # every unit of a hidden layer: the rows of a dense backward pass
    need_sums = learner == LEARNER_CBP and (flags[F_NEED_IN] != 0 or flags[F_NEED_OUT] != 0)
    if need_sums and flags[F_SYNC_SUMS] != 0:
        sync_abs_sums(layout, theta, in_sum, out_sum, L, flags[F_NEED_IN] != 0, flags[F_NEED_OUT] != 0)
    coin = 0
    B = 0
    rescaling = np.zeros(max(L, 1), np.bool_)
    info[I_UNCLAMPED] = 0
    first = flags[F_FULL_CLAMP] != 0
    s = start
    info[I_EVENT] = EVENT_NONE
    while s < stop:
        B = min(batch, stop - s)  # the last batch of a chunk may be shorter (as the engine's)
        # ---- the learner's decisions for this step (they depend on ages and accumulators only)
        event = False
        if learner == LEARNER_CBP:
            if flags[F_ACCUMULATE] == 0 and coin + 2 * L > coins.shape[0]:  # at most one coin per layer and pass
                info[I_EVENT] = EVENT_NEED_COINS
                break
            event, coin = cbp_decide(layout, lp, age, acc_a, acc_b, flags[F_ACCUMULATE] != 0, coins, coin, n_due, L)
        elif learner == LEARNER_ADAPTED:
            event = adapted_decide(layout, lp, age, acc_a, acc_b, n_due, flags[F_PER_PASS] != 0, L)
        # every_step clip: fused into the update, except in a layer rescaled at this step (Python
        # rescales, then clamps it: SPEC 3.5's order)
        clamp_now = clip_kind == CLIP_EVERY_STEP
        for l in range(L):
            rescaling[l] = event and learner == LEARNER_ADAPTED and n_due[0, l] + n_due[1, l] > 0
        # ---- forward, test-then-train (SPEC 1)
        scale = (alpha if fused else 1.0) / B
        for b in range(B):
            nzc[b, 0] = _nonzeros(x[s + b], nz[b, 0:n_in0])
            for l in range(n_lin):
                n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
                w0, b0, o = layout[R_WOFF, l], layout[R_BOFF, l], layout[R_UOFF, l]
                src = x[s + b] if l == 0 else h[b, layout[R_UOFF, l - 1] : layout[R_UOFF, l - 1] + n_in]
                seg = _segment(layout, l)
                active = nz[b, seg : seg + nzc[b, l]]
                zb = z[b, o : o + n_out]
                zb[:] = theta[b0 : b0 + n_out]
                axpy_rows(zb, theta[w0 : w0 + n_in * n_out].reshape((n_in, n_out)), src, active)
                if l < L:
                    code = layout[R_ACT, l]
                    hb = h[b, o : o + n_out]
                    for i in range(n_out):
                        hb[i] = A.forward(code, zb[i])
                    seg = _segment(layout, l + 1)
                    nzc[b, l + 1] = _nonzeros(hb, nz[b, seg : seg + n_out])
            # ---- loss and the output delta (gradient of the batch's MEAN loss), alpha-scaled when fused
            logits = z[b, out_o : out_o + C]
            db = delta[b, out_o : out_o + C]
            if flags[F_LOSS] == LOSS_CROSS_ENTROPY:
                y = y_class[s + b]
                mx = logits[0]
                best = 0
                for i in range(1, C):
                    if logits[i] > mx:
                        mx = logits[i]
                        best = i
                se = 0.0
                for i in range(C):
                    se += math.exp(logits[i] - mx)
                log_se = math.log(se)
                for i in range(C):
                    logp = (logits[i] - mx) - log_se
                    p = math.exp(logp)
                    if i == y:
                        totals[0] -= logp
                        p -= 1.0
                    db[i] = p * scale
                if best == y:
                    totals[1] += 1.0
            else:
                err = logits[0] - y_value[s + b]
                totals[0] += float(err) * float(err)
                db[0] = 2.0 * err * scale
        # ---- backward and update, top layer first (each layer's delta below uses its weights before the update)
        for l in range(n_lin - 1, -1, -1):
            n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
            w0, o = layout[R_WOFF, l], layout[R_UOFF, l]
            if l > 0:
                oi = layout[R_UOFF, l - 1]
                code = layout[R_ACT, l - 1]
                seg = _segment(layout, l)
                Wl = theta[w0 : w0 + n_in * n_out].reshape((n_in, n_out))
                for b in range(B):
                    d = delta[b, o : o + n_out]
                    hin = h[b, oi : oi + n_in]
                    zin = z[b, oi : oi + n_in]
                    dprev = delta[b, oi : oi + n_in]
                    if A.zero_gradient_where_zero(code):  # relu: only the active units have a gradient,
                        dprev[:] = zero  # and there it passes unchanged
                        dot_rows(Wl, nz[b, seg : seg + nzc[b, l]], d, dprev, zero)
                    else:
                        dot_rows(Wl, every[:n_in], d, dprev, zero)
                        for j in range(n_in):
                            dprev[j] = A.backward(code, dprev[j], zin[j], hin[j])
                _update_layer(layout, theta, buf, l, L, B, h, 0, oi, delta, nz, nzc, hyper, flags,
                              clamp_now and not (l < L and rescaling[l]),
                              in_sum, out_sum, dcs, zero)
            else:
                _update_layer(layout, theta, buf, l, L, B, x, s, 0, delta, nz, nzc, hyper, flags,
                              clamp_now and not rescaling[0],
                              in_sum, out_sum, dcs, zero)
        if clamp_now and first:  # untouched entries (e.g. of zero pixels) are clamped once per chunk
            clamp_hidden(layout, theta, L, _typed(hyper[H_CLIP], zero), rescaling)
            info[I_UNCLAMPED] = event  # the rescaled layers are to be clamped whole
        first = False
        # ---- the learner's running statistics (SPEC 3.4 steps 1-3, 3.5 step 1)
        if learner == LEARNER_CBP:
            cbp_statistics(layout, lpt, age, f, u, h, in_sum, out_sum, flags[F_UTIL], B, L, bc, xs)
        elif learner == LEARNER_ADAPTED and not (event and flags[F_PER_PASS] != 0):  # per_pass events update u
            adapted_statistics(layout, lp, lpt, u, h, B, L, flags[F_PER_PASS] != 0)  # themselves, pass by pass
        s += B
        if event:
            info[I_EVENT] = EVENT_LEARNER
            break
    info[I_NEXT] = s
    info[I_COINS_USED] = coin
    info[I_LAST_BATCH] = B
