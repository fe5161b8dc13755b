"""L2 Init, regenerative regularisation toward the initial parameters, on the population engine.

Kumar, Marklund & Van Roy, "Maintaining Plasticity in Continual Learning via Regenerative
Regularization" (2023, arXiv:2308.11958), Section 3: the training loss gains the squared distance
of all weights and biases theta from their values at initialisation theta_0,

    L_reg(theta) = L_train(theta) + lambda ||theta - theta_0||_2^2,

so that parameters the recent losses are insensitive to drift back toward their initial values.

Gradient scaling: ``lambda`` is the paper's lambda in that loss, so its gradient adds
2 lambda (theta - theta_0) to every parameter's loss gradient: twice the weight-decay convention of
torch and of ``learner=l2`` (whose weight_decay lambda adds lambda theta). The term is added inside
the update (``transform_gradients``), and the optimiser steps on g + 2 lambda (theta - theta_0): with
plain SGD theta <- theta - alpha (g + 2 lambda (theta - theta_0)); with momentum or Adam the term goes
through them as any gradient does. The readable implementation (reference/learners/l2_init.py) adds
lambda ||theta - theta_0||^2 to the loss and lets autograd differentiate it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...learners import Learner, LearnerSettings
from ...schema import PER_MEMBER, finite, non_negative, setting
from ..state import PARTS
from .base import EngineLearner, per_member_layer


@dataclass(frozen=True)
class L2InitSettings(LearnerSettings):
    """L2 Init (Kumar et al. 2023): ``lambda`` >= 0, the strength of the pull toward the initial
    parameters (config key ``learner.lambda``; the field is ``lambda_``, a Python keyword)."""

    name: str = "l2_init"
    lambda_: float = setting(1e-3, finite(non_negative), role=PER_MEMBER, label="L2 Init λ")


class L2Init(EngineLearner):
    """lambda per member (``lambda_``): the gradient gains 2 lambda (theta - theta_0) (module docstring)."""

    def __init__(self, lambda_=1e-3):
        self.lambda_ = lambda_

    STATE = {"init_W": PARTS, "init_b": PARTS}  # theta_0, checkpointed per member (engine/state.py)
    REBUILT = ("twice_lambda",)  # from the settings

    def setup(self, pop) -> None:
        super().setup(pop)
        lam = per_member_layer(self.lambda_, pop.K, 1, "lambda")[:, 0]
        self.twice_lambda = torch.tensor(2.0 * lam, device=pop.device, dtype=pop.dtype)  # (K,)
        self.init_W = [W.clone() for W in pop.W]
        self.init_b = [b.clone() for b in pop.b]

    @torch.no_grad()
    def transform_gradients(self, pop, grads: list) -> None:
        """g += 2 lambda (theta - theta_0) for every weight and bias."""
        for l, (gW, gb) in enumerate(grads):
            gW.addcmul_(torch.sub(pop.W[l], self.init_W[l]), self.twice_lambda.view(-1, 1, 1))
            gb.addcmul_(torch.sub(pop.b[l], self.init_b[l]), self.twice_lambda.view(-1, 1))


LEARNER = Learner(L2InitSettings, label="L2 Init", order=6, engine=L2Init, reference="L2Init")
