"""The kernel backend's optimisers (SPEC 3.1, 3.2, 3.8): plain SGD (fused into the compiled
update) and SGD with momentum, its buffers in the same flat layout as the weights.

They are the engine's optimisers (engine/optim.py: same semantics, same checkpointed state,
``freeze``) with ``reset_member_units(k, layer, units)``: a replaced unit's optimiser state
(momentum buffer of its input row, bias and outgoing column) is zeroed, as the engine's
``reset_units`` does. Adam stays on the torch engine (kernel/support.py).
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine.optim import FusedSGD, MomentumSGD, _per_member


class KernelSGD(FusedSGD):
    """Plain SGD: no state."""

    def reset_member_units(self, k: int, layer: int, units: np.ndarray) -> None:
        pass


class KernelMomentumSGD(MomentumSGD):
    """torch.optim.SGD with momentum; ``buf`` (K, P) holds every member's buffer in theta's layout."""

    def __init__(self, pop, momentum):
        self.pop = pop
        self.momentum = _per_member(pop, momentum, "momentum")
        self.buf = torch.zeros_like(pop.theta)
        self.buf_W = [pop.layout.weight_view(self.buf, l) for l in range(len(pop.W))]
        self.buf_b = [pop.layout.bias_view(self.buf, l) for l in range(len(pop.b))]

    def update(self, l, gW, gb):
        raise NotImplementedError("the kernel backend's momentum step is compiled (kernel/step.py)")

    def reset_member_units(self, k: int, layer: int, units: np.ndarray) -> None:
        buf = self.buf.numpy()[k]
        layout = self.pop.layout
        for l, rows in ((layer, False), (layer + 1, True)):
            n_in, n_out = layout.sizes[l], layout.sizes[l + 1]
            W = buf[layout.woff[l] : layout.woff[l] + n_in * n_out].reshape(n_in, n_out)
            if rows:  # outgoing weights: rows of the next layer's W^T
                W[units] = 0.0
            else:  # input weights: columns of W^T, and the bias
                W[:, units] = 0.0
                buf[layout.boff[l] + units] = 0.0


def make_kernel_optimizer(pop, name: str, momentum):
    """KernelSGD, or KernelMomentumSGD when some member's momentum is not 0 (SGD only)."""
    if name != "sgd":
        raise ValueError(f"the kernel backend runs optimizer=sgd only, not {name!r} (kernel/support.py)")
    mu = _per_member(pop, momentum, "momentum")
    return KernelSGD(pop) if bool((mu == 0).all()) else KernelMomentumSGD(pop, mu)
