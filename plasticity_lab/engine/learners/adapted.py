"""Activation-adapted low/high utility rescaling (SPEC 3.5) on the population engine.

V. Purice, "Maintaining Plasticity for Deep Continual Learning: Activation Function-Adapted
Parameter Resetting Approaches", TU Delft BSc thesis, 2025 [P].

Per hidden layer l and step, for every member at once, with ``schedule='per_step'`` (the
published code, SPEC 3.5; the default):

1. age += 1; u <- eta u + (1 - eta) mean_batch(a), a the SIGNED post-activation;
   u_hat = u / (1 - eta^age);
2. low pass: c_low_acc += rho_low[l] * #eligible (age > m); n = floor; the n eligible units
   with the LOWEST u_hat have their input row AND bias multiplied by c_low[l]; age = u = 0;
3. high pass: the same with rho_high[l], c_high[l] and the HIGHEST u_hat among the units
   still eligible (the low pass's units have age 0);
4. outgoing weights and optimiser state are not touched;
5. ``clip`` (per member; None/inf disables): clamp every hidden layer's weights and biases to
   [-clip, clip] after the passes, every step (SPEC 3.5 step 5; the published code clamps
   every hidden layer in every pass).

With ``schedule='per_pass'`` ([P]'s "modified cfg" code, SPEC 5 "Preset fidelity"), each pass
(low, then high) on a layer where its rate is > 0 first does step 1 again (so with both rates
> 0 a unit ages by 2 per step and the utility decays as eta^2 per step), then chooses and
rescales as in step 2 / 3 (eligible: age > m at that moment), then clamps the weights of a layer
in which it rescaled a unit to [-5, 5] and its biases to [-10, 10] (``config.PER_PASS_CLIP``;
``clip`` None switches this off).

A layer whose rho_low and rho_high are both 0 (for a member) is skipped like a CBP layer
with rate 0: its ages and utilities stay 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from ...activations import ACTIVATIONS
from ...learners import Learner, LearnerSettings
from ...schema import (DECAY, PER_LAYER, PER_MEMBER, PRESET, UNIT_INTERVAL, ConfigError, finite, non_negative,
                       one_of, positive, setting)
from ..state import PARTS
from .base import Maturity, UtilityLearner, chosen_units, how_many, lowest_first, per_member_layer

SIDES = ("low", "high")
# [P]'s strategies (SPEC 3.5): per hidden layer c_low, c_high, rho_low, rho_high
ADAPTED_STRATEGIES = {
    "relu": dict(c_low=-0.5, c_high=0.5, rho_low=1e-4, rho_high=1e-5),
    "tanh": dict(c_low=0.5, c_high=0.2, rho_low=1e-5, rho_high=1e-6),
    "none": dict(c_low=1.0, c_high=1.0, rho_low=0.0, rho_high=0.0),
}
OPPOSITE_FAMILY = {"relu": "tanh", "tanh": "relu"}
ADAPTED_SCHEDULES = ("per_step", "per_pass")
# schedule per_pass ([P]'s "modified cfg" code, SPEC 5): after each pass, a layer in which a unit was
# rescaled has its weights clamped to [-5, 5] and its biases to [-10, 10]
PER_PASS_CLIP = {"weights": 5.0, "biases": 10.0}


def strategy_per_layer(strategy: str, activations) -> list[str]:
    """The fixed strategy of each hidden layer: matched = the layer's activation family
    (activations.py: relu-family -> relu, tanh/sigmoid-family -> tanh), opposite = the other one."""
    families = [ACTIVATIONS[a].family for a in activations]
    if strategy == "matched":
        return families
    if strategy == "opposite":
        return [OPPOSITE_FAMILY[f] for f in families]
    return [strategy] * len(families)


@dataclass(frozen=True)
class AdaptedSettings(LearnerSettings):
    """Activation-adapted low/high utility rescaling (SPEC 3.5) [P]. c_low, c_high, rho_low,
    rho_high: null = from ``reset_strategy``; a number or a per-layer list (null entries =
    from the strategy) overrides it.

    ``schedule``: ``per_step`` (the published code, SPEC 3.5): one age / utility update per
    step, then the two passes, then every hidden layer clamped to [-clip, clip]; ``per_pass``
    ([P]'s "modified cfg" code, SPEC 5): each pass (low, then high) ages the units and updates
    the utility again before choosing, and a layer in which it rescaled a unit is clamped to
    ``PER_PASS_CLIP`` (weights 5, biases 10); there ``clip`` is on (10, the default) or off (null).
    """

    name: str = "adapted"
    reset_strategy: str = setting("matched", one_of("relu", "tanh", "matched", "opposite", "none"), role=PRESET,
                                  label="Reset strategy")
    c_low: Any = setting(None, role=PER_LAYER, allow_null=True, label="c_low")
    c_high: Any = setting(None, role=PER_LAYER, allow_null=True, label="c_high")
    rho_low: Any = setting(None, UNIT_INTERVAL, role=PER_LAYER, allow_null=True, label="ρ_low (per step)")
    rho_high: Any = setting(None, UNIT_INTERVAL, role=PER_LAYER, allow_null=True, label="ρ_high (per step)")
    decay_rate: Any = setting(0.99, DECAY, role=PER_LAYER, label="Utility decay η")
    maturity_threshold: Any = setting(100, non_negative, role=PER_LAYER, integer=True,
                                      label="Maturity threshold m (steps)")
    schedule: str = setting("per_step", one_of(*ADAPTED_SCHEDULES))
    clip: Union[float, None] = setting(10.0, finite(positive), role=PER_MEMBER, label="Clip bound")
    weight_decay: float = setting(0.0, finite(non_negative), role=PER_MEMBER, label="Weight decay λ")

    def resolve(self, network):
        """Per-layer values, the strategy's where none is given (``strategy_per_layer``)."""
        if self.schedule == "per_pass" and self.clip not in (None, 10.0):
            raise ConfigError(f"learner.clip={self.clip}: learner.schedule=per_pass clamps a rescaled layer to "
                              f"[P]'s bounds (weights {PER_PASS_CLIP['weights']:g}, biases "
                              f"{PER_PASS_CLIP['biases']:g}); there clip is 10 (on) or null (off). "
                              "A clip bound of your own goes with learner.schedule=per_step")
        resolved = super().resolve(network)
        strategies = strategy_per_layer(self.reset_strategy, network.per_layer("activation"))
        values = {key: tuple(float(ADAPTED_STRATEGIES[st][key] if given is None else given)
                             for given, st in zip(getattr(resolved, key), strategies))
                  for key in ("c_low", "c_high", "rho_low", "rho_high")}
        return dataclasses.replace(resolved, **values)


class AdaptedRescaling(UtilityLearner):
    """[P]'s rescaling for K members; c_low, c_high, rho_low, rho_high, decay_rate and
    maturity_threshold per member and hidden layer, clip per member.

    c_low, c_high: factors for the input row and bias, any real ([P] grid -2 ... 2);
    rho_low, rho_high: fractions of eligible units per step, [0, 1] ([P] grid 1e-2 ... 1e-7);
    decay_rate (eta) 0.99, maturity_threshold (m) 100; schedule 'per_step' (published code) or
    'per_pass' ([P]'s "modified cfg" code); clip 10.0 (None disables).
    """

    COUNTS = ("units_rescaled_low", "units_rescaled_high")

    def __init__(self, c_low=-0.5, c_high=0.5, rho_low=1e-4, rho_high=1e-5, decay_rate=0.99,
                 maturity_threshold=100, clip=10.0, schedule="per_step"):
        if schedule not in ADAPTED_SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; known: {list(ADAPTED_SCHEDULES)}")
        self.c_low, self.c_high = c_low, c_high
        self.rho_low, self.rho_high = rho_low, rho_high
        self.decay_rate = decay_rate
        self.maturity_threshold = maturity_threshold
        self.clip = clip
        self.schedule = schedule

    # checkpointed per member (engine/state.py), besides the ages: the running mean activation u
    # (K, H) per hidden layer, the accumulators {"low": (K, L), "high": (K, L)}
    STATE = {"u": PARTS, "acc": PARTS}
    REBUILT = ("rates", "factors", "clip_host", "_ticks", "_pass_groups")  # from the settings

    def setup(self, pop) -> None:
        super().setup(pop)
        K, L = pop.K, pop.spec.num_hidden
        dev = dict(device=pop.device, dtype=pop.dtype)
        self.rates = {"low": per_member_layer(self.rho_low, K, L, "rho_low"),
                      "high": per_member_layer(self.rho_high, K, L, "rho_high")}
        self.factors = {"low": torch.tensor(per_member_layer(self.c_low, K, L, "c_low"), **dev),
                        "high": torch.tensor(per_member_layer(self.c_high, K, L, "c_high"), **dev)}
        self._setup_layers(pop, (self.rates["low"] > 0) | (self.rates["high"] > 0))
        self.u = [torch.zeros(K, H, **dev) for H in self.widths]  # running mean of the signed activation
        self.acc = {"low": np.zeros((K, L)), "high": np.zeros((K, L))}
        clip = per_member_layer([math.inf if c is None else c for c in self._members(self.clip, K)], K, 1, "clip")
        self.clip_host = clip[:, 0]
        self._uniform_clip = float(clip[0, 0]) if (clip == clip[0, 0]).all() else None
        self._bc = [None] * L
        # which members' units tick (age, utility update) in one statistics update, per layer:
        # None = all of them; else a (K, 1) 0/1 column, and the EMA weight (1 - eta) times it
        updates = {"step": self.active} if self.schedule == "per_step" else {s: self.rates[s] > 0 for s in SIDES}
        self._ticks = {name: [self._tick_column(pop, mask[:, l], l) for l in range(L)] for name, mask in updates.items()}
        if self.schedule == "per_pass":
            self._pass_layers = {s: [l for l in range(L) if (self.rates[s][:, l] > 0).any()] for s in SIDES}
            self._pass_groups, self._pass_maturity = self._maturity_by_schedule(self.active)

    @staticmethod
    def _members(value, K):
        return list(value) if isinstance(value, (list, tuple)) else [value] * K

    def _tick_column(self, pop, ticking: np.ndarray, l: int):
        if ticking.all():
            return None
        tick = torch.tensor(ticking[:, None], device=pop.device, dtype=pop.dtype)
        return tick, self.one_minus_eta[l] * tick

    # ------------------------------------------------------------------ per_step (SPEC 3.5)
    @torch.no_grad()
    def after_step(self, pop, fwd) -> None:
        if self.schedule == "per_pass":
            return self._after_step_per_pass(pop, fwd)
        t = pop.t
        eligible = self.maturity.eligible(t)
        n_low = how_many(self.acc["low"], self.rates["low"], eligible)
        n_high = how_many(self.acc["high"], self.rates["high"], eligible - n_low)
        for l in self.layers:
            self._statistics(l, fwd.inputs[l + 1], self._ticks["step"][l])
        for l in self.layers:
            for side, n in (("low", n_low[:, l]), ("high", n_high[:, l])):
                if n.any():
                    self._rescale(pop, l, side, n)
        n = n_low + n_high
        if n.any():
            self.maturity.reset(t, n)
            self.counts["units_rescaled_low"] += n_low
            self.counts["units_rescaled_high"] += n_high
        self._clip_every_layer(pop)

    def _statistics(self, l: int, h: torch.Tensor, tick) -> None:
        """Step 1 for hidden layer l: age += 1, u <- eta u + (1 - eta) mean_batch(a) for the
        members whose units tick (``tick``: None = all; members that do not keep age and u)."""
        age, u = self.age[l], self.u[l]
        mean = h.squeeze(1) if h.shape[1] == 1 else h.mean(dim=1)
        if tick is None:
            age.add_(1.0)
            u.lerp_(mean, self.one_minus_eta[l])  # eta u + (1 - eta) mean_batch(a)
        else:
            age.add_(tick[0])
            u.lerp_(mean, tick[1])  # weight 0: u unchanged
        self._bc[l] = torch.pow(self.eta[l], age).neg_().add_(1.0)  # 1 - eta^age

    def _rescale(self, pop, l: int, side: str, n: np.ndarray) -> None:
        """Multiply the input rows and biases of n[k] units of member k by c_side[k, l]."""
        members = np.flatnonzero(n)
        sel = torch.as_tensor(members, device=pop.device)
        u_hat = self.u[l][sel] / self._bc[l][sel]
        keys = u_hat if side == "low" else -u_hat  # low: smallest u_hat first; high: largest first
        eligible = self.age[l][sel] > self.m_dev[l][sel]
        kk, uu = chosen_units(lowest_first(keys, eligible), members, n, pop.device)
        c = self.factors[side][kk, l]
        pop.W[l][kk, uu] = pop.W[l][kk, uu] * c.unsqueeze(1)
        pop.b[l][kk, uu] = pop.b[l][kk, uu] * c
        self.age[l][kk, uu] = 0.0
        self.u[l][kk, uu] = 0.0

    def _clip_every_layer(self, pop) -> None:
        """Step 5: every hidden layer's weights and biases to [-clip, clip] (per member)."""
        finite = np.isfinite(self.clip_host)
        if not finite.any():
            return
        L = pop.spec.num_hidden
        if self._uniform_clip is not None:  # one bound for every member: one pass per tensor
            c = self._uniform_clip
            for l in range(L):
                pop.W[l].clamp_(-c, c)
                pop.b[l].clamp_(-c, c)
        else:  # clamp with per-member tensor bounds is a slow kernel: clamp member by member
            for k in np.flatnonzero(finite):
                c = float(self.clip_host[k])
                for l in range(L):
                    pop.W[l][k].clamp_(-c, c)
                    pop.b[l][k].clamp_(-c, c)

    # ------------------------------------------------------------------ per_pass ([P]'s "modified cfg")
    def _maturity_by_schedule(self, active: np.ndarray) -> tuple[dict, dict]:
        """Host-side eligibility when each pass ticks its own layers: one schedule (base.Maturity)
        per group of (member, layer) entries that tick alike, each on its own clock (ticks so
        far): 'both' rates > 0 (ticks 2t - 1 and 2t in step t), 'low' or 'high' only (tick t).
        Returns ({group: (K, L) mask}, {group: Maturity})."""
        low, high = self.rates["low"] > 0, self.rates["high"] > 0
        groups = {"both": low & high & active, "low": low & ~high & active, "high": high & ~low & active}
        return groups, {g: Maturity(self.widths, self.m, mask) for g, mask in groups.items()}

    def _clocks(self, side: str, t: int) -> list[tuple[str, int]]:
        """The groups whose units tick in pass ``side`` of step t, each with its clock."""
        return [("both", 2 * t - 1 if side == "low" else 2 * t), (side, t)]

    def _after_step_per_pass(self, pop, fwd) -> None:
        t = pop.t
        for side in SIDES:
            layers = self._pass_layers[side]
            if not layers:
                continue
            clocks = self._clocks(side, t)
            eligible = sum(self._pass_maturity[g].eligible(c) for g, c in clocks)
            n = how_many(self.acc[side], self.rates[side], eligible)
            for l in layers:
                self._statistics(l, fwd.inputs[l + 1], self._ticks[side][l])
            for l in layers:
                if n[:, l].any():
                    self._rescale(pop, l, side, n[:, l])
                    self._clip_rescaled(pop, l, n[:, l])
            if n.any():
                for g, c in clocks:  # each schedule counts its own (member, layer) entries only
                    self._pass_maturity[g].reset(c, np.where(self._pass_groups[g], n, 0))
                self.counts[f"units_rescaled_{side}"] += n

    def _clip_rescaled(self, pop, l: int, n: np.ndarray) -> None:
        """[P]'s modified code: a layer in which this pass rescaled a unit is clamped, weights to
        [-5, 5] and biases to [-10, 10] (members with clip None: not at all)."""
        for k in np.flatnonzero((n > 0) & np.isfinite(self.clip_host)):
            pop.W[l][k].clamp_(-PER_PASS_CLIP["weights"], PER_PASS_CLIP["weights"])
            pop.b[l][k].clamp_(-PER_PASS_CLIP["biases"], PER_PASS_CLIP["biases"])

    def after_load(self) -> None:
        """After a resume: the host-side maturity schedule(s), rebuilt from the restored ages."""
        if self.schedule == "per_step":
            return super().after_load()
        t = self._pop.t
        for group, m in self._pass_maturity.items():
            m.rebuild(2 * t if group == "both" else t, self.age, self._pass_groups[group])

    def freeze(self, pop, k: int) -> None:
        for rates in self.rates.values():
            rates[k] = 0.0
        for state in (*self.age, *self.u):
            state[k].zero_()


LEARNER = Learner(AdaptedSettings, label="Activation-adapted", order=4, engine=AdaptedRescaling,
                  reference="AdaptedRescaling", kernel="KernelAdaptedRescaling")
