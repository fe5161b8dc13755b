"""Pure measurement functions (SPEC 4), batched over leading dimensions (usually the K members).

Every function takes tensors and returns tensors; nothing here touches a network or a
file. Shapes: a feature matrix is ``(..., N, H)`` (N probe examples as rows, H units as
columns, post-activation); a weight matrix is ``(..., out, in)``. Results are float64.

Conventions, stated once:

- A matrix holding any non-finite value (a diverged member) gives NaN for every
  metric of that matrix; it never raises.
- The zero matrix (e.g. a layer whose units are all dead) has rank 0, effective rank 0,
  approximate ranks 0 and stable rank 0 (the ratios below are 0/0 there; we define
  them as 0 so a fully dead layer reads as "no directions left", not as missing data).
- Singular values are computed in float64, by one of: ``svd`` (``torch.linalg.svdvals``),
  ``gram`` (``torch.linalg.eigvalsh`` of the Gram matrix ``A^T A`` or ``A A^T``, the
  smaller; sigma = sqrt(max(lambda, 0))), ``numpy`` (``numpy.linalg.svd``). If the first
  fails (LAPACK can, on degenerate matrices with many zero columns, SPEC 4) the others
  are tried in that order, and finally NaN: a measurement never crashes a run.
  ``auto`` (the default) is ``gram`` for float32 (or narrower) features and ``svd``
  otherwise: the float64 Gram route resolves singular values down to ~sqrt(eps64) =
  1.5e-8 sigma_max, far below both float32's own precision and the default rank
  tolerance (max(N, H) * eps32 = 2.4e-4 sigma_max for N = 2,000), and is about 3x faster
  than a float64 SVD of a 2,000 x 100 matrix; float64 features get the full SVD.

Sources: Dohare et al. 2024 [D] (rank, effective rank, approximate ranks, dead units,
weight magnitude as loss-of-plasticity diagnostics; their ``compute_matrix_rank_summaries``);
Roy & Vetterli 2007 (effective rank); Sokar et al. 2023 (ReDo dormant ratio);
Purice 2025 [P] (gradient covariance); Jucas 2025 [J] (gradient outer-product rank).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

SVD_METHODS = ("svd", "gram", "numpy")
METHODS = ("auto", *SVD_METHODS)


# --------------------------------------------------------------------------- helpers
def _finite_mask(a: torch.Tensor, dims: int) -> torch.Tensor:
    """True where the trailing ``dims``-dimensional block of ``a`` is all finite.

    One float64 sum per block: NaN and inf propagate into it, and float32 values cannot
    overflow a float64 sum, so this is exact for float32 (and for float64 below 1e300).
    """
    return torch.isfinite(a.sum(dim=tuple(range(-dims, 0)), dtype=torch.float64))


def _nan_where(value: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    value = value.to(torch.float64)
    return torch.where(bad, torch.full_like(value, float("nan")), value)


# --------------------------------------------------------------------------- singular values
def _svdvals_gram(a: torch.Tensor) -> torch.Tensor:
    """sigma from the eigenvalues of the smaller Gram matrix (float64), descending."""
    n, h = a.shape[-2:]
    gram = a.mT @ a if h <= n else a @ a.mT
    eig = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    return eig.flip(-1).sqrt()


def _svdvals_numpy(a: torch.Tensor) -> torch.Tensor:
    sv = np.linalg.svd(a.cpu().numpy(), compute_uv=False)
    return torch.from_numpy(np.ascontiguousarray(sv)).to(a.device, torch.float64)


_STAGES = {"svd": torch.linalg.svdvals, "gram": _svdvals_gram, "numpy": _svdvals_numpy}


def _one_matrix(a: torch.Tensor, methods: tuple[str, ...]) -> torch.Tensor:
    for name in methods:
        try:
            sv = _STAGES[name](a)
            if torch.isfinite(sv).all():
                return sv
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:  # LinAlgError is a RuntimeError
            log.warning("singular values: %s failed on a %s matrix (%s); trying the next method",
                        name, tuple(a.shape), err)
    return torch.full((min(a.shape[-2:]),), float("nan"), dtype=torch.float64, device=a.device)


def singular_values(a: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Singular values of each matrix in ``a`` (..., N, H), float64, in descending order.

    ``method`` is the first method tried (``auto``, ``svd``, ``gram`` or ``numpy``, see the
    module docstring); the others, in the order svd, gram, numpy, are the fall-backs.
    Matrices with non-finite entries give all-NaN rows.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "gram" if torch.finfo(a.dtype).bits <= 32 else "svd"
    a = a.detach().to(torch.float64)
    batch = a.shape[:-2]
    flat = a.reshape(-1, *a.shape[-2:])
    out = torch.full((flat.shape[0], min(a.shape[-2:])), float("nan"), dtype=torch.float64, device=a.device)
    good = _finite_mask(flat, 2)
    if good.any():
        idx = good.nonzero().flatten()
        methods = (method, *[m for m in SVD_METHODS if m != method])
        try:  # the whole batch at once (the usual case), then matrix by matrix
            sv = _STAGES[methods[0]](flat if len(idx) == flat.shape[0] else flat[idx])
            if not torch.isfinite(sv).all():
                raise ValueError("non-finite singular values")
            out[idx] = sv
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            for i in idx.tolist():
                out[i] = _one_matrix(flat[i], methods)
    return out.reshape(*batch, -1)


# --------------------------------------------------------------------------- rank family
def default_rtol(shape: tuple[int, int], dtype: torch.dtype) -> float:
    """The relative rank tolerance max(N, H) * eps(dtype): ``numpy``'s and ``torch.linalg.matrix_rank``'s default.

    ``dtype`` is the dtype the features were computed in (float32 by default: their
    own precision, not the float64 of the SVD), so eps = 1.19e-7 for float32.
    """
    return max(shape) * torch.finfo(dtype).eps


def rank(sv: torch.Tensor, rtol: float) -> torch.Tensor:
    """Number of singular values > rtol * sigma_max (``sv`` descending, (..., n)); 0 for the zero matrix."""
    tol = sv[..., :1] * rtol
    count = (sv > tol).sum(dim=-1).to(torch.float64)
    return _nan_where(count, ~torch.isfinite(sv).all(dim=-1))


def effective_rank(sv: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli (2007): exp(-sum_k p_k ln p_k), p_k = sigma_k / sum_j sigma_j, with 0 ln 0 = 0.

    Equals n for n equal singular values (e.g. the identity), 1 for a rank-1 matrix;
    defined as 0 for the zero matrix.
    """
    total = sv.sum(dim=-1, keepdim=True)
    p = sv / torch.where(total > 0, total, torch.ones_like(total))
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    erank = torch.exp(-plogp.sum(dim=-1))
    erank = torch.where(total.squeeze(-1) > 0, erank, torch.zeros_like(erank))
    return _nan_where(erank, ~torch.isfinite(sv).all(dim=-1))


