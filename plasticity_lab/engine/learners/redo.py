"""ReDo, recycling dormant neurons (SPEC 3.6) on the population engine.

Sokar, Agarwal, Castro & Evci, "The Dormant Neuron Phenomenon in Deep Reinforcement
Learning", ICML 2023.

Every ``reset_period`` steps, per hidden layer: score s_i = mean|h_i| / (mean_j mean|h_j| + 1e-9),
where mean|h_i| is the unit's mean absolute activation over the examples of all batches
since the previous check (the "recent batches": the whole period, so a batch of 1 does not
make half a ReLU layer look dormant). Units with s_i <= tau (per member and layer; 0.0 =
exactly dead units only) get fresh input weights from the layer's init distribution (member's
ALGO/REINIT generator), bias 0, outgoing weights 0, and zeroed optimiser state (Adam).
The 1e-9 is Sokar et al.'s guard against an all-dead layer (then every unit scores 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...learners import Learner, LearnerSettings
from ...network import init_weight
from ...schema import PER_LAYER, PER_MEMBER, finite, non_negative, positive, setting
from ...seeding import REINIT
from ..state import MEMBERS, PARTS
from .base import EngineLearner, member_generators, per_member_layer

EPS = 1e-9


@dataclass(frozen=True)
class ReDoSettings(LearnerSettings):
    """ReDo (SPEC 3.6, Sokar et al. 2023): every reset_period steps recycle units with score <= tau."""

    name: str = "redo"
    reset_period: int = setting(100, positive, role=PER_MEMBER, label="Reset period (steps)")
    tau: Any = setting(0.1, non_negative, role=PER_LAYER, label="Dormancy threshold τ")
    weight_decay: float = setting(0.0, finite(non_negative), role=PER_MEMBER, label="Weight decay λ")


class ReDo(EngineLearner):
    """reset_period (steps, >= 1; 100) per member; tau (>= 0; 0.1) per member and hidden layer."""

    COUNTS = ("units_reset",)

    def __init__(self, reset_period=100, tau=0.1):
        self.reset_period, self.tau = reset_period, tau

    # checkpointed per member (engine/state.py): the |activation| sums (K, H) per hidden layer and the
    # number of examples since the last check, the re-initialisation generators
    STATE = {"act_sum": PARTS, "examples": MEMBERS, "reinit_gen": MEMBERS}
    # from the settings; this task's recycled units (taken into the counts at every task's end)
    REBUILT = ("period", "tau_dev", "_reset_counts")

    def setup(self, pop) -> None:
        super().setup(pop)
        K, L = pop.K, pop.spec.num_hidden
        self.period = per_member_layer(self.reset_period, K, 1, "reset_period", np.int64)[:, 0]
        self.tau_dev = torch.tensor(per_member_layer(self.tau, K, L, "tau"), device=pop.device, dtype=pop.dtype)
        self.act_sum = [torch.zeros(K, H, device=pop.device, dtype=pop.dtype) for H in pop.spec.sizes[1:-1]]
        self.examples = np.zeros(K, dtype=np.int64)
        self.reinit_gen = member_generators(pop, REINIT)
        self._reset_counts = torch.zeros(K, L, dtype=torch.long, device=pop.device)

    @torch.no_grad()
    def after_step(self, pop, fwd) -> None:
        for l, acc in enumerate(self.act_sum):
            acc.add_(fwd.inputs[l + 1].abs().sum(dim=1))
        self.examples += fwd.inputs[0].shape[1]
        due = np.flatnonzero(pop.t % self.period == 0)
        if len(due):
            self._recycle(pop, due)

    def _recycle(self, pop, members: np.ndarray) -> None:
        for l, acc in enumerate(self.act_sum):
            for k in members:
                mean_abs = acc[k] / float(self.examples[k])
                score = mean_abs / (mean_abs.mean() + EPS)
                dormant = torch.nonzero(score <= self.tau_dev[k, l]).flatten()  # reads back: once per period
                if len(dormant) == 0:
                    continue
                fresh = init_weight(pop.spec, l, self.reinit_gen[k], len(dormant))
                kk = torch.full_like(dormant, int(k))
                pop.W[l][kk, dormant] = fresh.to(pop.dtype)
                pop.b[l][kk, dormant] = 0.0
                pop.W[l + 1][kk, :, dormant] = 0.0
                pop.optimizer.reset_units(l, kk, dormant)
                self._reset_counts[k, l] += len(dormant)
        for acc in self.act_sum:
            acc[torch.as_tensor(members, device=pop.device)] = 0.0
        self.examples[members] = 0

    def take_counts(self) -> dict:
        self.counts["units_reset"] += self._reset_counts.cpu().numpy()
        self._reset_counts.zero_()
        return super().take_counts()

    def freeze(self, pop, k: int) -> None:
        self.tau_dev[k] = -1.0  # no score is <= -1: nothing is recycled any more


LEARNER = Learner(ReDoSettings, label="ReDo", order=5, engine=ReDo, reference="ReDo")
