"""L2 regularisation (SPEC 3.2): the optimiser's coupled weight decay on all weights and biases,
theta <- theta - alpha (g + lambda theta); the optimiser alone is the learner."""

from __future__ import annotations

from dataclasses import dataclass

from ...learners import Learner, LearnerSettings
from ...schema import PER_MEMBER, finite, non_negative, setting


@dataclass(frozen=True)
class L2Settings(LearnerSettings):
    """L2 regularisation (SPEC 3.2): SGD with coupled weight decay lambda ([P]'s grid 1e-3, 1e-4, 1e-5)."""

    name: str = "l2"
    weight_decay: float = setting(1e-3, finite(non_negative), role=PER_MEMBER, label="Weight decay λ")


LEARNER = Learner(L2Settings, label="L2", order=1)
