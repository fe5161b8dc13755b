"""The MLP architecture shared by the reference learner and the population engine (SPEC 1).

784 -> H x L -> 10 by default; each hidden layer is Linear then its activation, the output
layer is linear. Weights are drawn uniform in [-b, b], b = gain * sqrt(3 / fan_in)
(Kaiming-uniform with the layer's activation gain; output layer gain 1); biases are 0.
Initial weights come from here for both backends, so a reference network and a
population member with the same seed start identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .activations import get_activation
from .seeding import INIT, generator

# normalisation between every hidden Linear and its activation (SPEC 3.7, ``network.norm``): none,
# BatchNorm1d or LayerNorm; the reference backend builds them (reference/learner.py)
NORMS = ("none", "batch", "layer")


@dataclass(frozen=True)
class NetworkSpec:
    """Layer sizes and per-hidden-layer activations: ``sizes = [in, h1, ..., hL, out]``."""

    sizes: tuple[int, ...]
    activations: tuple[str, ...]

    def __post_init__(self):
        if len(self.sizes) < 2:
            raise ValueError("a network needs at least input and output sizes")
        if len(self.activations) != len(self.sizes) - 2:
            raise ValueError(
                f"{len(self.activations)} activations given for {len(self.sizes) - 2} hidden layers"
            )
        for name in self.activations:
            get_activation(name)

    @classmethod
    def mlp(cls, n_in: int, width: int | list[int], depth: int, n_out: int, activation) -> "NetworkSpec":
        widths = [width] * depth if isinstance(width, int) else list(width)
        acts = [activation] * depth if isinstance(activation, str) else list(activation)
        return cls(tuple([n_in, *widths, n_out]), tuple(acts))

    @property
    def num_hidden(self) -> int:
        return len(self.sizes) - 2

    def gain(self, layer: int) -> float:
        """Init gain of linear layer ``layer`` (0-based; the output layer has gain 1)."""
        return get_activation(self.activations[layer]).gain if layer < self.num_hidden else 1.0

    def init_bound(self, layer: int, gain: float | None = None) -> float:
        """b = gain * sqrt(3 / fan_in) for linear layer ``layer`` (``gain`` None: the layer's own)."""
        return (self.gain(layer) if gain is None else gain) * math.sqrt(3.0 / self.sizes[layer])

    def num_parameters(self) -> int:
        return sum((i + 1) * o for i, o in zip(self.sizes[:-1], self.sizes[1:]))


def init_weight(spec: NetworkSpec, layer: int, gen: torch.Generator, rows: int | None = None,
                gain: float | None = None) -> torch.Tensor:
    """Fresh input weights for ``rows`` units (default all) of linear layer ``layer``.

    Drawn on the generator's device, float32, uniform in [-b, b] with b = gain * sqrt(3 / fan_in);
    ``gain`` None is the layer's activation gain (SPEC 1), 1.0 drops it ([P]'s CBP re-initialisation,
    SPEC 5 "Preset fidelity"). The same number of draws whatever the bound. Used at initialisation
    and by the reset learners that redraw a unit's input weights.
    """
    n_out = spec.sizes[layer + 1] if rows is None else rows
    b = spec.init_bound(layer, gain)
    return uniform(gen, (n_out, spec.sizes[layer]), -b, b)


def uniform(gen: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    """U(low, high) draws of ``shape`` from ``gen`` (float32, on its device): one number of the
    generator's stream per element, whatever the bounds (the kernel's read-ahead relies on it,
    kernel/draws.py)."""
    return torch.empty(shape, device=gen.device).uniform_(low, high, generator=gen)


def initial_parameters(spec: NetworkSpec, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(W, b)] for every linear layer, from the seed's init stream (CPU, float32)."""
    gen = generator(seed, INIT)
    return [(init_weight(spec, l, gen), torch.zeros(spec.sizes[l + 1])) for l in range(len(spec.sizes) - 1)]
