"""Losses of the online protocols, batched over a population: value, metric and gradient.

Each returns, for logits of shape (K, B, C): the per-member SUM of the example losses
(K,), the per-member number of correct predictions (K,) (None for regression), and the
gradient of the per-member MEAN loss w.r.t. the logits (K, B, C), which is what one SGD
step on a batch of B uses (SPEC 1: one step per batch, mean loss).
"""

from __future__ import annotations

import torch


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, onehot: torch.Tensor):
    """Softmax cross-entropy (SPEC 1); ``y`` (K, B) class indices, ``onehot`` their one-hot codes."""
    logp = torch.log_softmax(logits, dim=-1)
    loss_sum = -(logp * onehot).sum(dim=(1, 2))
    correct = (logits.argmax(dim=-1) == y).sum(dim=1)
    grad = (logp.exp() - onehot) / logits.shape[1]
    return loss_sum, correct, grad


def squared_error(pred: torch.Tensor, y: torch.Tensor):
    """Squared error (SPEC 2) of predictions (K, B, 1) for targets y (K, B): per-member SUM of
    (y_hat - y)^2, None (no accuracy), and the gradient of the per-member MEAN squared error,
    2 (y_hat - y) / B. [D]'s convention: torch's MSELoss, (y_hat - y)^2 without a factor 1/2."""
    err = pred[..., 0] - y
    loss_sum = (err.double() ** 2).sum(dim=1)
    grad = (2.0 / pred.shape[1]) * err.unsqueeze(-1)
    return loss_sum, None, grad
