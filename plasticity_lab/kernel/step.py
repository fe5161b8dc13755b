"""The compiled training loop of one member: forward, loss, backward, optimiser step, learner statistics and events.

``train_member`` runs ONE member through the steps ``start .. stop`` of a chunk (member-major
time-blocking: its weights stay in cache for the whole block, DESIGN "Backends"), its reset
learner's replacements and rescalings included (kernel/learners/: the units are chosen and
changed in compiled code; CBP's fresh weights and random utilities come from the member's own
generators, read ahead, kernel/draws.py). What one step computes is SPEC 1 (the test-then-train
online step), 3.1/3.2 (SGD with coupled weight decay), 3.8 (momentum), 3.4 (cbp) and 3.5
(adapted). It returns early only when a buffer of read-ahead numbers may not last (coins before
a step; draws at an event, which the caller then completes).

Layout (kernel/layout.py). All of a member's weights and biases live in one flat vector
``theta``; linear layer l is stored INPUT-MAJOR, W_l^T of shape (in, out), so that

- the forward pass is z = b + sum_j x_j W^T[j, :] over the NON-ZERO inputs j only (a permuted
  MNIST image has ~19% non-zero pixels; a ReLU layer's output about half), each a contiguous
  row of ``out`` numbers;
- the backward pass's delta of the layer below is a contiguous dot product per input unit,
  skipped where the unit's derivative is exactly 0 (relu: h = 0);
- the SGD step W^T[j, :] -= x_j delta (rank-1 per example) touches only the rows of non-zero
  inputs, which are the only entries whose gradient is non-zero.

The passes over rows are kernel/rows.py's (four rows at a time). As in the engine, the output
delta is pre-scaled by the step size alpha, so every layer's update is one rank-1 update per
example after the decay factor 1 - alpha lambda (coupled weight decay, SPEC 3.2). Momentum
(torch.optim.SGD semantics, engine/optim.py) materialises the gradient and touches every entry.

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
whole, so the untouched entries are clamped too (they then stay so). On a step where the learner
rescales, the layers being rescaled are not clamped here: the event rescales, then clamps the
entries this step touched there (the non-zero lists ``nz`` / ``nzc``), the rescaled rows and the
biases (the whole layers if this was the chunk's first step), which is SPEC 3.5 step 5's order.

Nothing here allocates (kernel/jit.py): the work arrays come from ``KernelPopulation._scratch``.
"""

from __future__ import annotations

import math

from numba import njit

from . import activations as A
from .codes import (CLIP_EVERY_STEP, EVENT_NEED_COINS, EVENT_NEED_DRAWS, EVENT_NONE, F_ACCUMULATE, F_BATCH, F_CLIP,
                    F_DECAY, F_FULL_CLAMP, F_LOSS, F_MOMENTUM, F_NEED_IN, F_NEED_OUT, F_PER_PASS, F_SYNC_SUMS,
                    F_UTIL, H_ALPHA, H_CLIP, H_DECAY, H_LAMBDA, H_MOMENTUM, I_COINS_USED, I_EVENT, I_NEXT,
                    LOSS_CROSS_ENTROPY)
from .jit import INLINE, JIT, JIT_FAST
from .layout import R_ACT, R_BOFF, R_SIZES, R_UOFF, R_WOFF
from .learners.adapted import adapted_decide, adapted_event, adapted_statistics
from .learners.cbp import cbp_decide, cbp_event, cbp_statistics
from .rows import abs_row_sums, axpy_rows, dot_rows, update_rows_with

# rows of the float64 work array ``work`` (4, width): kernel/learners' per-unit scratch, the softmax
W_BC, W_X, W_KEYS, W_EXP = range(4)


@njit(**JIT_FAST)
def _abs_sum(w):
    s = 0.0
    for i in range(w.shape[0]):
        s += abs(w[i])
    return s


@njit(**JIT)
def sync_abs_sums(layout, theta, in_sum, out_sum, L, need_in, need_out):
    """Every |w| sum, recomputed from scratch (float64): in_sum[i of hidden layer l] =
    sum_j |W_l[i, j]| and out_sum[j of hidden layer l - 1] = sum_i |W_l[i, j]|."""
    for l in range(L + 1):
        n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
        w0 = layout[R_WOFF, l]
        W = theta[w0 : w0 + n_in * n_out].reshape((n_in, n_out))
        if need_in and l < L:
            o = layout[R_UOFF, l]
            cs = in_sum[o : o + n_out]
            cs[:] = 0.0
            for j in range(n_in):
                for i in range(n_out):
                    cs[i] += abs(W[j, i])
        if need_out and l >= 1:
            o = layout[R_UOFF, l - 1]
            abs_row_sums(W, out_sum[o : o + n_in])


