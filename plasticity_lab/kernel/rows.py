"""The kernel's inner loops: one example's work on the rows of an input-major layer, four rows per pass.

A linear layer is stored input-major (kernel/layout.py): ``W`` is a 2-D (in, out) view whose row
j holds input j's outgoing weights, contiguous. Every pass of a step visits a list of rows
(``rows``: the non-zero inputs, kernel/step.py) and, for each, the ``out`` numbers of that row:

- ``axpy_rows``: z += sum_t src[j_t] W[j_t, :] (the forward pass);
- ``dot_rows``: g[j_t] = W[j_t, :] . d (the backward pass's gradient of input j_t);
- ``update_rows``: W[j_t, :] -= src[j_t] d (one example's SGD step, d alpha-scaled), with, as
  switched on, the backward pass's dot product read in the same pass (where the rows it needs are
  the rows the step changes: relu, batch 1), the clamp to [-c, c] (adapted ``clip``), or CBP's |w|
  sums of what changed (SPEC 3.4 step 3: ``in`` = the change of every column's sum |W[:, i]|,
  ``out`` = every touched row's sum |W[j, :]|).

Each walks FOUR rows per pass over the ``out`` numbers (then the last rows one by one), so the
vector of partial sums z (or d, or the column sums) is loaded and stored once per four rows
instead of once per row, and the loop's set-up and tail are paid once per four rows: on the
3 x 100 network this made the passes 1.4-3x faster than one row at a time (timed in isolation).
The forward pass adds the four rows' products pairwise before adding them to z, a summation
order within float32 rounding of the reference's (tests/test_kernel.py), the same in every run.

They are inlined into the compiled step (kernel/step.py), whose fastmath flags (kernel/jit.py,
``FAST``) let the reductions (dot products, |w| sums) be reassociated so that they vectorise;
as separate compiled functions the same loops ran at half the speed (timed in isolation). Loops
index the views with their bare loop variable (W[j, i], z[i]): numba then knows the index is not
negative (no wrap-around branch) and LLVM vectorises them.
"""

from __future__ import annotations

from numba import njit

from .jit import INLINE, JIT_FAST


@njit(**INLINE)
def axpy_rows(z, W, src, rows):
    """z += sum_t src[rows[t]] W[rows[t], :]."""
    n, t = rows.shape[0], 0
    while t + 4 <= n:
        j0, j1, j2, j3 = rows[t], rows[t + 1], rows[t + 2], rows[t + 3]
        v0, v1, v2, v3 = src[j0], src[j1], src[j2], src[j3]
        for i in range(z.shape[0]):
            z[i] += (v0 * W[j0, i] + v1 * W[j1, i]) + (v2 * W[j2, i] + v3 * W[j3, i])
        t += 4
    while t < n:
        j = rows[t]
        v = src[j]
        for i in range(z.shape[0]):
            z[i] += v * W[j, i]
        t += 1


@njit(**INLINE)
def dot_rows(W, rows, d, g, zero):
    """g[rows[t]] = W[rows[t], :] . d for every t (``zero``: 0 in the weights' dtype)."""
    n, t = rows.shape[0], 0
    while t + 4 <= n:
        j0, j1, j2, j3 = rows[t], rows[t + 1], rows[t + 2], rows[t + 3]
        g0 = g1 = g2 = g3 = zero
        for i in range(d.shape[0]):
            di = d[i]
            g0 += W[j0, i] * di
            g1 += W[j1, i] * di
            g2 += W[j2, i] * di
            g3 += W[j3, i] * di
        g[j0], g[j1], g[j2], g[j3] = g0, g1, g2, g3
        t += 4
    while t < n:
        j = rows[t]
        s = zero
        for i in range(d.shape[0]):
            s += W[j, i] * d[i]
        g[j] = s
        t += 1


