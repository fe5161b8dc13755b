"""What the kernel's reset learners share: per-layer parameter rows, the compiled ageing,
accumulation and EMA helpers, and the interface the kernel backend asks of a learner.

Per member, a learner's per-layer hyperparameters are one float64 array ``lp`` (NUM_ROWS, L):
``RATE_A`` (cbp rho / adapted rho_low), ``RATE_B`` (adapted rho_high), ``ETA`` (decay_rate),
``MATURITY`` (m), ``ACTIVE`` (1 where the learner acts on the layer for this member, SPEC 3.4
step 1), ``ONE_MINUS_ETA`` (1 - eta computed in float64, then used in the network's dtype as
the engine does), ``AGE_ONE`` (the age from which the bias correction 1 - eta^age is exactly 1
in the network's dtype, so that pow is only evaluated for young units; ``age_one``). The kernel decides how many units are due at the START of a step (from ages
and accumulators only, which the step's data never change) and computes the running
statistics after the step's update, as the engine and the reference do.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from ..codes import F_LEARNER, LEARNER_NONE
from ..jit import INLINE, JIT
from ..layout import R_SIZES, R_UOFF

RATE_A, RATE_B, ETA, MATURITY, ACTIVE, ONE_MINUS_ETA, AGE_ONE = range(7)
NUM_ROWS = 7


@njit(**INLINE)
def lerp(a, b, w):
    """torch.lerp(a, b, w): a + w (b - a) for w < 0.5, else b - (b - a)(1 - w) (eta a + (1 - eta) b)."""
    d = b - a
    low, high = a + w * d, b - d * (1 - w)  # both, then a select: no branch in the loops that call it
    return low if w < 0.5 else high


@njit(**INLINE)
def age_layer(layout, lp, age, l):
    """age += 1 for hidden layer l's units; returns #eligible (age > m) after it (SPEC 3.4 steps 1, 4)."""
    o, H = layout[R_UOFF, l], layout[R_SIZES, l + 1]
    al = age[o : o + H]
    m = lp[MATURITY, l]
    eligible = 0
    for i in range(H):
        al[i] += 1
        eligible += al[i] > m
    return eligible


@njit(**INLINE)
def accumulate(acc, l, rate, eligible):
    """SPEC 3.4 step 5 / 3.5 step 2: acc += rate * #eligible; n = floor(acc); acc -= n (float64, as engine/learners/base.how_many)."""
    acc[l] += rate * eligible
    n = np.floor(acc[l])
    acc[l] -= n
    return int(n)


@njit(**INLINE)
def _before(a, i, b, j):
    """Whether key a of unit i comes before key b of unit j: ascending, NaN last, ties by the unit index."""
    if a != a:
        return b != b and i < j
    return b != b or a < b or (a == b and i < j)


@njit(**JIT)
def smallest(keys, n, chosen, taken):
    """chosen[:n] = the units with the n smallest keys, in order (the first n of a stable argsort:
    ties by the lowest index, NaN last, as the engine's and the reference's sorts); ``taken`` is
    work space (at least as long as ``keys``)."""
    H = keys.shape[0]
    for i in range(H):
        taken[i] = 0
    for t in range(n):
        best = -1
        for i in range(H):
            if taken[i] == 0 and (best < 0 or _before(keys[i], i, keys[best], best)):
                best = i
        chosen[t] = best
        taken[best] = 1


def age_one(eta: np.ndarray, dtype) -> np.ndarray:
    """Per entry of ``eta``: an age A with 1 - eta^a == 1 exactly in ``dtype`` for every a >= A.

    eta^A <= 2^-(p + 2) (p = 24 or 53 mantissa bits) is below half the spacing of the numbers
    just under 1, so 1 - eta^a rounds to 1, even with pow's last-bit error; eta = 0: A = 1."""
    p = np.finfo(dtype).nmant + 1
    eta = np.asarray(eta, dtype=np.float64)
    with np.errstate(divide="ignore"):
        A = np.ceil(-(p + 2) * np.log(2.0) / np.log(np.where(eta > 0, eta, 0.5)))
    return np.where(eta > 0, A, 1.0)


