"""The reference's optimisers from their settings (SPEC 3.8): torch.optim.SGD, and a small
readable Adam with per-element step counts (SPEC 3.4 step 8).

torch.optim.Adam keeps one step count per parameter tensor, but CBP and ReDo restart the
optimiser state of single units: their moments AND their step counts go back to 0 ([D]'s
AdamGnT does the same), so the units' next updates get Adam's full bias correction again.
This class is torch.optim.Adam's algorithm (coupled weight decay, no amsgrad), written
out, with ``state['step']`` a tensor shaped like the parameter. Without resets it computes
what torch.optim.Adam computes (tests compare them).
"""

from __future__ import annotations

import torch


class ReadableAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros_like(p)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                grad = p.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state["step"] += 1
                m, v, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                # bias corrections in float64, like torch.optim.Adam's Python-float arithmetic
                bias_correction1 = 1 - beta1 ** step.double()
                bias_correction2 = 1 - beta2 ** step.double()
                step_size = (group["lr"] / bias_correction1).to(p.dtype)
                denom = (v.sqrt() / bias_correction2.sqrt().to(p.dtype)).add_(group["eps"])
                p.sub_(step_size * (m / denom))
        return None


def zero_unit_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, index: torch.Tensor, dim: int = 0):
    """Zero every per-element optimiser state of ``param`` (moments, step counts, momentum
    buffer) at ``index`` along ``dim`` (rows of a layer's weight / its bias: dim 0; the
    outgoing columns in the next layer's weight: dim 1)."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.index_fill_(dim, index, 0.0)


def make_optimizer(params, settings, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimiser of one reference network for its optimiser settings (engine/optim.py
    ``OPTIMIZERS``) and its learner's coupled weight decay: torch.optim.SGD, or ReadableAdam."""
    if settings.name == "sgd":
        return torch.optim.SGD(params, lr=settings.step_size, momentum=settings.momentum, weight_decay=weight_decay)
    if settings.name == "adam":
        return ReadableAdam(params, lr=settings.step_size, betas=settings.betas, eps=settings.eps,
                            weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {settings.name!r}; known: sgd, adam")
