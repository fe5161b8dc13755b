"""Reference learner (SPEC 3, 3.8): a plain MLP, autograd, and a torch optimiser, one network.

Each step: forward (keeping each hidden layer's post-activations), record the loss and
whether the prediction was right (test-then-train: the prediction of the forward pass
BEFORE the update), backward (of the loss plus the learner's ``loss_term``), the learner's
``transform_gradients``, the optimiser's step, then the learner's ``after_step`` with that forward
pass's activations (reference/learners/: cbp, adapted, shrink_perturb, redo, ...).
L2 is the optimiser's coupled weight decay on all weights and biases:
theta <- theta - alpha (g + lambda theta). Optimisers: torch.optim.SGD (optional momentum)
or ReadableAdam (torch.optim.Adam's algorithm with per-element step counts, reference/optim.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation
from ..network import NORMS, NetworkSpec, initial_parameters
from ..engine.optim import SGDSettings
from .optim import make_optimizer



def build_mlp(spec: NetworkSpec, seed: int, norm: str = "none") -> nn.Sequential:
    """Linear -> activation per hidden layer, linear output; weights from the seed's init stream.

    ``norm`` (SPEC 3.7, [P] appendix): ``batch`` puts nn.BatchNorm1d, ``layer`` nn.LayerNorm
    (torch defaults: eps 1e-5, affine, BN momentum 0.1) between every hidden Linear and its
    activation; ``none`` (default) is the plain MLP of SPEC 1."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {NORMS}")
    layers: list[nn.Module] = []
    params = initial_parameters(spec, seed)
    for l, (W, b) in enumerate(params):
        linear = nn.Linear(spec.sizes[l], spec.sizes[l + 1])
        with torch.no_grad():
            linear.weight.copy_(W)
            linear.bias.copy_(b)
        layers.append(linear)
        if l < spec.num_hidden and norm != "none":
            width = spec.sizes[l + 1]
            layers.append(nn.BatchNorm1d(width) if norm == "batch" else nn.LayerNorm(width))
        if l < spec.num_hidden:
            layers.append(get_activation(spec.activations[l]).module())
    return nn.Sequential(*layers)


class ReferenceLearner:
    """One network trained online; ``step`` returns (summed loss, number correct).

    ``optimizer``: its optimiser settings (engine/optim.py ``OPTIMIZERS``: the step size and the
    optimiser's options); ``weight_decay``: the coupled weight decay (the learner's); ``learner``: a
    readable learner from reference/learners/ (constructed with its hyperparameters) or None.
    """

    def __init__(self, spec: NetworkSpec, seed: int, optimizer=SGDSettings(), weight_decay: float = 0.0,
                 device="cpu", learner=None, dtype=torch.float32, loss: str = "cross_entropy", norm: str = "none"):
        if loss not in ("cross_entropy", "squared_error"):
            raise ValueError(f"unknown loss {loss!r}; known: cross_entropy, squared_error")
        self.spec = spec
        self.seed = seed
        self.loss = loss
        self.net = build_mlp(spec, seed, norm).to(device, dtype)
        self.linears = [m for m in self.net if isinstance(m, nn.Linear)]
        # positions of the hidden activations in self.net (their outputs are the features)
        self._feature_at = set()
        seen = 0
        for i, m in enumerate(self.net):
            if isinstance(m, nn.Linear):
                seen += 1
            elif not isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) and seen <= spec.num_hidden:
                self._feature_at.add(i)
        self.optimizer = make_optimizer(self.net.parameters(), optimizer, weight_decay)
        self.learner = learner
        if learner is not None:
            learner.setup(self)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimiser step on a batch x (B, in), y (B,): mean cross-entropy (regression: mean
        squared error (y_hat - y)^2, [D]'s MSELoss; correct = 0), test-then-train."""
        features = []
        h = x
        for i, module in enumerate(self.net):
            h = module(h)
            if i in self._feature_at:  # Linear, [norm,] activation, ..., Linear
                features.append(h.detach())
        logits = h
        if self.loss == "squared_error":
            loss = F.mse_loss(logits[:, 0], y)
            correct = 0
        else:
            loss = F.cross_entropy(logits, y)
            correct = int((logits.argmax(dim=-1) == y).sum())
        self.optimizer.zero_grad()
        term = self.learner.loss_term() if self.learner is not None else None
        (loss if term is None else loss + term).backward()
        if self.learner is not None:
            self.learner.transform_gradients()
        self.optimizer.step()
        if self.learner is not None:
            self.learner.after_step(features)
        return float(loss.detach()) * x.shape[0], correct

    def take_counts(self) -> dict:
        """The reset learner's per-layer counts since the last call {metric: [per hidden layer]}."""
        counts = getattr(self.learner, "counts", {})
        out = {name: list(c) for name, c in counts.items()}
        for c in counts.values():
            c[:] = [0] * len(c)
        return out

    def parameters(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(W, b)] per linear layer, as CPU copies."""
        return [(m.weight.detach().cpu().clone(), m.bias.detach().cpu().clone()) for m in self.linears]