def _cumulative_rank(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """Smallest k with sum_{j<=k} v_j / sum_j v_j >= fraction (``values`` >= 0, descending); 0 if all 0."""
    total = values.sum(dim=-1, keepdim=True)
    share = values.cumsum(dim=-1) / torch.where(total > 0, total, torch.ones_like(total))
    # share is non-decreasing; rounding can leave its last entry a hair below 1: clamp to n
    k = ((share < fraction).sum(dim=-1) + 1).clamp(max=values.shape[-1]).to(torch.float64)
    k = torch.where(total.squeeze(-1) > 0, k, torch.zeros_like(k))
    return _nan_where(k, ~torch.isfinite(values).all(dim=-1))


def approximate_rank(sv: torch.Tensor, fraction: float = 0.99) -> torch.Tensor:
    """Smallest k with sum_{j<=k} sigma_j^2 / sum_j sigma_j^2 >= fraction (default 0.99) [D]."""
    return _cumulative_rank(sv * sv, fraction)


def abs_approximate_rank(sv: torch.Tensor, fraction: float = 0.99) -> torch.Tensor:
    """Smallest k with sum_{j<=k} sigma_j / sum_j sigma_j >= fraction (default 0.99) [D]."""
    return _cumulative_rank(sv, fraction)


def stable_rank(sv: torch.Tensor) -> torch.Tensor:
    """||A||_F^2 / ||A||_2^2 = sum_k sigma_k^2 / sigma_max^2 (the squared-norm definition;
    some papers use sum sigma / sigma_max instead). 0 for the zero matrix; n for an
    n x n identity; for diag(d), sum d^2 / max d^2."""
    top = sv[..., 0] ** 2
    value = (sv * sv).sum(dim=-1) / torch.where(top > 0, top, torch.ones_like(top))
    value = torch.where(top > 0, value, torch.zeros_like(value))
    return _nan_where(value, ~torch.isfinite(sv).all(dim=-1))


def rank_metrics(features: torch.Tensor, fraction: float = 0.99, rtol: float | None = None,
                 method: str = "auto") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """All rank measures of feature matrices (..., N, H) from one SVD.

    Returns ``({metric: (...,)}, singular values (..., min(N, H)))`` with metrics ``rank``
    (tolerance ``rtol * sigma_max``, default :func:`default_rtol` of the features' dtype),
    ``effective_rank``, ``approximate_rank``, ``abs_approximate_rank`` and ``stable_rank``.
    """
    if rtol is None:
        rtol = default_rtol(tuple(features.shape[-2:]), features.dtype)
    sv = singular_values(features, method)
    return {
        "rank": rank(sv, rtol),
        "effective_rank": effective_rank(sv),
        "approximate_rank": approximate_rank(sv, fraction),
        "abs_approximate_rank": abs_approximate_rank(sv, fraction),
        "stable_rank": stable_rank(sv),
    }, sv


# --------------------------------------------------------------------------- unit activity
def dead_units(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, fraction) of units whose activation is exactly 0 on every probe example [D].

    ``features`` (..., N, H) -> two (...,) tensors; NaN for matrices with non-finite entries.
    """
    bad = ~_finite_mask(features, 2)
    dead = (features == 0).all(dim=-2)
    count = dead.sum(dim=-1).to(torch.float64)
    return _nan_where(count, bad), _nan_where(count / features.shape[-1], bad)


def dormant_ratio(features: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """ReDo (Sokar et al. 2023): fraction of units with s_i = a_i / mean_j a_j <= tau,
    a_i = mean over the probe examples of |h_i|.

    ``tau = 0`` counts the units that are 0 on every example (dead units). When every
    unit is 0 the mean is 0 and we define s_i = 0 (all units dormant) instead of 0/0.
    """
    bad = ~_finite_mask(features, 2)
    a = features.detach().to(torch.float64).abs().mean(dim=-2)
    mean = a.mean(dim=-1, keepdim=True)
    s = torch.where(mean > 0, a / torch.where(mean > 0, mean, torch.ones_like(mean)), torch.zeros_like(a))
    ratio = (s <= tau).to(torch.float64).mean(dim=-1)
    return _nan_where(ratio, bad)


def feature_norm(features: torch.Tensor) -> torch.Tensor:
    """Mean over the probe examples of the L2 norm of the feature vector: mean_n ||h_n||_2."""
    return torch.linalg.vector_norm(features.detach().to(torch.float64), dim=-1).mean(dim=-1)


def activity_metrics(features: torch.Tensor, tau: float = 0.1) -> dict[str, torch.Tensor]:
    """``dead_units``, ``dead_fraction``, ``dormant_ratio`` (threshold ``tau``) and ``feature_norm``
    of features (..., N, H) in one pass over |h|; the same values as the four functions above."""
    features = features.detach()
    bad = ~_finite_mask(features, 2)
    a = features.abs()
    dead = a.amax(dim=-2) == 0
    count = dead.sum(dim=-1).to(torch.float64)
    mean_abs = a.mean(dim=-2, dtype=torch.float64)
    mean = mean_abs.mean(dim=-1, keepdim=True)
    s = torch.where(mean > 0, mean_abs / torch.where(mean > 0, mean, torch.ones_like(mean)), torch.zeros_like(mean_abs))
    norm = torch.linalg.vector_norm(features, dim=-1, dtype=torch.float64).mean(dim=-1)
    return {
        "dead_units": _nan_where(count, bad),
        "dead_fraction": _nan_where(count / features.shape[-1], bad),
        "dormant_ratio": _nan_where((s <= tau).to(torch.float64).mean(dim=-1), bad),
        "feature_norm": _nan_where(norm, bad),
    }


# --------------------------------------------------------------------------- weights
def weight_magnitude(weights: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Mean |w| per layer and over the whole network (weights only, no biases) [D].

    ``weights``: one (..., out, in) tensor per linear layer. Returns ([per layer (...,)],
    network (...,)); the network value is sum |w| / number of weights over all layers.
    """
    sums = [w.detach().to(torch.float64).abs().sum(dim=(-2, -1)) for w in weights]
    counts = [w.shape[-2] * w.shape[-1] for w in weights]
    return [s / c for s, c in zip(sums, counts)], sum(sums) / sum(counts)


def weight_norm(weight: torch.Tensor) -> torch.Tensor:
    """Frobenius (L2) norm of a weight matrix (..., out, in): sqrt(sum w^2)."""
    return torch.linalg.vector_norm(weight.detach().to(torch.float64), dim=(-2, -1))


# --------------------------------------------------------------------------- gradients
def gradient_gram(inputs: list[torch.Tensor], deltas: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-layer Gram matrices of the per-example gradients, in closed form [P].

    For example i, the gradient of its loss w.r.t. linear layer l is ``D_l[i] H_l[i]^T``
    (weights) and ``D_l[i]`` (bias), with D_l[i] = dloss_i / d(pre-activation of layer l)
    and H_l[i] the layer's input. So <g_i, g_j> restricted to layer l is
    (D_l[i] . D_l[j]) (H_l[i] . H_l[j] + 1):

        G_l = (D_l D_l^T) * (H_l H_l^T + 1)    (elementwise), G = sum_l G_l

    and no per-example gradient is materialised. ``inputs[l]`` (..., S, n_l) and
    ``deltas[l]`` (..., S, n_{l+1}) for every linear layer l; returns [G_l (..., S, S)], float64.
    """
    grams = []
    for h, d in zip(inputs, deltas):
        h, d = h.detach().to(torch.float64), d.detach().to(torch.float64)
        grams.append((d @ d.mT) * (h @ h.mT + 1.0))
    return grams


def cosine_matrix(gram: torch.Tensor) -> torch.Tensor:
    """C[i, j] = <g_i, g_j> / (||g_i|| ||g_j||) from the Gram matrix G (..., S, S) [P].

    Rows and columns of examples with a zero gradient are NaN (the cosine is undefined).
    """
    norms = torch.diagonal(gram, dim1=-2, dim2=-1).clamp_min(0).sqrt()
    denom = norms.unsqueeze(-1) * norms.unsqueeze(-2)
    return torch.where(denom > 0, gram / torch.where(denom > 0, denom, torch.ones_like(denom)),
                       torch.full_like(gram, float("nan")))


def _eigvalsh_desc(gram: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (clamped at 0, descending) of symmetric matrices; NaN rows where it fails."""
    flat = gram.reshape(-1, *gram.shape[-2:])
    out = torch.full(flat.shape[:-1], float("nan"), dtype=torch.float64, device=gram.device)
    for i in range(flat.shape[0]):  # few, small matrices; per matrix so one failure stays local
        m = flat[i]
        if not torch.isfinite(m).all():
            continue
        try:
            out[i] = torch.linalg.eigvalsh(m).flip(-1)
        except RuntimeError:
            try:
                out[i] = torch.from_numpy(np.linalg.eigvalsh(m.cpu().numpy())[::-1].copy()).to(out)
            except np.linalg.LinAlgError:
                log.warning("eigenvalues of a %s Gram matrix failed; recording NaN", tuple(m.shape))
    return out.clamp_min(0.0).reshape(*gram.shape[:-1])


def gradient_rank(gram: torch.Tensor, fraction: float = 0.99) -> torch.Tensor:
    """[J]'s gradient outer-product rank: the smallest k whose cumulative eigenvalue sum of
    G G^T (G = per-example gradients as columns) reaches ``fraction`` of the total.

    The non-zero eigenvalues of G G^T (P x P) are those of the Gram matrix G^T G (S x S),
    which is what ``gram`` (..., S, S) is; so k <= S. 0 if every gradient is 0.
    """
    return _cumulative_rank(_eigvalsh_desc(gram.to(torch.float64)), fraction)


# --------------------------------------------------------------------------- utilities
def utility_summary(u_hat: torch.Tensor) -> dict[str, torch.Tensor]:
    """mean, median, min, max over the units of u_hat (..., H), ignoring NaN entries
    (e.g. units of age 0, whose bias-corrected utility is 0/0); all NaN -> NaN."""
    u = u_hat.detach().to(torch.float64)
    nan = torch.isnan(u)
    allnan = nan.all(dim=-1)
    lo = torch.where(nan, torch.full_like(u, float("inf")), u).amin(dim=-1)
    hi = torch.where(nan, torch.full_like(u, -float("inf")), u).amax(dim=-1)
    return {
        "utility_mean": torch.nanmean(u, dim=-1),
        "utility_median": torch.nanquantile(u, 0.5, dim=-1),  # mean of the two middle values if H is even
        "utility_min": _nan_where(lo, allnan),
        "utility_max": _nan_where(hi, allnan),
    }
