"""Activations (forward, backward kernels, gains) and the SPEC 1 initialisation."""

import math

import pytest
import torch

from plasticity_lab.activations import ACTIVATIONS, get_activation
from plasticity_lab.network import NetworkSpec, initial_parameters

TORCH_GAIN_NAME = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "selu": "selu",
                   "leaky_relu": "leaky_relu", "identity": "linear"}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_backward_kernel_matches_autograd(name):
    act = get_activation(name)
    z = torch.linspace(-3, 3, 101, dtype=torch.float64).requires_grad_()
    h = act.module().double()(z)
    g = torch.randn(101, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (auto,) = torch.autograd.grad(h, z, g)
    manual = act.backward(g, z.detach(), h.detach())
    torch.testing.assert_close(manual, auto)
    torch.testing.assert_close(act.forward(z.detach()), h.detach())


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_gain_matches_spec(name):
    gain = get_activation(name).gain
    if name in TORCH_GAIN_NAME:
        param = 0.01 if name == "leaky_relu" else None
        assert gain == pytest.approx(torch.nn.init.calculate_gain(TORCH_GAIN_NAME[name], param))
    else:  # elu, gelu, swish, celu use the relu gain (SPEC 1)
        assert gain == pytest.approx(math.sqrt(2))


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="swishh"):
        get_activation("swishh")


def test_init_bounds_biases_and_seed():
    spec = NetworkSpec.mlp(784, 100, 3, 10, ["relu", "tanh", "sigmoid"])
    params = initial_parameters(spec, seed=5)
    gains = [math.sqrt(2), 5 / 3, 1.0, 1.0]  # last: output layer, gain 1
    for (W, b), gain, fan_in in zip(params, gains, spec.sizes[:-1]):
        bound = gain * math.sqrt(3 / fan_in)
        assert W.abs().max() <= bound
        assert W.abs().max() > 0.95 * bound  # uniform over the whole interval, not a narrower one
        assert W.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert torch.count_nonzero(b) == 0
    again = initial_parameters(spec, seed=5)
    other = initial_parameters(spec, seed=6)
    assert all(torch.equal(a[0], c[0]) for a, c in zip(params, again))
    assert not torch.equal(params[0][0], other[0][0])


def test_per_layer_activation_list_must_match_depth():
    with pytest.raises(ValueError, match="2 activations given for 3 hidden layers"):
        NetworkSpec((784, 10, 10, 10, 10), ("relu", "tanh"))
