"""The engine's learner interface (``EngineLearner``) and what its reset learners share:
per-member/per-layer hyperparameters, host-side maturity bookkeeping, per-member generators,
unit selection and per-task counts.

The interface (plasticity_lab/learners.md has the whole story and worked examples):

- ``setup(pop)``: create the state for the population ``pop`` of K members (constructors only
  store hyperparameters);
- ``transform_gradients(pop, grads)``, optional: inside the update, after the backward pass and
  before the optimiser step, with every linear layer's loss gradient ``grads`` = [(gW (K, out, in),
  gb (K, out))] (the gradient of the batch's mean loss, before the optimiser's weight decay), which
  it may change in place (UPGD) or add to (L2 Init). A learner that defines it makes the population
  materialise the gradients (no fused SGD path);
- ``after_step(pop, fwd)``, optional: after the optimiser step, with the forward pass's tensors
  ``fwd`` (engine/population.StepResult), e.g. to reset or rescale units (cbp, adapted, redo, S&P);
- ``freeze(pop, k)``: member k diverged: make it inert;
- ``COUNTS`` / ``take_counts()``: per-task counts per hidden layer (SPEC 4, ``units_reset``);
- ``STATE`` / ``REBUILT``: the attributes checkpointed per member, and those rebuilt from the
  settings (engine/state.py).

Hyperparameters. Every numeric hyperparameter may differ per population member and (where
the SPEC makes it per layer) per hidden layer. A constructor argument is a scalar (every
member, every layer), or a list with one value per MEMBER, each a scalar or a list with
one value per hidden layer. ``setup(pop)`` turns it into a (K, L) array.

Why the host knows when a reset is due (no device sync on the fast path). CBP and the
adapted rescaling replace/rescale ``n = floor(c)`` units with the accumulator
``c += rho * #eligible`` (SPEC 3.4 step 5, 3.5 step 2), and #eligible = #units with
age > m. Ages are deterministic: every unit ages by one per step and only units the
learner itself resets go back to 0. So ``Maturity`` tracks #eligible per member and layer
on the host from the learner's own decisions (a unit reset at step t matures at step
t + m + 1), the accumulators are float64 numbers on the host exactly as in [D]'s code,
and a step without a reset runs only the utility statistics on the device. Which units
are chosen is decided on the device (sort of the masked utilities); nothing is read back.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ...seeding import ALGO, UniformStream, generator
from ..state import PARTS


def per_member_layer(value, K: int, L: int, name: str, dtype=np.float64) -> np.ndarray:
    """(K, L) array from a scalar, or one value per member (each a scalar or one per hidden layer)."""
    if value is None:
        raise ValueError(f"{name}: a value is required")
    if np.isscalar(value) or (isinstance(value, torch.Tensor) and value.dim() == 0):
        return np.full((K, L), float(value), dtype=dtype)
    members = list(value)
    if len(members) != K:
        raise ValueError(f"{name}: expected a scalar or {K} per-member values, got {len(members)}")
    out = np.empty((K, L), dtype=dtype)
    for k, v in enumerate(members):
        if np.isscalar(v):
            out[k] = v
        else:
            v = list(v)
            if len(v) != L:
                raise ValueError(f"{name}: member {k} has {len(v)} per-layer values for {L} hidden layers")
            out[k] = v
    return out


def member_generators(pop, substream: int, device=None) -> list[torch.Generator]:
    """One generator per member from its own seed's ALGO stream (``seeding.generator(seed, ALGO, sub)``)."""
    return [generator(s, ALGO, substream, device=pop.device if device is None else device) for s in pop.seeds]


def member_coins(pop, substream: int) -> list[UniformStream]:
    """Per-member host-side U(0, 1) streams (CPU generators), for coin flips."""
    return [UniformStream(g) for g in member_generators(pop, substream, device="cpu")]


