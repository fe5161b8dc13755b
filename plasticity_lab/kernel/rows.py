"""The kernel's inner loops: one example's work on the rows of an input-major layer, four rows per pass.

A linear layer is stored input-major (kernel/layout.py): ``W`` is a 2-D (in, out) view whose row
j holds input j's outgoing weights, contiguous. Every pass of a step visits a list of rows
(``rows``: the non-zero inputs, kernel/step.py) and, for each, the ``out`` numbers of that row:

- ``axpy_rows``: z += sum_t src[j_t] W[j_t, :] (the forward pass);
- ``dot_rows``: g[j_t] = W[j_t, :] . d (the backward pass's gradient of input j_t);
- ``update_rows*``: W[j_t, :] -= src[j_t] d (one example's SGD step, d alpha-scaled), plain, with the
  clamp to [-c, c] (adapted ``clip``), or with CBP's |w| sums of what changed (SPEC 3.4 step 3:
  ``in`` = the change of every column's sum |W[:, i]|, ``out`` = every touched row's sum |W[j, :]|).

Each walks FOUR rows per pass over the ``out`` numbers (then the last rows one by one), so the
vector of partial sums z (or d, or the column sums) is loaded and stored once per four rows
instead of once per row, and the loop's set-up and tail are paid once per four rows: on the
3 x 100 network this makes the passes 1.4-3x faster than one row at a time (make bench). The
forward pass adds the four rows' products pairwise before adding them to z, a summation order
within float32 rounding of the reference's (tests/test_kernel.py), the same in every run.

Loops index the views with their bare loop variable (W[j, i], z[i]): numba then knows the index
is not negative (no wrap-around branch) and LLVM vectorises them. Reductions (dot products, |w|
sums) may be reassociated so that they vectorise too (kernel/jit.py, ``FAST``).
"""

from __future__ import annotations

from numba import njit

from .jit import FAST, INLINE, JIT


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


@njit(**JIT, fastmath=FAST)
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
def update_rows(W, rows, src, d):
    """W[j, :] -= src[j] d for every listed row j."""
    n, t = rows.shape[0], 0
    while t + 4 <= n:
        j0, j1, j2, j3 = rows[t], rows[t + 1], rows[t + 2], rows[t + 3]
        v0, v1, v2, v3 = src[j0], src[j1], src[j2], src[j3]
        for i in range(d.shape[0]):
            di = d[i]
            W[j0, i] -= v0 * di
            W[j1, i] -= v1 * di
            W[j2, i] -= v2 * di
            W[j3, i] -= v3 * di
        t += 4
    while t < n:
        j = rows[t]
        v = src[j]
        for i in range(d.shape[0]):
            W[j, i] -= v * d[i]
        t += 1


@njit(**INLINE)
def update_rows_clamp(W, rows, src, d, c):
    """W[j, :] = clamp(W[j, :] - src[j] d, -c, c) for every listed row j."""
    n, t = rows.shape[0], 0
    while t + 4 <= n:
        j0, j1, j2, j3 = rows[t], rows[t + 1], rows[t + 2], rows[t + 3]
        v0, v1, v2, v3 = src[j0], src[j1], src[j2], src[j3]
        for i in range(d.shape[0]):
            di = d[i]
            W[j0, i] = min(max(W[j0, i] - v0 * di, -c), c)
            W[j1, i] = min(max(W[j1, i] - v1 * di, -c), c)
            W[j2, i] = min(max(W[j2, i] - v2 * di, -c), c)
            W[j3, i] = min(max(W[j3, i] - v3 * di, -c), c)
        t += 4
    while t < n:
        j = rows[t]
        v = src[j]
        for i in range(d.shape[0]):
            W[j, i] = min(max(W[j, i] - v * d[i], -c), c)
        t += 1