@njit(**INLINE)
def _clamp(w, c):
    for i in range(w.shape[0]):
        w[i] = min(max(w[i], -c), c)


@njit(**JIT)
def clamp_hidden(layout, theta, L, c, n_due, rescales):
    """Clamp every hidden layer's weights and biases to [-c, c] (SPEC 3.5 step 5), except, when
    ``rescales``, the layers with units due in ``n_due`` (2, L) (the event clamps them after the
    rescaling)."""
    for l in range(L):
        if rescales and n_due[0, l] + n_due[1, l] > 0:
            continue
        n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
        w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
        _clamp(theta[w0 : w0 + n_in * n_out], c)
        _clamp(theta[b0 : b0 + n_out], c)


@njit(**INLINE)
def _nonzeros(v, out):
    """The indices of v's non-zero entries into out[:count]; returns count (branch-free: the
    pattern of zeros is random, and a mispredicted branch per entry costs more than the work)."""
    count = 0
    for j in range(v.shape[0]):
        out[count] = j
        count += v[j] != 0
    return count


@njit(**INLINE)
def _segment(layout, l):
    """Where linear layer l's list of non-zero inputs starts in a row of ``nz`` (B, in + units)."""
    return 0 if l == 0 else layout[R_SIZES, 0] + layout[R_UOFF, l - 1]


@njit(**INLINE)
def _update_layer(layout, theta, buf, l, L, B, src, row0, col0, delta, nz, nzc, hyper, flags, clamp_now, c, sums,
                  in_sum, out_sum, dcs_all, zero, g):
    """The optimiser step of linear layer l for a batch: inputs src[row0 + b, col0 + j] (x for
    l = 0, else the activations below; only the entries listed in nz[b, seg:] / nzc[b, l] are
    non-zero, and only their rows have a non-zero gradient),
    output deltas delta[b, uoff[l] + i], alpha-scaled unless momentum; ``c`` the clip in the
    weights' dtype. With ``g`` non-empty (batch 1, relu below, no momentum or decay) it also
    computes the backward pass's g[j] = W[j, :] . delta for the listed rows j, in the same pass
    over them (``rows.update_rows``). ``sums``: whether the learner keeps |w| sums at all (cbp; a
    constant of the compiled loop, so that without it the tracking variants are not compiled).
    (Whole 2-D arrays and offsets, so that every row slice below is contiguous to the compiler.)"""
    n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
    o = layout[R_UOFF, l]
    w0, b0 = layout[R_WOFF, l], layout[R_BOFF, l]
    W = theta[w0 : w0 + n_in * n_out]
    W2 = W.reshape((n_in, n_out))
    bias = theta[b0 : b0 + n_out]
    hidden = l < L
    track_in = sums and flags[F_NEED_IN] != 0 and hidden
    track_out = sums and flags[F_NEED_OUT] != 0 and l >= 1
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
                gr = zero
                for b in range(B):
                    gr += src[row0 + b, col0 + j] * delta[b, o + i]
                gr += lam * w[i]
                wb[i] = mu * wb[i] + gr
                w[i] -= alpha * wb[i]
        for i in range(n_out):
            gr = zero
            for b in range(B):
                gr += delta[b, o + i]
            gr += lam * bias[i]
            bbuf[i] = mu * bbuf[i] + gr
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
            update_rows_with(W2, nz[b, seg : seg + nzc[b, l]], src[row0 + b, col0 : col0 + n_in],
                             delta[b, o : o + n_out], g, dcs, out_sum, o_out, c, zero, g.shape[0] > 0,
                             do_clamp and B == 1, tracking and track_in, tracking and track_out)
        if tracking and track_in:
            for i in range(n_out):
                cs[i] += dcs[i]
        if do_clamp and B > 1:  # clamp the batch's summed update, not each example's: a second pass
            for b in range(B):
                active = nz[b, seg : seg + nzc[b, l]]
                for t in range(active.shape[0]):
                    _clamp(W2[active[t]], c)
        if B == 1:
            d = delta[0, o : o + n_out]
            for i in range(n_out):
                bias[i] -= d[i]
        else:
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
            w = W2[j]
            if track_in:
                for i in range(n_out):
                    cs[i] += abs(w[i])
            if track_out:
                out_sum[o_out + j] = _abs_sum(w)


