"""The reference learner behind the population interface, one network at a time.

Lets the runner drive K reference networks exactly like the engine (same data chunks,
same recording), so engine-vs-reference comparisons run through the same code path.
"""

from __future__ import annotations

import numpy as np
import torch

from ..network import NetworkSpec
from .learner import ReferenceLearner
from .resets import REFERENCE_CLASSES

# reference learner argument <- learner settings key (the papers' names)
_ARGS = {
    "cbp": ("replacement_rate", "decay_rate", "maturity_threshold", "util_type", "accumulate", "bias_correction"),
    "adapted": ("c_low", "c_high", "rho_low", "rho_high", "decay_rate", "maturity_threshold", "clip", "clip_mode"),
    "shrink_perturb": ("sigma", "mode", "shrink"),
    "redo": ("reset_period", "tau"),
}


def reference_learner(settings):
    """The readable reset learner for one member's parsed learner settings, or None (bp, l2)."""
    if settings.name not in REFERENCE_CLASSES:
        return None
    return REFERENCE_CLASSES[settings.name](**{k: getattr(settings, k) for k in _ARGS[settings.name]})


class ReferencePopulation:
    """K ReferenceLearners with the engine's ``train`` / ``take_totals`` / ``take_counts`` / ``freeze`` interface."""

    def __init__(self, spec: NetworkSpec, seeds: list[int], step_size: list[float],
                 weight_decay: list[float], device="cpu", dtype=torch.float32, members=None):
        self.spec = spec
        self.K = len(seeds)
        self.members = members or [ReferenceLearner(spec, s, a, w, device, dtype=dtype)
                                   for s, a, w in zip(seeds, step_size, weight_decay)]
        self.loss_sum = [0.0] * self.K
        self.correct = [0] * self.K
        self.frozen = [False] * self.K

    @classmethod
    def from_settings(cls, spec: NetworkSpec, settings: list, device="cpu", dtype=torch.float32):
        """One ReferenceLearner per member's parsed RunSettings (optimiser and learner included)."""
        members = []
        for s in settings:
            opt = s.optimizer
            members.append(ReferenceLearner(
                spec, s.seed, opt.step_size, s.learner.weight_decay, device, optimizer=opt.name,
                momentum=getattr(opt, "momentum", 0.0), betas=getattr(opt, "betas", (0.9, 0.999)),
                eps=getattr(opt, "eps", 1e-8), learner=reference_learner(s.learner), dtype=dtype))
        return cls(spec, [s.seed for s in settings], None, None, device, dtype, members=members)

    def train(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1) -> None:
        for k, member in enumerate(self.members):
            if self.frozen[k]:
                continue
            for s in range(0, x.shape[1], batch_size):
                loss, correct = member.step(x[k, s : s + batch_size], y[k, s : s + batch_size])
                self.loss_sum[k] += loss
                self.correct[k] += correct

    def take_totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.tensor(self.loss_sum, dtype=torch.float64), torch.tensor(self.correct)
        self.loss_sum = [0.0] * self.K
        self.correct = [0] * self.K
        return out

    def take_counts(self) -> dict:
        """{metric: (K, L) int array} of the members' reset counts since the last call."""
        per_member = [m.take_counts() for m in self.members]
        return {name: np.array([c[name] for c in per_member], dtype=np.int64) for name in per_member[0]}

    def freeze(self, k: int) -> None:
        self.frozen[k] = True

    def parameters_of(self, k: int):
        return self.members[k].parameters()