# CBP's |w| sums (kernel/step.py). In sums: the changes |new| - |old| of every column (exact in the
# weights' dtype when they are close, by Sterbenz's lemma) are collected in ``dcs`` (the dtype).
# Out sums: a touched row's sum |W[j, :]| after the update, into out_sum[o + j] (in the dtype, as
# the engine's torch sums).
@njit(**INLINE)
def update_rows_in(W, rows, src, d, dcs):
    """``update_rows``, adding every column's change of sum |W[:, i]| to dcs[i]."""
    n, t = rows.shape[0], 0
    while t + 4 <= n:
        j0, j1, j2, j3 = rows[t], rows[t + 1], rows[t + 2], rows[t + 3]
        v0, v1, v2, v3 = src[j0], src[j1], src[j2], src[j3]
        for i in range(d.shape[0]):
            di = d[i]
            a0, a1, a2, a3 = W[j0, i], W[j1, i], W[j2, i], W[j3, i]
            b0, b1, b2, b3 = a0 - v0 * di, a1 - v1 * di, a2 - v2 * di, a3 - v3 * di
            W[j0, i], W[j1, i], W[j2, i], W[j3, i] = b0, b1, b2, b3
            dcs[i] += ((abs(b0) - abs(a0)) + (abs(b1) - abs(a1))) + ((abs(b2) - abs(a2)) + (abs(b3) - abs(a3)))
        t += 4
    while t < n:
        j = rows[t]
        v = src[j]
        for i in range(d.shape[0]):
            a = W[j, i]
            b = a - v * d[i]
            W[j, i] = b
            dcs[i] += abs(b) - abs(a)
        t += 1


@njit(**JIT, fastmath=FAST)
def update_rows_out(W, rows, src, d, out_sum, o, zero):
    """``update_rows``, then out_sum[o + j] = sum_i |W[j, i]| for every listed row j."""
    n, t = rows.shape[0], 0
    while t + 4 <= n:
        j0, j1, j2, j3 = rows[t], rows[t + 1], rows[t + 2], rows[t + 3]
        v0, v1, v2, v3 = src[j0], src[j1], src[j2], src[j3]
        s0 = s1 = s2 = s3 = zero
        for i in range(d.shape[0]):
            di = d[i]
            b0, b1, b2, b3 = W[j0, i] - v0 * di, W[j1, i] - v1 * di, W[j2, i] - v2 * di, W[j3, i] - v3 * di
            W[j0, i], W[j1, i], W[j2, i], W[j3, i] = b0, b1, b2, b3
            s0 += abs(b0)
            s1 += abs(b1)
            s2 += abs(b2)
            s3 += abs(b3)
        out_sum[o + j0], out_sum[o + j1], out_sum[o + j2], out_sum[o + j3] = s0, s1, s2, s3
        t += 4
    while t < n:
        j = rows[t]
        v = src[j]
        s = zero
        for i in range(d.shape[0]):
            b = W[j, i] - v * d[i]
            W[j, i] = b
            s += abs(b)
        out_sum[o + j] = s
        t += 1


@njit(**JIT, fastmath=FAST)
def update_rows_both(W, rows, src, d, dcs, out_sum, o, zero):
    """``update_rows_in`` and ``update_rows_out`` in one pass."""
    n, t = rows.shape[0], 0
    while t + 4 <= n:
        j0, j1, j2, j3 = rows[t], rows[t + 1], rows[t + 2], rows[t + 3]
        v0, v1, v2, v3 = src[j0], src[j1], src[j2], src[j3]
        s0 = s1 = s2 = s3 = zero
        for i in range(d.shape[0]):
            di = d[i]
            a0, a1, a2, a3 = W[j0, i], W[j1, i], W[j2, i], W[j3, i]
            b0, b1, b2, b3 = a0 - v0 * di, a1 - v1 * di, a2 - v2 * di, a3 - v3 * di
            W[j0, i], W[j1, i], W[j2, i], W[j3, i] = b0, b1, b2, b3
            c0, c1, c2, c3 = abs(b0), abs(b1), abs(b2), abs(b3)
            dcs[i] += ((c0 - abs(a0)) + (c1 - abs(a1))) + ((c2 - abs(a2)) + (c3 - abs(a3)))
            s0 += c0
            s1 += c1
            s2 += c2
            s3 += c3
        out_sum[o + j0], out_sum[o + j1], out_sum[o + j2], out_sum[o + j3] = s0, s1, s2, s3
        t += 4
    while t < n:
        j = rows[t]
        v = src[j]
        s = zero
        for i in range(d.shape[0]):
            a = W[j, i]
            b = a - v * d[i]
            W[j, i] = b
            c = abs(b)
            dcs[i] += c - abs(a)
            s += c
        out_sum[o + j] = s
        t += 1
