"""The activations' compiled forms for the kernel backend (SPEC 1, 3; ``plasticity_lab.activations``).

Each of the 10 activations is a small integer code (``CODES``) so one compiled step serves any
per-layer activation list. ``forward(code, z)`` is the activation, ``backward(code, g, z, h)``
is dL/dz for dL/dh = g at pre-activation z with post-activation h, the same derivatives as
the ATen backward kernels the engine and autograd use (activations.py):

relu h > 0 ? g : 0;  tanh g (1 - h^2);  sigmoid g h (1 - h);  selu / elu / celu (alpha 1):
z > 0 ? g scale : g scale alpha e^z;  gelu (exact, erf) g (Phi(z) + z phi(z));
leaky_relu z > 0 ? g : 0.01 g;  swish (SiLU) g s (1 + z (1 - s)), s = sigmoid(z);  identity g.
"""

from __future__ import annotations

import math

from numba import njit

from ..activations import ACTIVATIONS, LEAKY_RELU_SLOPE
from .jit import INLINE

NAMES = ("relu", "tanh", "sigmoid", "selu", "elu", "gelu", "leaky_relu", "swish", "celu", "identity")
CODES = {name: i for i, name in enumerate(NAMES)}
RELU, TANH, SIGMOID, SELU, ELU, GELU, LEAKY_RELU, SWISH, CELU, IDENTITY = range(len(NAMES))
assert set(NAMES) == set(ACTIVATIONS), "every activation of activations.py needs a compiled form here"

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@njit(**INLINE)
def forward(code, z):
    """The activation of ``code`` at ``z`` (a float32 or float64 scalar, returned in its type)."""
    one = z - z + 1  # 1 in z's type
    if code == RELU:
        return z if z > 0 else z - z
    if code == TANH:
        return math.tanh(z)
    if code == SIGMOID:
        return one / (one + math.exp(-z))
    if code == SELU:
        return SELU_SCALE * z if z > 0 else SELU_SCALE * SELU_ALPHA * (math.exp(z) - one)
    if code == ELU or code == CELU:  # celu with alpha 1 is elu
        return z if z > 0 else math.exp(z) - one
    if code == GELU:
        return 0.5 * z * (one + math.erf(z * _INV_SQRT2))
    if code == LEAKY_RELU:
        return z if z > 0 else LEAKY_RELU_SLOPE * z
    if code == SWISH:
        return z / (one + math.exp(-z))
    return z  # identity


@njit(**INLINE)
def forward_layer(code, z, h):
    """h = the activation of ``code`` at every entry of z (relu: a loop that vectorises)."""
    if code == RELU:
        for i in range(z.shape[0]):
            h[i] = z[i] if z[i] > 0 else z[i] - z[i]  # (z - z: NaN stays NaN)
    else:
        for i in range(z.shape[0]):
            h[i] = forward(code, z[i])


@njit(**INLINE)
def backward(code, g, z, h):
    """dL/dz given dL/dh = ``g``, the pre-activation ``z`` and the post-activation ``h``."""
    one = z - z + 1
    if code == RELU:
        return g if h > 0 else g - g
    if code == TANH:
        return g * (one - h * h)
    if code == SIGMOID:
        return g * (one - h) * h
    if code == SELU:
        return g * SELU_SCALE if z > 0 else g * SELU_SCALE * SELU_ALPHA * math.exp(z)
    if code == ELU or code == CELU:
        return g if z > 0 else g * math.exp(z)
    if code == GELU:
        cdf = 0.5 * (one + math.erf(z * _INV_SQRT2))
        pdf = _INV_SQRT_2PI * math.exp(-0.5 * z * z)
        return g * (cdf + z * pdf)
    if code == LEAKY_RELU:
        return g if z > 0 else g * LEAKY_RELU_SLOPE
    if code == SWISH:
        s = one / (one + math.exp(-z))
        return g * s * (one + z * (one - s))
    return g  # identity


@njit(**INLINE)
def backward_layer(code, g, z, h):
    """g <- dL/dz for every entry, given dL/dh = g, the pre-activations z and the post-activations h."""
    for j in range(g.shape[0]):
        g[j] = backward(code, g[j], z[j], h[j])


@njit(**INLINE)
def zero_gradient_where_zero(code):
    """Whether dL/dz is exactly 0 wherever h == 0 (relu), so the backward pass may skip those units."""
    return code == RELU
