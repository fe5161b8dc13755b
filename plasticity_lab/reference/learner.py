"""Reference learner for bp and l2 (SPEC 3.1, 3.2, 3.8): a plain MLP trained with torch.optim.SGD.

Each step: forward, record the loss and whether the prediction was right (test-then-
train: the prediction of the forward pass BEFORE the update), backward, optimiser step.
L2 is SGD's coupled weight decay on all weights and biases: theta <- theta - alpha (g + lambda theta).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation
from ..network import NetworkSpec, initial_parameters


def build_mlp(spec: NetworkSpec, seed: int) -> nn.Sequential:
    """Linear -> activation per hidden layer, linear output; weights from the seed's init stream."""
    layers: list[nn.Module] = []
    params = initial_parameters(spec, seed)
    for l, (W, b) in enumerate(params):
        linear = nn.Linear(spec.sizes[l], spec.sizes[l + 1])
        with torch.no_grad():
            linear.weight.copy_(W)
            linear.bias.copy_(b)
        layers.append(linear)
        if l < spec.num_hidden:
            layers.append(get_activation(spec.activations[l]).module())
    return nn.Sequential(*layers)


class ReferenceLearner:
    """One network trained online with SGD; ``step`` returns (summed loss, number correct)."""

    def __init__(self, spec: NetworkSpec, seed: int, step_size: float, weight_decay: float = 0.0,
                 device="cpu"):
        self.spec = spec
        self.net = build_mlp(spec, seed).to(device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=step_size, weight_decay=weight_decay)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One SGD step on a batch x (B, in), y (B,): mean cross-entropy, test-then-train."""
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        correct = int((logits.argmax(dim=-1) == y).sum())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()) * x.shape[0], correct

    def to(self, dtype: torch.dtype) -> "ReferenceLearner":
        self.net.to(dtype)
        return self

    def parameters(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(W, b)] per linear layer, as CPU copies."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        return [(m.weight.detach().cpu().clone(), m.bias.detach().cpu().clone()) for m in linears]