class Maturity:
    """Host-side number of eligible units (age > m) per member and hidden layer.

    A unit whose age was set to 0 at step t has age s - t at step s and becomes eligible
    at step t + m + 1. The initial units count as reset at step 0. Units of an inactive
    (member, layer) never age (SPEC 3.4 step 1: the layer skips the whole algorithm), so
    they never become eligible.
    """

    def __init__(self, widths: list[int], maturity: np.ndarray, active: np.ndarray):
        self.m = maturity.astype(np.int64)
        self.widths = np.broadcast_to(np.asarray(widths, dtype=np.int64), self.m.shape).copy()
        self.immature = self.widths.copy()
        self._due: dict[int, np.ndarray] = defaultdict(lambda: np.zeros_like(self.immature))
        self._distinct = np.unique(self.m)
        self.reset(0, np.where(active, self.widths, 0), count=False)

    def rebuild(self, t: int, ages: list[torch.Tensor], active: np.ndarray) -> None:
        """The schedule after step t from the units' ages (K, H) per layer, e.g. after a resume:
        a unit of age a <= m becomes eligible at step t + m - a + 1."""
        self.immature = self.widths.copy()
        self._due.clear()
        for l, age in enumerate(ages):
            age = age.cpu().numpy().astype(np.int64)
            for k in range(age.shape[0]):
                if not active[k, l]:
                    continue
                young = age[k][age[k] <= self.m[k, l]]
                self.immature[k, l] = len(young)
                for due, count in zip(*np.unique(t + self.m[k, l] - young + 1, return_counts=True)):
                    self._due[int(due)][k, l] += count

    def eligible(self, t: int) -> np.ndarray:
        """(K, L) eligible counts at step t (after this step's age increment)."""
        matured = self._due.pop(t, None)
        if matured is not None:
            self.immature -= matured
        return self.widths - self.immature

    def reset(self, t: int, n: np.ndarray, count: bool = True) -> None:
        """``n`` (K, L) units had their age set to 0 at step t."""
        if count:
            self.immature += n
        for m in self._distinct:
            add = np.where(self.m == m, n, 0)
            if add.any():
                self._due[t + int(m) + 1] += add


