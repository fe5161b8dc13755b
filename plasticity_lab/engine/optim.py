"""Optimisers of the population engine (SPEC 3.8), per member: SGD (fused), SGD + momentum, Adam.

Plain SGD stays folded into the backward pass (``FusedSGD``, see population.py): the
output delta is pre-scaled by each member's step size and every layer is updated by one
in-place rank-B update, no gradient is ever materialised. That is the fast path and it is
used whenever the optimiser is SGD and every member's momentum is 0.

Momentum and Adam need the gradient itself: the engine's other backward path
materialises ``dL/dW`` (K, out, in) and ``dL/db`` (K, out) per layer and hands them to
``update(layer, gW, gb)``. Semantics follow torch.optim exactly (tests compare them):

- ``MomentumSGD`` = torch.optim.SGD(momentum=mu, dampening=0, nesterov=False,
  weight_decay=lambda): g += lambda p; buf = mu buf + g (buf = g on the first step, which
  is the same as starting from buf = 0); p -= alpha buf.
- ``Adam`` = torch.optim.Adam(betas, eps, weight_decay=lambda) (coupled decay, no amsgrad):
  g += lambda p; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
  p -= alpha / (1 - b1^s) * m / (sqrt(v) / sqrt(1 - b2^s) + eps).
  torch.optim.Adam keeps ONE step count s per parameter tensor; here s is per ELEMENT as
  soon as a reset learner has zeroed some units' state (SPEC 3.4 step 8, [D]'s AdamGnT),
  kept as per-row and per-column reset steps (see ``Adam``).

A learner that transforms gradients (engine/learners/base.py, ``transform_gradients``) needs
them materialised too: plain SGD then takes the same path as ``SGD`` (g += lambda p; p -= alpha g).

Every hyperparameter (step size, weight decay, momentum, betas, eps) is per member.
``reset_units(layer, kk, uu)`` zeroes the optimiser state of units ``uu`` of members
``kk`` in hidden layer ``layer``: their input rows and biases and their outgoing columns in
the next layer (momentum buffers too: SPEC 3.4 asks for Adam's moments; SGD's momentum
buffer is the same kind of state, so a fresh unit starts without its predecessor's velocity).

The optimisers' settings (the ``optimizer`` config group, conf/optimizer/*.yaml) are declared
here, once: ``OPTIMIZERS``; every backend builds its optimiser from them (this module's
``make_optimizer``, reference/optim.py, kernel/optim.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..schema import DECAY, PER_MEMBER, finite, one_of, positive, setting
from .state import PARTS


def _betas(v):
    ok = (isinstance(v, (list, tuple)) and len(v) == 2
          and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v))
    return None if ok else "must be a pair [beta1, beta2] with 0 <= beta < 1"


@dataclass(frozen=True)
class SGDSettings:
    """SGD (SPEC 1, 3.8): ``step_size`` is the papers' alpha; ``momentum`` as torch.optim.SGD
    (dampening 0, no Nesterov); 0 = plain SGD (the engine's fused fast path)."""

    name: str = setting("sgd", one_of("sgd"))
    step_size: float = setting(0.003, finite(positive), role=PER_MEMBER, label="Step size α")
    momentum: float = setting(0.0, finite(DECAY), role=PER_MEMBER, label="Momentum")
    on_kernel: ClassVar[bool] = True  # the compiled kernel runs it (kernel/support.py)


@dataclass(frozen=True)
class AdamSettings:
    """Adam (SPEC 3.8) with torch.optim.Adam's semantics (bias correction, coupled weight decay);
    per-element step counts once a reset learner restarts units (SPEC 3.4 step 8)."""

    name: str = setting("adam", one_of("adam"))
    step_size: float = setting(1e-4, finite(positive), role=PER_MEMBER, label="Step size α")
    betas: Any = setting((0.9, 0.999), _betas, role=PER_MEMBER, label="Adam β1, β2")
    eps: float = setting(1e-8, finite(positive), role=PER_MEMBER, label="Adam ε")
    on_kernel: ClassVar[bool] = False


OPTIMIZERS: dict[str, type] = {"sgd": SGDSettings, "adam": AdamSettings}


def _per_member(pop, value, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.expand(pop.K).clone()
    if t.numel() != pop.K:
        raise ValueError(f"{name}: expected 1 or {pop.K} per-member values, got {t.numel()}")
    return t.to(pop.device, pop.dtype)


class FusedSGD:
    """Plain SGD, folded into the engine's backward pass (no state, nothing to reset)."""

    fused = True
    STATE: dict = {}

    def __init__(self, pop):
        self.pop = pop

    def reset_units(self, layer: int, kk: torch.Tensor, uu: torch.Tensor) -> None:
        pass

    def freeze(self, k: int) -> None:
        pass


class _MaterialisedOptimizer:
    fused = False
    STATE: dict = {}

    def __init__(self, pop):
        self.pop = pop

    def reset_units(self, layer: int, kk: torch.Tensor, uu: torch.Tensor) -> None:
        pass

    def freeze(self, k: int) -> None:
        pass

    def _decayed(self, l: int, gW: torch.Tensor, gb: torch.Tensor):
        """Coupled weight decay: g += lambda p (torch.optim's ``weight_decay``)."""
        pop = self.pop
        if pop._has_decay:
            gW.addcmul_(pop.W[l], pop.weight_decay.view(-1, 1, 1))
            gb.addcmul_(pop.b[l], pop.weight_decay.view(-1, 1))
        return gW, gb


class SGD(_MaterialisedOptimizer):
    """Plain SGD on materialised gradients (torch.optim.SGD without momentum): for learners that
    transform the gradients. No state."""

    def update(self, l: int, gW: torch.Tensor, gb: torch.Tensor) -> None:
        pop = self.pop
        gW, gb = self._decayed(l, gW, gb)
        pop.W[l].addcmul_(gW, pop.step_size.view(-1, 1, 1), value=-1.0)
        pop.b[l].addcmul_(gb, pop.step_size.view(-1, 1), value=-1.0)


class MomentumSGD(_MaterialisedOptimizer):
    """torch.optim.SGD with momentum (dampening 0, no Nesterov), per-member step size and momentum."""

    STATE = {"buf_W": PARTS, "buf_b": PARTS}  # checkpointed per member (engine/state.py)
    REBUILT = ("momentum",)  # from the settings

    def __init__(self, pop, momentum):
        super().__init__(pop)
        self.momentum = _per_member(pop, momentum, "momentum")
        self.buf_W = [torch.zeros_like(W) for W in pop.W]
        self.buf_b = [torch.zeros_like(b) for b in pop.b]

    def update(self, l: int, gW: torch.Tensor, gb: torch.Tensor) -> None:
        """One step; gW, gb (the gradient buffers) may be overwritten."""
        pop = self.pop
        gW, gb = self._decayed(l, gW, gb)
        mu = self.momentum
        self.buf_W[l].mul_(mu.view(-1, 1, 1)).add_(gW)
        self.buf_b[l].mul_(mu.view(-1, 1)).add_(gb)
        pop.W[l].addcmul_(self.buf_W[l], pop.step_size.view(-1, 1, 1), value=-1.0)
        pop.b[l].addcmul_(self.buf_b[l], pop.step_size.view(-1, 1), value=-1.0)

    def reset_units(self, layer: int, kk: torch.Tensor, uu: torch.Tensor) -> None:
        self.buf_W[layer][kk, uu] = 0.0
        self.buf_b[layer][kk, uu] = 0.0
        self.buf_W[layer + 1][kk, :, uu] = 0.0

    def freeze(self, k: int) -> None:
        for buf in (*self.buf_W, *self.buf_b):
            buf[k].zero_()


class Adam(_MaterialisedOptimizer):
    """torch.optim.Adam semantics per member, with per-element step counts after unit resets.

    Per-element step counts without a per-element counter: every reset restarts whole rows
    (a unit's input weights and bias) or whole columns (its outgoing weights), so element
    (i, j) has taken s = t - max(R_i, C_j) steps, with R_i / C_j the step at which row i /
    column j was last reset (0 = never). The bias-correction factors are monotone in s, so
    the per-element factor is the max (step size alpha / (1 - b1^s)) or min
    (sqrt(1 - b2^s)) of a per-row (K, out, 1) and a per-column (K, 1, in) factor: exactly the
    values a per-element counter gives (as reference/optim.py's ReadableAdam keeps), at the
    cost of one elementwise max/min only where both rows and columns were reset (the
    first layer's columns are inputs and the output layer's rows are outputs, so their
    factors just broadcast). Bias corrections are computed in float64, like torch.optim.Adam's
    Python floats (1 - b2^s cancels badly in float32 for small s).
    """

    # checkpointed per member (engine/state.py): moments [weights, biases][layer], the step at which
    # each row (per [weights, biases][layer]) and column (per layer) was last reset (None: never)
    STATE = {"m": PARTS, "v": PARTS, "row_reset": PARTS, "col_reset": PARTS}
    REBUILT = ("beta1_64", "beta2_64", "beta2", "one_minus_beta1", "one_minus_beta2", "eps")  # from the settings

    def __init__(self, pop, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(pop)
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.shape == (2,):
            betas = betas.expand(pop.K, 2)
        if betas.shape != (pop.K, 2):
            raise ValueError(f"betas: expected one pair or {pop.K} pairs, got shape {tuple(betas.shape)}")
        self.beta1_64 = betas[:, 0].to(pop.device)
        self.beta2_64 = betas[:, 1].to(pop.device)
        self.beta2 = betas[:, 1].to(pop.device, pop.dtype)
        self.one_minus_beta1 = (1.0 - betas[:, 0]).to(pop.device, pop.dtype)  # 1 - b in float64 first, as torch
        self.one_minus_beta2 = (1.0 - betas[:, 1]).to(pop.device, pop.dtype)
        self.eps = _per_member(pop, eps, "eps")
        params = (pop.W, pop.b)  # which = 0: weights, 1: biases
        self.m = [[torch.zeros_like(p) for p in ps] for ps in params]
        self.v = [[torch.zeros_like(p) for p in ps] for ps in params]
        # step at which each row / column was last reset (None until the first reset)
        self.row_reset: list[list[torch.Tensor | None]] = [[None] * len(pop.W), [None] * len(pop.b)]
        self.col_reset: list[torch.Tensor | None] = [None] * len(pop.W)

    def update(self, l: int, gW: torch.Tensor, gb: torch.Tensor) -> None:
        gW, gb = self._decayed(l, gW, gb)
        self._update(0, l, self.pop.W[l], gW)
        self._update(1, l, self.pop.b[l], gb)

    def _update(self, which: int, l: int, p: torch.Tensor, g: torch.Tensor) -> None:
        """One Adam step of parameter p; ``g`` (its gradient) is used as scratch space."""
        shape = (-1,) + (1,) * (p.dim() - 1)
        m, v = self.m[which][l], self.v[which][l]
        m.lerp_(g, self.one_minus_beta1.view(shape))
        g2 = torch.mul(g, g, out=g)
        v.mul_(self.beta2.view(shape)).addcmul_(g2, self.one_minus_beta2.view(shape))
        step_size, bc2_sqrt = self._bias_corrections(which, l, p)
        denom = torch.sqrt(v, out=g).div_(bc2_sqrt).add_(self.eps.view(shape))
        p.addcmul_(torch.div(m, denom, out=g), step_size, value=-1.0)

    def _factors(self, steps: torch.Tensor, shape):
        """(alpha / (1 - b1^s), sqrt(1 - b2^s)) in float64, cast to the parameters' dtype."""
        s = steps.to(torch.float64)
        member = (-1,) + (1,) * (s.dim() - 1)  # per-member values against (K,), (K, rows) or (K, cols) counts
        b1, b2 = self.beta1_64.view(member), self.beta2_64.view(member)
        lr = self.pop.step_size.to(torch.float64).view(member)
        step_size = lr / (1.0 - torch.pow(b1, s))
        bc2_sqrt = (1.0 - torch.pow(b2, s)).sqrt()
        return step_size.to(self.pop.dtype).view(shape), bc2_sqrt.to(self.pop.dtype).view(shape)

    def _bias_corrections(self, which: int, l: int, p: torch.Tensor):
        t = self.pop.t
        rows = self.row_reset[which][l]
        cols = self.col_reset[l] if which == 0 else None
        if rows is None and cols is None:  # every element has taken t steps
            return self._factors(torch.full((self.pop.K,), t, device=p.device), (-1,) + (1,) * (p.dim() - 1))
        factors = []
        if rows is not None:
            factors.append(self._factors(t - rows, (-1, rows.shape[1]) + (1,) * (p.dim() - 2)))
        if cols is not None:
            factors.append(self._factors(t - cols, (-1, 1, cols.shape[1])))
        if len(factors) == 1:
            return factors[0]
        (ss_r, bc_r), (ss_c, bc_c) = factors
        return torch.maximum(ss_r, ss_c), torch.minimum(bc_r, bc_c)

    def reset_units(self, layer: int, kk: torch.Tensor, uu: torch.Tensor) -> None:
        """Zero moments and step counts of the units' input rows, biases and outgoing columns."""
        t, K, dev = self.pop.t, self.pop.K, self.pop.device
        for which in (0, 1):
            self.m[which][layer][kk, uu] = 0.0
            self.v[which][layer][kk, uu] = 0.0
            if self.row_reset[which][layer] is None:
                self.row_reset[which][layer] = torch.zeros(K, self.pop.spec.sizes[layer + 1], dtype=torch.long,
                                                           device=dev)
            self.row_reset[which][layer][kk, uu] = t
        self.m[0][layer + 1][kk, :, uu] = 0.0
        self.v[0][layer + 1][kk, :, uu] = 0.0
        if self.col_reset[layer + 1] is None:
            self.col_reset[layer + 1] = torch.zeros(K, self.pop.spec.sizes[layer + 1], dtype=torch.long, device=dev)
        self.col_reset[layer + 1][kk, uu] = t

    def freeze(self, k: int) -> None:
        for states in (self.m, self.v):
            for group in states:
                for s in group:
                    s[k].zero_()


def make_optimizer(pop, settings: list, needs_gradients: bool = False):
    """The engine optimiser for K members' optimiser settings (all of one kind, ``OPTIMIZERS``):
    SGD without momentum is the fused path unless the learner needs the gradients materialised."""
    name = settings[0].name
    if name == "sgd":
        mu = _per_member(pop, [s.momentum for s in settings], "momentum")
        if bool((mu == 0).all()):
            return SGD(pop) if needs_gradients else FusedSGD(pop)
        return MomentumSGD(pop, mu)
    if name == "adam":
        return Adam(pop, [tuple(s.betas) for s in settings], [s.eps for s in settings])
    raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
