"""L2 Init, readable (Kumar et al. 2023): the ground truth for engine/learners/l2_init.py.

The loss the optimiser minimises is the paper's regularised loss (their Section 3),
L_train(theta) + lambda ||theta - theta_0||^2 over all weights and biases, differentiated by autograd;
the loss the run records stays L_train.
"""

from __future__ import annotations

import torch

from .base import ReadableLearner


class L2Init(ReadableLearner):
    """lambda (``lambda_``): the strength of the pull toward the initial parameters theta_0."""

    def __init__(self, lambda_=1e-3):
        self.lambda_ = lambda_

    def setup(self, learner) -> None:
        super().setup(learner)
        self.params = [p for layer in self.linears for p in (layer.weight, layer.bias)]
        self.initial = [p.detach().clone() for p in self.params]  # theta_0

    def loss_term(self) -> torch.Tensor:
        """lambda ||theta - theta_0||^2."""
        return self.lambda_ * sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self.initial))
