"""Continual Backpropagation (SPEC 3.4) on the population engine.

Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood & Sutton, "Loss of plasticity in deep
continual learning", Nature 632 (2024) [D] (their GnT / ContinualBackprop); per-layer
replacement rates as in Jucas, "Layerwise Perspective into Continual Backpropagation",
TU Delft 2025 [J]; the high-utility pass and the re-initialisation without activation gain
of Purice, TU Delft BSc thesis 2025 [P] (SPEC 5, "Preset fidelity").

Per hidden layer l and step, for every member at once ((K, H) tensors):

1. age += 1 (the layer is skipped entirely where its rate is 0);
2. f <- eta f + (1 - eta) mean_batch(h);  f_hat = f / (1 - eta^age);
3. instantaneous utility x (``util_type``), u <- eta u + (1 - eta) x;  u_hat = u / (1 - eta^age);
4. eligible: age > m;
5. n = floor(c) with c += rho * #eligible (host side, see base.py), or the coin rule;
6. the n eligible units with the smallest u_hat (ties: lowest index) get fresh input
   weights (``network.init_weight``, from the member's own ALGO/REINIT generator): from the
   layer's init distribution (``reinit: init``), or uniform in [-sqrt(3 / fan_in), +] without
   the activation gain (``reinit: no_gain``, [P]); bias 0, outgoing weights 0, age = u = f = 0;
7. ``bias_correction``: before zeroing, the next layer's bias gets sum_i W_next[:, i] f_hat_i;
8. the optimiser zeroes the units' state (Adam moments and per-element step counts).

As in [D]'s code, all layers' statistics and choices are made first, then the units are
replaced layer by layer (a replaced unit's outgoing column is zeroed before the next
layer's replaced rows are redrawn, so an entry in both gets a fresh init value).

High-utility pass ([P]'s two-pass CBP; ``high_replacement_rate`` rho_high > 0): after the
low-utility pass has replaced its units in every layer, a second pass with its own accumulator,
c_high += rho_high * #eligible, replaces the n_high eligible units with the LARGEST u_hat the same
way (steps 6-8). Eligible: age > m after the low pass, so the units it just replaced (age 0) are
not; the utilities are this step's (not recomputed), as in [P]'s code. A layer is skipped only
when both its rates are 0; a pass with rate 0 on a layer draws no coin; with the random utility
each pass that replaces units in a layer draws its own U(0, 1) keys.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...learners import Learner, LearnerSettings
from ...network import init_weight
from ...schema import (DECAY, PER_LAYER, PER_MEMBER, PRESET, UNIT_INTERVAL, ConfigError, finite, non_negative,
                       one_of, setting)
from ...seeding import COIN, REINIT, UTIL
from ..state import MEMBERS, PARTS
from .base import (UtilityLearner, chosen_units, coin_counts, how_many, lowest_first, member_coins,
                   member_generators, per_member_layer)

UTIL_TYPES = ("contribution", "adaptable_contribution", "zero_contribution", "weight", "adaptation",
              "feature_by_input", "random")
# reinit -> network.init_weight's gain: the layer's own (SPEC 1), or none ([P]'s CBP code, SPEC 5)
CBP_REINIT_GAIN = {"init": None, "no_gain": 1.0}
_RANGE = re.compile(r"(\d+|last)\.\.(\d+|last)")


def _layers_rule(v):
    """``layers``: all | none | last | an int | a list of 1-based indices, 'last' or ranges 'a..b'."""
    if v in ("all", "none", "last") or (isinstance(v, int) and not isinstance(v, bool)):
        return None
    if isinstance(v, (list, tuple)):
        for item in v:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                return f"invalid entry {item!r}"
            if isinstance(item, str) and item != "last" and not _RANGE.fullmatch(item):
                return f"invalid entry {item!r} (use a 1-based index, 'last' or a range like '2..last')"
        return None
    return "must be all, none, last, or a list of 1-based hidden-layer indices / 'last' / ranges like '2..last'"


def layers_mask(rule, depth: int, key: str = "learner.layers") -> tuple[bool, ...]:
    """Which hidden layers (0-based mask of length ``depth``) a per-layer preset rule selects [J]."""
    if rule == "all":
        return (True,) * depth
    if rule == "none":
        return (False,) * depth
    items = [rule] if not isinstance(rule, (list, tuple)) else list(rule)
    chosen = set()

    def index(x):
        i = depth if x == "last" else int(x)
        if not 1 <= i <= depth:
            raise ConfigError(f"{key}={rule!r}: hidden layer {i} does not exist (network.depth={depth}; layers are 1..{depth})")
        return i

    for item in items:
        match = _RANGE.fullmatch(item) if isinstance(item, str) else None
        if match:
            lo, hi = index(match.group(1)), index(match.group(2))
            chosen.update(range(lo, hi + 1))
        else:
            chosen.add(index(item))
    return tuple(l + 1 in chosen for l in range(depth))


@dataclass(frozen=True)
class CBPSettings(LearnerSettings):
    """Continual Backpropagation (SPEC 3.4) [D]; per-layer rates and presets [J]; [P]'s second,
    high-utility pass (``high_replacement_rate``) and its re-initialisation without the activation
    gain (``reinit: no_gain``) (SPEC 5, "Preset fidelity"). conf/learner/cbp.yaml documents each."""

    name: str = "cbp"
    replacement_rate: Any = setting(1e-4, UNIT_INTERVAL, role=PER_LAYER, label="Replacement rate ρ (per step)")
    high_replacement_rate: Any = setting(0.0, UNIT_INTERVAL, role=PER_LAYER,
                                         label="High-utility replacement rate ρ_high (per step)")
    decay_rate: Any = setting(0.99, DECAY, role=PER_LAYER, label="Utility decay η")
    maturity_threshold: Any = setting(100, non_negative, role=PER_LAYER, integer=True,
                                      label="Maturity threshold m (steps)")
    util_type: str = setting("adaptable_contribution", one_of(*UTIL_TYPES))
    reinit: str = setting("init", one_of(*CBP_REINIT_GAIN))
    accumulate: bool = setting(True)
    bias_correction: bool = setting(False)
    layers: Any = setting("all", _layers_rule, role=PRESET)  # which hidden layers CBP acts on (cbp_layers presets)
    weight_decay: float = setting(0.0, finite(non_negative), role=PER_MEMBER, label="Weight decay λ")

    def resolve(self, network):
        """Per-layer values, and rates 0 (both passes) on the hidden layers ``layers`` leaves out."""
        mask = layers_mask(self.layers, network.depth)
        resolved = super().resolve(network)
        rates = {key: tuple(r if on else 0.0 for r, on in zip(getattr(resolved, key), mask))
                 for key in ("replacement_rate", "high_replacement_rate")}
        return dataclasses.replace(resolved, **rates)


class ContinualBackprop(UtilityLearner):
    """CBP for K members; every numeric hyperparameter per member and hidden layer.

    replacement_rate (rho): fraction of eligible units replaced per step, [0, 1]; [D] 1e-4
        (grid 1e-4 ... 1e-6), [P] grid 1e-2 ... 1e-7, [J] 1e-4 (tanh 1e-6). 0 switches a layer off.
    high_replacement_rate (rho_high): the same for the high-utility pass, [0, 1]; 0 (off) by default,
        [P]'s twisted-network CBP 1e-5.
    decay_rate (eta): utility / mean-activation decay, [0, 1); 0.99.
    maturity_threshold (m): units are eligible when age > m; 100.
    util_type: one of UTIL_TYPES; adaptable_contribution [D] (contribution in [P]'s and [J]'s runs).
    reinit: 'init' (the layer's init distribution) or 'no_gain' (bound sqrt(3 / fan_in), [P]).
    accumulate: fractional replacements accumulate (True) or the coin rule (False).
    bias_correction: correct the next layer's bias by the removed unit's mean contribution.
    """

    COUNTS = ("units_reset",)

    def __init__(self, replacement_rate=1e-4, decay_rate=0.99, maturity_threshold=100,
                 util_type="adaptable_contribution", accumulate=True, bias_correction=False,
                 high_replacement_rate=0.0, reinit="init"):
        if util_type not in UTIL_TYPES:
            raise ValueError(f"util_type={util_type!r}; known: {list(UTIL_TYPES)}")
        if reinit not in CBP_REINIT_GAIN:
            raise ValueError(f"reinit={reinit!r}; known: {list(CBP_REINIT_GAIN)}")
        self.replacement_rate = replacement_rate
        self.high_replacement_rate = high_replacement_rate
        self.reinit = reinit
        self.decay_rate = decay_rate
        self.maturity_threshold = maturity_threshold
        self.util_type = util_type
        self.accumulate = accumulate
        self.bias_correction = bias_correction

    # ------------------------------------------------------------------ state
    STATE = {  # checkpointed per member (engine/state.py), besides the ages
        "f": PARTS, "u": PARTS,  # running mean activation and utility, (K, H) per hidden layer
        "acc": MEMBERS, "acc_high": MEMBERS,  # fractional replacements carried over (K, L), low and high pass
        "reinit_gen": MEMBERS, "util_gen": MEMBERS, "coins": MEMBERS,  # the members' ALGO generators
    }
    REBUILT = ("rho", "rho_high", "_abs_buf")  # from the settings; scratch

    def setup(self, pop) -> None:
        super().setup(pop)
        K, L = pop.K, pop.spec.num_hidden
        self.rho = per_member_layer(self.replacement_rate, K, L, "replacement_rate")
        self.rho_high = per_member_layer(self.high_replacement_rate, K, L, "high_replacement_rate")
        self._setup_layers(pop, (self.rho > 0) | (self.rho_high > 0))
        dev = dict(device=pop.device, dtype=pop.dtype)
        self.f = [torch.zeros(K, H, **dev) for H in self.widths]  # running mean activation
        self.u = [torch.zeros(K, H, **dev) for H in self.widths]  # running utility
        self.acc = np.zeros((K, L))  # fractional replacements carried over, low-utility pass
        self.acc_high = np.zeros((K, L))  # ... and high-utility pass
        self.reinit_gen = member_generators(pop, REINIT)
        self.util_gen = member_generators(pop, UTIL) if self.util_type == "random" else None
        self.coins = member_coins(pop, COIN) if not self.accumulate else None
        self._bc = [None] * L
        self._abs_buf = [None] * (L + 1)

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def after_step(self, pop, fwd) -> None:
        t = pop.t
        eligible = self.maturity.eligible(t)
        n = self._how_many(self.acc, self.rho, eligible)
        for l in self.layers:  # SPEC 3.4 steps 1-3, every active layer
            self._statistics(pop, l, fwd.inputs[l + 1])
        n_high = self._how_many(self.acc_high, self.rho_high, eligible - n) if self.rho_high.any() else None
        if not n.any() and (n_high is None or not n_high.any()):
            return
        for passed, lowest in ((n, True), (n_high, False)):  # the low-utility pass, then the high-utility pass
            if passed is None:
                continue
            for l in self.layers:  # steps 4-8, layer by layer
                if passed[:, l].any():
                    self._replace(pop, l, passed[:, l], lowest)
        n = n if n_high is None else n + n_high
        self.maturity.reset(t, n)
        self.counts["units_reset"] += n

    def _how_many(self, acc: np.ndarray, rate: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """Step 5 for one pass: accumulated (``acc`` in place) or by the coin rule (no coin where the rate is 0)."""
        if self.accumulate:
            return how_many(acc, rate, eligible)
        return coin_counts(rate, eligible, rate > 0, self.coins)

    def _statistics(self, pop, l: int, h: torch.Tensor) -> None:
        """Steps 1-3 for hidden layer l: ages, running mean activation f, running utility u.

        Written for few tensor operations per step (each costs microseconds at batch 1):
        running averages as ``lerp_`` (eta a + (1 - eta) b = a + (1 - eta)(b - a)), batch
        means skipped for batches of one, the 1/n of the weight means folded into one factor.
        """
        eta, ome, age, f, u = self.eta[l], self.one_minus_eta[l], self.age[l], self.f[l], self.u[l]
        inactive = self.inactive[l]
        if inactive is None:
            age.add_(1.0)
        else:
            age.add_((~inactive).to(age.dtype))
        single = h.shape[1] == 1
        f.lerp_(h.squeeze(1) if single else h.mean(dim=1), ome)
        bc = self._bc[l] = torch.pow(eta, age).neg_().add_(1.0)  # bias correction 1 - eta^age
        kind = self.util_type
        if kind != "random":
            W_next, W_in = pop.W[l + 1], pop.W[l]
            if kind in ("contribution", "adaptable_contribution", "zero_contribution", "weight"):
                out_sum = self._abs_sum(W_next, dim=1, slot=l + 1)  # n_next * mean_k |W_next[k, i]|
            if kind in ("adaptable_contribution", "adaptation", "feature_by_input"):
                in_sum = self._abs_sum(W_in, dim=2, slot=l)  # n_in * mean_j |W_in[i, j]|
            if kind in ("adaptable_contribution", "zero_contribution", "feature_by_input"):
                deviation = (h - (f / bc).unsqueeze(1)).abs_()  # |h_i - f_hat_i|
                deviation = deviation.squeeze(1) if single else deviation.mean(dim=1)
            n_next, n_in = W_next.shape[1], W_in.shape[2]
            if kind == "contribution":
                act = h.squeeze(1).abs() if single else h.abs().mean(dim=1)
                x, scale = out_sum.mul_(act), 1.0 / n_next
            elif kind == "adaptable_contribution":
                x, scale = out_sum.mul_(deviation).div_(in_sum), n_in / n_next
            elif kind == "zero_contribution":
                x, scale = out_sum.mul_(deviation), 1.0 / n_next
            elif kind == "weight":
                x, scale = out_sum, 1.0 / n_next
            elif kind == "adaptation":
                x, scale = in_sum.reciprocal_(), float(n_in)
            else:  # feature_by_input
                x, scale = deviation.div_(in_sum), float(n_in)
            u.lerp_(x.mul_(scale), ome)
        if inactive is not None:  # members whose rate is 0 here keep zero statistics (skipped, step 1)
            f.masked_fill_(inactive, 0.0)
            u.masked_fill_(inactive, 0.0)

    def _abs_sum(self, W: torch.Tensor, dim: int, slot: int) -> torch.Tensor:
        """sum |W| along ``dim``, through a reused buffer (abs into it, then sum: two passes over
        W; torch.linalg.vector_norm(ord=1) and a fresh abs() temporary are several times slower)."""
        buf = self._abs_buf[slot]
        if buf is None or buf.shape != W.shape:
            buf = self._abs_buf[slot] = torch.empty_like(W)
        return torch.abs(W, out=buf).sum(dim=dim)

    def _replace(self, pop, l: int, n: np.ndarray, lowest: bool = True) -> None:
        """Steps 4-8 for hidden layer l: replace n[k] units of each member k (n[k] may be 0), those
        with the lowest utility (``lowest``) or, in the high-utility pass, the highest."""
        members = np.flatnonzero(n)
        sel = torch.as_tensor(members, device=pop.device)
        if self.util_type == "random":  # a fresh U(0, 1) utility, drawn when it is used (SPEC 3.4 step 3)
            keys = torch.stack([torch.rand(self.widths[l], generator=self.util_gen[k], device=pop.device)
                                for k in members]).to(pop.dtype)  # float32 draws whatever the dtype
        else:
            keys = self.u[l][sel] / self._bc[l][sel]
        if not lowest:
            keys = -keys  # the highest utility first
        eligible = self.age[l][sel] > self.m_dev[l][sel]
        kk, uu = chosen_units(lowest_first(keys, eligible), members, n, pop.device)
        gain = CBP_REINIT_GAIN[self.reinit]
        fresh = torch.cat([init_weight(pop.spec, l, self.reinit_gen[k], int(n[k]), gain) for k in members])
        pop.W[l][kk, uu] = fresh.to(pop.dtype)
        pop.b[l][kk, uu] = 0.0
        if self.bias_correction:
            f_hat = self.f[l][kk, uu] / self._bc[l][kk, uu]
            pop.b[l + 1].index_add_(0, kk, pop.W[l + 1][kk, :, uu] * f_hat.unsqueeze(1))
        pop.W[l + 1][kk, :, uu] = 0.0
        for state in (self.age[l], self.u[l], self.f[l]):
            state[kk, uu] = 0.0
        pop.optimizer.reset_units(l, kk, uu)

    def freeze(self, pop, k: int) -> None:
        self.rho[k] = 0.0
        self.rho_high[k] = 0.0
        self.active[k] = False
        for state in (*self.age, *self.u, *self.f):
            state[k].zero_()


LEARNER = Learner(CBPSettings, label="Continual Backprop", order=3, engine=ContinualBackprop,
                  reference="ContinualBackprop", kernel="KernelContinualBackprop")
