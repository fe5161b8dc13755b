"""Backprop (SPEC 3.1): plain SGD, nothing else; the optimiser alone is the learner."""

from __future__ import annotations

from dataclasses import dataclass

from ...learners import Learner, LearnerSettings


@dataclass(frozen=True)
class BPSettings(LearnerSettings):
    """Backprop (SPEC 3.1) [D]: no hyperparameter of its own (weight decay 0)."""

    name: str = "bp"


LEARNER = Learner(BPSettings, label="Backprop", order=0)