class KernelLearner:
    """What the kernel backend asks of a learner, besides the engine learner's interface it
    inherits: ``units`` (S, K, hidden units) per-unit state tensors, ``lp`` (K, NUM_ROWS, L),
    and the methods below."""

    LEARNER_CODE = LEARNER_NONE
    # units: the storage of the per-unit state (checkpointed through its views, engine/state.py);
    # lp, lpt: the per-layer parameters from the settings (lpt in the network's dtype); counts_np: the
    # task's counts (taken every task); an empty placeholder
    REBUILT = ("units", "lp", "lpt", "counts_np", "_no_factors")

    def _kernel_setup(self, pop, slots: tuple[str, ...], rate_a: np.ndarray, rate_b=0.0) -> None:
        """After the engine learner's ``setup``: its per-unit state ``slots`` (e.g. age, f, u, each
        a list of (K, H) tensors) become views of one flat (S, K, hidden units) tensor ``units``,
        and ``lp`` holds the per-layer parameters for the compiled code."""
        K, L, layout = pop.K, pop.spec.num_hidden, pop.layout
        self.units = torch.zeros(len(slots), K, layout.num_hidden_units, dtype=pop.dtype)
        for s, name in enumerate(slots):
            setattr(self, name, [layout.hidden_view(self.units[s], l) for l in range(L)])
        eta = np.stack([e.cpu().double().numpy()[:, 0] for e in self.eta], axis=1)  # (K, L)
        lp = np.zeros((K, NUM_ROWS, L))
        lp[:, RATE_A], lp[:, RATE_B] = rate_a, rate_b
        lp[:, ETA], lp[:, MATURITY], lp[:, ACTIVE] = eta, self.m, self.active
        lp[:, ONE_MINUS_ETA] = 1.0 - eta
        lp[:, AGE_ONE] = age_one(eta, np.dtype(str(pop.dtype).removeprefix("torch.")))
        self.lp = lp
        self.lpt = lp.astype(np.dtype(str(pop.dtype).removeprefix("torch.")))  # lp in the network's dtype (as the engine)
        # the per-task counts (the engine learner's ``counts``, (K, L) each) as views of one (K, 2, L)
        # array that the compiled code adds to: counts_np[k, 0] (cbp units_reset / adapted low), [k, 1]
        self.counts_np = np.zeros((K, 2, L), dtype=np.int64)
        self.counts = {name: self.counts_np[:, i] for i, name in enumerate(self.COUNTS)}
        self._no_factors = np.zeros((2, L), np.dtype(str(pop.dtype).removeprefix("torch.")))

    def after_load(self) -> None:
        """Nothing to rebuild: the kernel counts eligible units from the ages at every step."""

    def freeze(self, pop, k: int) -> None:
        super().freeze(pop, k)
        self.lp[k, ACTIVE] = self.lpt[k, ACTIVE] = 0.0

    def kernel_state(self, k: int) -> tuple:
        """Member k's (lp, lpt, age, f, u, acc_a, acc_b, in_sum, out_sum, factors, counts, bias_corr) for
        ``train_member``."""
        raise NotImplementedError

    def kernel_flags(self, k: int, flags: np.ndarray, hyper: np.ndarray) -> None:
        """Set member k's learner slots of ``flags`` / ``hyper`` (kernel/codes.py)."""
        flags[F_LEARNER] = self.LEARNER_CODE

    def coins_ahead(self, k: int, n: int) -> np.ndarray:
        """Member k's next n coins (U(0, 1)), read ahead; empty when the learner flips none."""
        return _NO_COINS

    def coins_used(self, k: int, n: int) -> None:
        """Consume the first n coins of the last ``coins_ahead``."""

    def draws_ahead(self, k: int) -> tuple:
        """Member k's read-ahead draws for the compiled step: (fresh (rows, n) float32, fresh_row (L,),
        keys (n,) float32, draw_pos (2,)), kernel/draws.py; empty when the learner draws nothing."""
        return _NO_DRAWS

    def sync_draws(self, k: int) -> None:
        """Leave member k's generators where the draws it used leave them (before its state is read)."""

    def warm_up(self, pop) -> None:
        """Load the compiled code the learner calls from Python (nothing by default)."""


_NO_COINS = np.zeros(0)
_NO_DRAWS = (np.zeros((1, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(2, np.int64))
