"""What the readable learners share (the ground truth for the engine's learners, SPEC 3).

Each readable learner (one module per learner, named after it) reads top to bottom like the SPEC
section it implements. It is built with its hyperparameters (scalars, or one value per hidden layer
where the SPEC allows), then ``setup(member)`` attaches it to a ReferenceLearner (its nn.Linear
layers, optimiser, network spec and seed). Its hooks, each optional (plasticity_lab/learners.md):

- ``loss_term()``: a term added to the loss before autograd's backward pass (not to the loss the
  run records), e.g. a regulariser;
- ``transform_gradients()``: after the backward pass, before the optimiser's step: change the
  parameters' ``.grad`` in place;
- ``after_step(features)``: after the optimiser's step, with the post-activations of that step's
  forward pass (one (B, H) tensor per hidden layer), e.g. to reset or rescale units.

Randomness comes from the member's ALGO stream (seeding.py): REINIT for re-initialised
units, COIN for ``accumulate: false``, UTIL for the random utility, NOISE for S&P and UPGD, so the
engine (which uses the same sub-streams in the same order) makes the same draws.

Ties between equal utilities are broken by the unit index (stable sort), see ``lowest``.
A member is checkpointed whole (reference/population.py), so a readable learner declares no state.
"""

from __future__ import annotations

import torch

from ...network import init_weight
from ..optim import zero_unit_state


def per_layer(value, L: int, name: str) -> list:
    """A scalar for every hidden layer, or a list with one value per hidden layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != L:
            raise ValueError(f"{name}: {len(value)} per-layer values for {L} hidden layers")
        return list(value)
    return [value] * L


def lowest(keys: torch.Tensor, eligible: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n eligible units with the smallest key (ties: lowest index first)."""
    candidates = torch.nonzero(eligible).flatten()
    order = torch.sort(keys[candidates], stable=True).indices
    return candidates[order[:n]]


class ReadableLearner:
    """Base of the readable learners (module docstring): per-layer counts, the probes' utility,
    and the re-initialisation of units."""

    COUNTS: tuple[str, ...] = ()

    def setup(self, learner) -> None:
        self.spec = learner.spec
        self.linears = learner.linears  # hidden layers 0..L-1, then the output layer
        self.optimizer = learner.optimizer
        self.seed = learner.seed
        self.L = learner.spec.num_hidden
        self.counts = {name: [0] * self.L for name in self.COUNTS}

    def utility(self, l: int) -> torch.Tensor | None:
        """u_hat = u / (1 - eta^age) of hidden layer l (NaN for units of age 0), or None where
        the learner keeps no utility or does not act on the layer (for the probes)."""
        if not hasattr(self, "u") or not self.acts_on(l):
            return None
        return torch.where(self.age[l] > 0, self.u[l] / (1 - self.eta[l] ** self.age[l]), float("nan"))

    def acts_on(self, l: int) -> bool:
        return True

    def loss_term(self) -> torch.Tensor | None:
        """A term added to the loss before the backward pass (None: nothing)."""
        return None

    def transform_gradients(self) -> None:
        """Change the parameters' gradients in place before the optimiser's step."""

    def after_step(self, features: list[torch.Tensor]) -> None:
        """Act after the optimiser's step with the step's post-activations."""

    def replace_units(self, l: int, units: torch.Tensor, gen: torch.Generator, gain: float | None = None) -> None:
        """Re-initialise units of hidden layer l: input weights from the layer's init
        distribution (``gain`` 1.0: without its activation gain), bias 0, outgoing weights 0,
        optimiser state of all three zeroed."""
        layer, next_layer = self.linears[l], self.linears[l + 1]
        layer.weight[units] = init_weight(self.spec, l, gen, len(units), gain).to(layer.weight)
        layer.bias[units] = 0.0
        next_layer.weight[:, units] = 0.0
        zero_unit_state(self.optimizer, layer.weight, units, dim=0)
        zero_unit_state(self.optimizer, layer.bias, units, dim=0)
        zero_unit_state(self.optimizer, next_layer.weight, units, dim=1)