def how_many(acc: np.ndarray, rate: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """SPEC 3.4 step 5 / 3.5 step 2, in place on ``acc``: acc += rate * #eligible; n = floor(acc); acc -= n."""
    acc += rate * eligible
    n = np.floor(acc)
    acc -= n
    return n.astype(np.int64)


def coin_counts(rate: np.ndarray, eligible: np.ndarray, active: np.ndarray, coins) -> np.ndarray:
    """``accumulate: false`` (SPEC 3.4 step 5): n = floor(rate * #eligible), or, when that is
    below 1, one unit with probability rate * #eligible (one coin per member and layer, drawn
    only when some unit is eligible, as in [D]'s code)."""
    expected = rate * eligible
    n = np.floor(expected).astype(np.int64)
    K, L = rate.shape
    for k in range(K):
        for l in range(L):
            if active[k, l] and eligible[k, l] > 0 and expected[k, l] < 1:
                n[k, l] = 1 if coins[k].next() <= expected[k, l] else 0
    return n


def lowest_first(keys: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """Unit indices (rows of ``keys`` (M, H)) ordered by ascending key, ineligible units last.

    Ties are broken by the unit index (stable sort), so the engine and the reference pick
    the same units even among exactly equal utilities (e.g. dead ReLU units).
    """
    masked = torch.where(eligible, keys, torch.full_like(keys, float("inf")))
    return torch.sort(masked, dim=-1, stable=True).indices


def chosen_units(order: torch.Tensor, members: np.ndarray, n: np.ndarray, device):
    """Flat (member, unit) index pairs: the first n[k] units of ``order`` (one row per member in ``members``)."""
    counts = n[members]
    rows = np.repeat(np.arange(len(members)), counts)  # row of ``order`` for each chosen unit
    pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0..n[k]-1 within a row
    index = torch.from_numpy(np.stack([members[rows], rows, pos])).to(device)  # one host-to-device copy
    return index[0], order[index[1], index[2]]


class EngineLearner:
    """Interface of an engine learner (module docstring). Constructors store hyperparameters only
    (scikit-learn style); ``setup(pop)`` creates the state for a population of K members."""

    COUNTS: tuple[str, ...] = ()  # per-task count metrics this learner reports (SPEC 4)
    STATE: dict = {}  # per-member state carried by checkpoints {attribute: kind} (engine/state.py)
    # per-task counts: taken (and zeroed) at the end of every task, before any checkpoint
    REBUILT: tuple[str, ...] = ("counts",)

    def setup(self, pop) -> None:
        K, L = pop.K, pop.spec.num_hidden
        self.counts = {name: np.zeros((K, L), dtype=np.int64) for name in self.COUNTS}

    def transform_gradients(self, pop, grads: list) -> None:
        """Change (in place) or add to every linear layer's loss gradient [(gW, gb)] before the
        optimiser's step. Not defined: the learner leaves the update alone (the fused SGD path)."""

    def after_step(self, pop, fwd) -> None:
        """Act after the optimiser step, with the step's forward tensors ``fwd``."""

    @property
    def transforms_gradients(self) -> bool:
        """Whether this learner acts inside the update (it defines ``transform_gradients``)."""
        return type(self).transform_gradients is not EngineLearner.transform_gradients

    def take_counts(self) -> dict:
        """{metric: (K, L) int64 array} since the last call; resets them."""
        out = {name: c.copy() for name, c in self.counts.items()}
        for c in self.counts.values():
            c.fill(0)
        return out

    def freeze(self, pop, k: int) -> None:
        """Member k diverged: make it inert (no more resets)."""


class UtilityLearner(EngineLearner):
    """A learner that keeps per-unit ages and a running utility ``u`` with decay ``eta``
    (cbp, adapted): bias-corrected utilities for the probes, and the host-side maturity
    schedule rebuilt from the ages after a resume. Subclasses set ``age``, ``u``, ``eta``,
    ``layers``, ``active`` and ``maturity`` in ``setup``."""

    STATE = {"age": PARTS}  # the units' ages (K, H) per hidden layer
    # from the settings (per-layer columns, masks), or recomputed every step (the bias correction)
    REBUILT = ("eta", "one_minus_eta", "m", "m_dev", "active", "inactive", "_bc")

    def setup(self, pop) -> None:
        super().setup(pop)
        self._pop = pop

    def _setup_layers(self, pop, active: np.ndarray) -> None:
        """State shared by cbp and adapted once ``active`` (K, L) is known: the layers acted on,
        (K, 1) device columns per layer of eta, 1 - eta and m, masks for layers on which only
        some members act, the units' ages and the host-side maturity schedule."""
        K, L = pop.K, pop.spec.num_hidden
        dev = dict(device=pop.device, dtype=pop.dtype)
        eta = per_member_layer(self.decay_rate, K, L, "decay_rate")
        self.widths = list(pop.spec.sizes[1:-1])
        self.m = per_member_layer(self.maturity_threshold, K, L, "maturity_threshold", np.int64)
        self.active = active
        self.layers = [l for l in range(L) if active[:, l].any()]
        self.eta = [torch.tensor(eta[:, l : l + 1], **dev) for l in range(L)]
        self.one_minus_eta = [torch.tensor(1.0 - eta[:, l : l + 1], **dev) for l in range(L)]
        self.m_dev = [torch.tensor(self.m[:, l : l + 1], device=pop.device) for l in range(L)]
        self.inactive = [None if active[:, l].all() else torch.tensor(~active[:, l : l + 1], device=pop.device)
                         for l in range(L)]
        self.age = [torch.zeros(K, H, **dev) for H in self.widths]
        self.maturity = Maturity(self.widths, self.m, active)

    def after_load(self) -> None:
        """After a resume: the host-side maturity schedule, rebuilt from the restored ages."""
        self.maturity.rebuild(self._pop.t, self.age, self.active)

    def utility(self, l: int) -> torch.Tensor:
        """Bias-corrected utility u_hat = u / (1 - eta^age) (K, H) of hidden layer l (0 where age is 0)."""
        bc = 1.0 - torch.pow(self.eta[l], self.age[l])
        return torch.where(self.age[l] > 0, self.u[l] / bc, torch.zeros_like(bc))

    def utility_stats(self) -> dict:
        """{hidden layer (1-based): u_hat (K, H)} of the layers it acts on, NaN for units of age 0
        (the probes' interface, probes/runner.py)."""
        return {l + 1: torch.where(self.age[l] > 0, self.utility(l), float("nan")) for l in self.layers}