@njit(**INLINE)
def update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, dot, clamp, track_in, track_out):
    """W[j, :] -= src[j] d for every listed row j (one example's SGD step), and with each switch on:

    - ``dot``: first g[j] = W[j, :] . d with the weights before the step (the backward pass's
      gradient of input j, read in the same pass over the row);
    - ``clamp``: W[j, :] clamped to [-c, c] (adapted ``clip``);
    - ``track_in``: dcs[i] += the change of |W[:, i]|'s sum (CBP's in sums);
    - ``track_out``: out_sum[o + j] = sum_i |W[j, i]| after the step (CBP's out sums).

    The switches are constants where it is called (``update_rows_with``), so each combination
    compiles to its own loop without the others' work."""
    n, t = rows.shape[0], 0
    while t + 4 <= n:
        j0, j1, j2, j3 = rows[t], rows[t + 1], rows[t + 2], rows[t + 3]
        v0, v1, v2, v3 = src[j0], src[j1], src[j2], src[j3]
        g0 = g1 = g2 = g3 = zero
        s0 = s1 = s2 = s3 = zero
        for i in range(d.shape[0]):
            di = d[i]
            a0, a1, a2, a3 = W[j0, i], W[j1, i], W[j2, i], W[j3, i]
            if dot:
                g0 += a0 * di
                g1 += a1 * di
                g2 += a2 * di
                g3 += a3 * di
            b0, b1, b2, b3 = a0 - v0 * di, a1 - v1 * di, a2 - v2 * di, a3 - v3 * di
            if clamp:
                b0, b1 = min(max(b0, -c), c), min(max(b1, -c), c)
                b2, b3 = min(max(b2, -c), c), min(max(b3, -c), c)
            W[j0, i], W[j1, i], W[j2, i], W[j3, i] = b0, b1, b2, b3
            if track_in:
                dcs[i] += ((abs(b0) - abs(a0)) + (abs(b1) - abs(a1))) + ((abs(b2) - abs(a2)) + (abs(b3) - abs(a3)))
            if track_out:
                s0 += abs(b0)
                s1 += abs(b1)
                s2 += abs(b2)
                s3 += abs(b3)
        if dot:
            g[j0], g[j1], g[j2], g[j3] = g0, g1, g2, g3
        if track_out:
            out_sum[o + j0], out_sum[o + j1], out_sum[o + j2], out_sum[o + j3] = s0, s1, s2, s3
        t += 4
    while t < n:
        j = rows[t]
        v = src[j]
        gj = sj = zero
        for i in range(d.shape[0]):
            a = W[j, i]
            if dot:
                gj += a * d[i]
            b = a - v * d[i]
            if clamp:
                b = min(max(b, -c), c)
            W[j, i] = b
            if track_in:
                dcs[i] += abs(b) - abs(a)
            if track_out:
                sj += abs(b)
        if dot:
            g[j] = gj
        if track_out:
            out_sum[o + j] = sj
        t += 1


@njit(**JIT_FAST)
def abs_row_sums(W, out):
    """out[j] = sum_i |W[j, i]| for every row j, in float64: the |w| sums of whole rows (a chunk's
    start, a replacement). Compiled on its own with the loop's liberties (the sums reassociated, so
    that they vectorise: a callee without them, as a replacement is, summed one number at a time,
    and a replacement's re-summed rows were then most of CBP's event cost)."""
    for j in range(W.shape[0]):
        s = 0.0
        for i in range(W.shape[1]):
            s += abs(W[j, i])
        out[j] = s


@njit(**INLINE)
def update_rows_with(W, rows, src, d, g, dcs, out_sum, o, c, zero, dot, clamp, track_in, track_out):
    """``update_rows`` with run-time switches: the compiled variant for them (clamp goes without sums)."""
    if dot:
        if clamp:
            update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, True, True, False, False)
        elif track_in and track_out:
            update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, True, False, True, True)
        elif track_in:
            update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, True, False, True, False)
        elif track_out:
            update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, True, False, False, True)
        else:
            update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, True, False, False, False)
    elif clamp:
        update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, False, True, False, False)
    elif track_in and track_out:
        update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, False, False, True, True)
    elif track_in:
        update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, False, False, True, False)
    elif track_out:
        update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, False, False, False, True)
    else:
        update_rows(W, rows, src, d, g, dcs, out_sum, o, c, zero, False, False, False, False)
