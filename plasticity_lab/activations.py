"""Activation functions: forward, backward and initialisation gain, in one table.

The population engine differentiates by hand, so every activation carries its
backward kernel (the same ATen kernel autograd calls, so engine and reference agree to
the last bit where the arithmetic allows). Gains follow SPEC 1 / torch.nn.init.calculate_gain:
relu sqrt(2), tanh 5/3, selu 3/4, sigmoid 1, leaky_relu sqrt(2/(1+a^2));
elu, gelu, swish and celu use the relu gain; identity 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

aten = torch.ops.aten

LEAKY_RELU_SLOPE = 0.01
RELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class Activation:
    """One activation: ``forward(z)``, ``backward(grad, z, h)`` -> dL/dz, ``gain``, ``module()``."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    gain: float
    module: Callable[[], torch.nn.Module]
    family: str  # "relu" or "tanh": which adapted-reset strategy a layer of it gets (SPEC 3.5)


def _elu_backward(grad, z, h):
    return aten.elu_backward(grad, 1.0, 1.0, 1.0, False, z)


def _selu_backward(grad, z, h):
    # SELU = scale * elu(z, alpha); aten's elu_backward takes (alpha, scale, input_scale).
    return aten.elu_backward(grad, 1.6732632423543772, 1.0507009873554805, 1.0, False, z)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("relu", torch.relu, lambda g, z, h: aten.threshold_backward(g, h, 0.0),
                   RELU_GAIN, torch.nn.ReLU, "relu"),
        Activation("tanh", torch.tanh, lambda g, z, h: aten.tanh_backward(g, h),
                   5.0 / 3.0, torch.nn.Tanh, "tanh"),
        Activation("sigmoid", torch.sigmoid, lambda g, z, h: aten.sigmoid_backward(g, h),
                   1.0, torch.nn.Sigmoid, "tanh"),
        Activation("selu", F.selu, _selu_backward, 0.75, torch.nn.SELU, "relu"),
        Activation("elu", F.elu, _elu_backward, RELU_GAIN, torch.nn.ELU, "relu"),
        Activation("gelu", F.gelu, lambda g, z, h: aten.gelu_backward(g, z),
                   RELU_GAIN, torch.nn.GELU, "relu"),
        Activation("leaky_relu", lambda z: F.leaky_relu(z, LEAKY_RELU_SLOPE),
                   lambda g, z, h: aten.leaky_relu_backward(g, z, LEAKY_RELU_SLOPE, False),
                   math.sqrt(2.0 / (1.0 + LEAKY_RELU_SLOPE**2)),
                   lambda: torch.nn.LeakyReLU(LEAKY_RELU_SLOPE), "relu"),
        Activation("swish", F.silu, lambda g, z, h: aten.silu_backward(g, z),
                   RELU_GAIN, torch.nn.SiLU, "relu"),
        Activation("celu", F.celu, _elu_backward, RELU_GAIN, torch.nn.CELU, "relu"),
        Activation("identity", lambda z: z, lambda g, z, h: g, 1.0, torch.nn.Identity, "relu"),
    ]
}


def get_activation(name: str) -> Activation:
    """The activation called ``name``; a ValueError lists the known ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None