# ---------------------------------------------------------------------------- the loop
@njit(**JIT_FAST)
def train_member(layout, theta, buf, hyper, flags, x, y_class, y_value, start, stop,
                 lp, lpt, age, f, u, acc_a, acc_b, in_sum, out_sum, factors, counts, bias_corr,
                 coins, fresh, fresh_row, keys, draw_pos,
                 z, h, delta, nz, nzc, n_due, work, dcs, iota, marks, totals, info, cbp, adapted):
    """Train one member on examples ``start .. stop`` of its chunk (x (n, in), y_class (n,) or
    y_value (n,)), in steps of ``flags[F_BATCH]`` examples (the last one may be shorter), its
    learner's replacements / rescalings included. Stops early before a step for which the coin
    buffer may run out (``info[I_EVENT]`` = EVENT_NEED_COINS), or after a step whose replacements
    need more read-ahead draws than ``fresh`` / ``keys`` hold (EVENT_NEED_DRAWS, with ``n_due``
    (2, L) the units due: the caller draws further ahead and calls ``cbp_event``). ``info[I_NEXT]``
    is the next example to train on; ``info[I_COINS_USED]`` the coins used.

    Learner state (kernel/learners/): ``lp`` (NUM_ROWS, L) float64 per hidden layer (``lpt``: the
    same in the network's dtype), ages, f, u, accumulators, |w| sums, ``factors`` (2, L) (adapted
    c_low, c_high), ``counts`` (2, L) the per-task counts it adds to, ``bias_corr`` (L, ages) cbp's
    table of 1 - eta^age (learners/cbp.py); the member's read-ahead draws
    ``coins``, ``fresh``, ``fresh_row``, ``keys``, ``draw_pos`` (kernel/draws.py). Work arrays
    (``KernelPopulation._scratch``): z, h, delta (B, units), nz (B, in + units), nzc (B, L + 1),
    n_due (2, L), ``work`` float64 (4, width), ``dcs`` (hidden units,) in the dtype, ``iota`` =
    0, 1, 2, ... and ``marks`` (width,) int64. ``totals`` += (sum of the examples' losses, number
    correct).

    ``cbp`` / ``adapted``: None unless the member's learner is that one (then any array, e.g.
    ``flags``). numba compiles the loop once per combination of None and not None and drops the
    branches of a None argument before compiling them, so a configuration compiles only its own
    learner's code (bp none of it): its first compile is that much shorter.
    """
    L = layout.shape[1] - 2
    batch = flags[F_BATCH]
    per_pass = flags[F_PER_PASS] != 0
    n_lin = L + 1
    C = layout[R_SIZES, n_lin]
    out_o = layout[R_UOFF, L]
    alpha = hyper[H_ALPHA]
    fused = flags[F_MOMENTUM] == 0
    clamp_now = adapted is not None and flags[F_CLIP] == CLIP_EVERY_STEP  # (only adapted clips: F_CLIP 0 else)
    n_in0 = layout[R_SIZES, 0]
    zero = theta.dtype.type(0)
    clip = theta.dtype.type(hyper[H_CLIP])  # the clip in the weights' dtype (no float64 round trip per entry)
    event_clip = hyper[H_CLIP] if clamp_now or (per_pass and math.isfinite(hyper[H_CLIP])) else -1.0
    ex = work[W_EXP]  # exp(logit - max) of one example
    dense = flags[F_MOMENTUM] != 0 or flags[F_DECAY] != 0  # every weight changes at every step
    need_sums = cbp is not None and (flags[F_NEED_IN] != 0 or flags[F_NEED_OUT] != 0)
    if need_sums and flags[F_SYNC_SUMS] != 0:
        sync_abs_sums(layout, theta, in_sum, out_sum, L, flags[F_NEED_IN] != 0, flags[F_NEED_OUT] != 0)
    coin = 0
    first = flags[F_FULL_CLAMP] != 0
    s = start
    info[I_EVENT] = EVENT_NONE
    while s < stop:
        B = min(batch, stop - s)  # the last batch of a chunk may be shorter (as the engine's)
        # ---- the learner's decisions for this step (they depend on ages and accumulators only)
        event = False
        if cbp is not None:
            if flags[F_ACCUMULATE] == 0 and coin + 2 * L > coins.shape[0]:  # at most one coin per layer and pass
                info[I_EVENT] = EVENT_NEED_COINS
                break
            event, coin = cbp_decide(layout, lp, age, acc_a, acc_b, flags[F_ACCUMULATE] != 0, coins, coin, n_due, L)
        elif adapted is not None:
            event = adapted_decide(layout, lp, age, acc_a, acc_b, n_due, per_pass, L)
        # per_step clip: fused into the update, except in a layer rescaled at this step (the event
        # rescales, then clamps it: SPEC 3.5's order)
        rescales = event and adapted is not None
        # ---- forward, test-then-train (SPEC 1)
        scale = (alpha if fused else 1.0) / B
        for b in range(B):
            nzc[b, 0] = _nonzeros(x[s + b], nz[b, 0:n_in0])
            for l in range(n_lin):
                n_in, n_out = layout[R_SIZES, l], layout[R_SIZES, l + 1]
                w0, b0, o = layout[R_WOFF, l], layout[R_BOFF, l], layout[R_UOFF, l]
                src = x[s + b] if l == 0 else h[b, layout[R_UOFF, l - 1] : layout[R_UOFF, l - 1] + n_in]
                seg = _segment(layout, l)
                zb, bias = z[b, o : o + n_out], theta[b0 : b0 + n_out]
                for i in range(n_out):
                    zb[i] = bias[i]
                axpy_rows(zb, theta[w0 : w0 + n_in * n_out].reshape((n_in, n_out)), src, nz[b, seg : seg + nzc[b, l]])
                if l < L:
                    hb = h[b, o : o + n_out]
                    A.forward_layer(layout[R_ACT, l], zb, hb)
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
                    ex[i] = math.exp(logits[i] - mx)
                    se += ex[i]
                totals[0] -= (logits[y] - mx) - math.log(se)  # -log softmax(logits)[y]
                for i in range(C):
                    p = ex[i] / se  # softmax
                    if i == y:
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
            clamp_l = clamp_now and not (l < L and rescales and n_due[0, l] + n_due[1, l] > 0)
            fused_dot = False
            if l > 0:
                oi = layout[R_UOFF, l - 1]
                code = layout[R_ACT, l - 1]
                seg = _segment(layout, l)
                # relu: only the active units below have a gradient, and there it passes unchanged; they
                # are the rows the update changes, so with one example the dot products come with it
                relu = A.zero_gradient_where_zero(code)
                fused_dot = relu and B == 1 and not dense
                Wl = theta[w0 : w0 + n_in * n_out].reshape((n_in, n_out))
                for b in range(B):
                    dprev = delta[b, oi : oi + n_in]
                    if relu:
                        dprev[:] = zero
                        if not fused_dot:
                            dot_rows(Wl, nz[b, seg : seg + nzc[b, l]], delta[b, o : o + n_out], dprev, zero)
                    else:
                        dot_rows(Wl, iota[:n_in], delta[b, o : o + n_out], dprev, zero)
                        A.backward_layer(code, dprev, z[b, oi : oi + n_in], h[b, oi : oi + n_in])
            # the layer's inputs: x[s + b] below the first layer, else the activations below (one call
            # site, so that the compiled update loops exist once)
            below, row0, col0 = (h, 0, layout[R_UOFF, l - 1]) if l > 0 else (x, s, 0)
            _update_layer(layout, theta, buf, l, L, B, below, row0, col0, delta, nz, nzc, hyper, flags, clamp_l, clip,
                          cbp is not None, in_sum, out_sum, dcs, zero,
                          delta[0, layout[R_UOFF, l - 1] : layout[R_UOFF, l - 1] + n_in] if l > 0 and fused_dot
                          else delta[0, 0:0])
        whole = False  # whether the rescaled layers are still to be clamped whole
        if clamp_now and first:  # untouched entries (e.g. of zero pixels) are clamped once per chunk
            clamp_hidden(layout, theta, L, clip, n_due, rescales)
            whole = True
        first = False
        # ---- the learner's running statistics (SPEC 3.4 steps 1-3, 3.5 step 1), then its event
        s += B
        if cbp is not None:
            cbp_statistics(layout, lpt, age, f, u, h, in_sum, out_sum, flags[F_UTIL], B, L, work[W_BC], work[W_X],
                           bias_corr)
            if event and not cbp_event(layout, theta, buf, lp, age, f, u, n_due, flags, fresh, fresh_row, keys,
                                       draw_pos, in_sum, out_sum, counts, work[W_KEYS], marks, L):
                info[I_EVENT] = EVENT_NEED_DRAWS
                break
        elif adapted is not None:
            if not (event and per_pass):  # (a per_pass event updates u itself, pass by pass)
                adapted_statistics(layout, lp, lpt, u, h, B, L, per_pass)
            if event:
                adapted_event(layout, theta, lp, lpt, age, u, h, B, n_due, factors, counts, per_pass, event_clip,
                              whole, nz, nzc, work[W_KEYS], marks, L)
    info[I_NEXT] = s
    info[I_COINS_USED] = coin
