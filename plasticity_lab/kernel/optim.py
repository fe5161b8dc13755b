"""The kernel backend's optimisers (SPEC 3.1, 3.2, 3.8): plain SGD (fused into the compiled
update) and SGD with momentum, its buffers in the same flat layout as the weights.

They are the engine's optimisers (engine/optim.py: same semantics, same checkpointed state,
``freeze``); a replaced unit's momentum buffers (input row, bias, outgoing column) are zeroed
by the cbp kernel (kernel/learners/cbp.py), as the engine's ``reset_units`` does. Adam stays
on the torch engine (kernel/support.py).
"""

from __future__ import annotations

import torch

from ..engine.optim import FusedSGD, MomentumSGD, _per_member


class KernelMomentumSGD(MomentumSGD):
    """torch.optim.SGD with momentum; ``buf`` (K, P) holds every member's buffer in theta's layout."""

    REBUILT = ("buf",)  # the storage of buf_W / buf_b (checkpointed through them, engine/state.py)

    def __init__(self, pop, momentum):
        self.pop = pop
        self.momentum = _per_member(pop, momentum, "momentum")
        self.buf = torch.zeros_like(pop.theta)
        self.buf_W = [pop.layout.weight_view(self.buf, l) for l in range(len(pop.W))]
        self.buf_b = [pop.layout.bias_view(self.buf, l) for l in range(len(pop.b))]

    def update(self, l, gW, gb):
        raise NotImplementedError("the kernel backend's momentum step is compiled (kernel/step.py)")


def make_kernel_optimizer(pop, settings: list):
    """FusedSGD (no state), or KernelMomentumSGD when some member's momentum is not 0, for K members'
    optimiser settings (SGD only)."""
    if settings[0].name != "sgd":
        raise ValueError(f"the kernel backend runs optimizer=sgd only, not {settings[0].name!r} (kernel/support.py)")
    mu = _per_member(pop, [s.momentum for s in settings], "momentum")
    return FusedSGD(pop) if bool((mu == 0).all()) else KernelMomentumSGD(pop, mu)
