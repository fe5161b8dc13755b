"""K independent MLPs in lockstep: stacked weights, manual forward/backward, fused SGD.

Member k has its own weights ``W[l][k]``, ``b[l][k]``, its own step size and weight decay.
One step is a handful of batched matmuls for all K members at once (DESIGN, "The
population engine"): ``baddbmm(b, x[K,B,in], W^T)`` forward, and for SGD the update is
folded into the backward pass. Because the gradient of every layer is linear in the
output-layer delta, scaling that delta by the member's step size alpha_k once gives
alpha_k * dL/dW for every layer, and the update ``W -= alpha_k (dL/dW + lambda_k W)``
(torch.optim.SGD with coupled weight decay, SPEC 3.1/3.2) becomes one in-place
rank-B update (``addcmul_`` for B = 1, ``baddbmm_`` otherwise) after the decay factor
``(1 - alpha_k lambda_k)``. Nothing here mixes members: member k of a population computes
exactly what the same member computes alone.

SGD with momentum and Adam (engine/optim.py) take the other backward path, which
materialises every layer's gradient, and so does a learner that acts inside the update
(``transform_gradients``: it sees every layer's gradient before the optimiser steps, e.g. UPGD,
L2 Init). A learner's ``after_step`` (engine/learners/: cbp, adapted, shrink_perturb, redo) is
called after the optimiser step of every batch with the forward pass's tensors (SPEC 3: "after
the SGD step of each batch, using the activations of that batch's forward pass"). Learners and
optimisers modify the weights in place through ``W[l][...]`` / ``b[l][...]`` and never rebind them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..activations import get_activation
from ..losses import cross_entropy, squared_error
from ..network import NetworkSpec, initial_parameters
from .optim import SGDSettings, make_optimizer
from .state import MEMBERS, PARTS, load_member_states, member_state


@dataclass
class StepResult:
    """What one step leaves for learners and recorders: the forward pass's tensors."""

    inputs: list[torch.Tensor]  # input of each linear layer: x, h1, ..., hL   (K, B, n)
    pre: list[torch.Tensor]  # pre-activations z1..zL of the hidden layers      (K, B, H)


class Population:
    """K MLPs of one architecture, trained with per-member optimiser settings and an optional learner.

    ``optimizer``: the members' optimiser settings (engine/optim.py ``OPTIMIZERS``: SGDSettings,
    AdamSettings), one for every member or a list with one per member (of one kind): the step
    size alpha and the optimiser's options (momentum; betas, eps). ``weight_decay``: the coupled
    weight decay lambda, one or one per member (the learner's). ``learner``: an engine learner
    (engine/learners/) or None (bp, l2). ``t`` counts the steps taken (the current one included
    while a step runs).
    """

    STATE = {"W": PARTS, "b": PARTS, "step_size": MEMBERS, "weight_decay": MEMBERS}  # engine/state.py
    # from the settings and the step size (the fused path's factors); the loss totals (taken at every
    # task's end); constants and scratch
    REBUILT = ("_alpha", "_decay", "loss_sum", "correct", "eye", "_gbuf")

    def __init__(self, spec: NetworkSpec, seeds: list[int], optimizer=SGDSettings(), weight_decay=0.0,
                 device="cpu", dtype=torch.float32, learner=None, loss: str = "cross_entropy"):
        if loss not in ("cross_entropy", "squared_error"):
            raise ValueError(f"unknown loss {loss!r}; known: cross_entropy, squared_error")
        self.spec = spec
        self.loss = loss
        self.K = len(seeds)
        self.seeds = list(seeds)
        self.t = 0
        self.device = torch.device(device)
        self.dtype = dtype
        self.W, self.b = self._allocate([initial_parameters(spec, s) for s in seeds])
        self.acts = [get_activation(a) for a in spec.activations]
        optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer] * self.K
        if len(optimizers) != self.K or len({o.name for o in optimizers}) != 1:
            raise ValueError(f"optimizer: expected one optimiser's settings or {self.K} of one kind, got {optimizers}")
        self.step_size = self._per_member([o.step_size for o in optimizers])
        self.weight_decay = self._per_member(weight_decay)
        self._update_factors()
        self.loss_sum = torch.zeros(self.K, device=self.device, dtype=torch.float64)
        self.correct = torch.zeros(self.K, device=self.device, dtype=torch.long)
        self.eye = torch.eye(spec.sizes[-1], device=self.device, dtype=dtype)
        self.optimizer = self._make_optimizer(optimizers, learner is not None and learner.transforms_gradients)
        self.learner = learner
        if learner is not None:
            learner.setup(self)

    def _allocate(self, params: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The stacked (K, out, in) weights and (K, out) biases from K members' [(W, b)] per layer."""
        layers = range(len(self.spec.sizes) - 1)
        return ([torch.stack([p[l][0] for p in params]).to(self.device, self.dtype).contiguous() for l in layers],
                [torch.stack([p[l][1] for p in params]).to(self.device, self.dtype).contiguous() for l in layers])

    def _make_optimizer(self, settings: list, needs_gradients: bool):
        return make_optimizer(self, settings, needs_gradients)

    def _per_member(self, value) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=self.dtype).flatten().to(self.device)
        if t.numel() == 1:
            t = t.expand(self.K).clone()
        if t.numel() != self.K:
            raise ValueError(f"expected 1 or {self.K} per-member values, got {t.numel()}")
        return t

    def _update_factors(self):
        """Cache (K,1,1) step sizes and the decay factor 1 - alpha * lambda."""
        self._alpha = self.step_size.view(-1, 1, 1)
        self._decay = (1.0 - self.step_size * self.weight_decay)
        self._has_decay = bool((self.weight_decay != 0).any())

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, StepResult]:
        """Logits (K, B, C) for inputs x (K, B, in), and the forward tensors."""
        inputs, pre = [x], []
        h = x
        for l, act in enumerate(self.acts):
            z = torch.baddbmm(self.b[l].unsqueeze(1), h, self.W[l].transpose(1, 2))
            h = act.forward(z)
            pre.append(z)
            inputs.append(h)
        logits = torch.baddbmm(self.b[-1].unsqueeze(1), h, self.W[-1].transpose(1, 2))
        return logits, StepResult(inputs, pre)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One test-then-train SGD step on batch (x (K,B,in), y (K,B)); accumulates loss and hits."""
        self.t += 1
        logits, fwd = self.forward(x)
        if self.loss == "squared_error":  # regression (SPEC 2): no accuracy
            loss_sum, _, grad = squared_error(logits, y)
        else:
            loss_sum, correct, grad = cross_entropy(logits, y, self.eye[y])
            self.correct += correct
        self.loss_sum += loss_sum
        if self.optimizer.fused:
            self._sgd_backward(grad.mul_(self._alpha), fwd)
        else:
            self._grad_backward(grad, fwd)
        if self.learner is not None:
            self.learner.after_step(self, fwd)
        return fwd

    def _sgd_backward(self, delta: torch.Tensor, fwd: StepResult):
        """Backpropagate alpha-scaled ``delta`` and apply W -= alpha (grad + lambda W) per layer."""
        rank_one = delta.shape[1] == 1
        for l in range(len(self.W) - 1, -1, -1):
            W, b, h_in = self.W[l], self.b[l], fwd.inputs[l]
            prev = None
            if l > 0:  # delta of the layer below, with this layer's weights before the update
                prev = self.acts[l - 1].backward(torch.bmm(delta, W), fwd.pre[l - 1], fwd.inputs[l])
            if self._has_decay:
                W.mul_(self._decay.view(-1, 1, 1))
                b.mul_(self._decay.view(-1, 1))
            if rank_one:
                W.addcmul_(delta.transpose(1, 2), h_in, value=-1.0)
                b.sub_(delta.squeeze(1))
            else:
                W.baddbmm_(delta.transpose(1, 2), h_in, alpha=-1.0)
                b.sub_(delta.sum(dim=1))
            delta = prev

    def _grad_backward(self, delta: torch.Tensor, fwd: StepResult):
        """Backpropagate ``delta`` = dL/dlogits and materialise every layer's gradient (each layer's
        delta for the layer below uses its weights before the update); then the learner may
        transform them (``transform_gradients``) and the optimiser steps, layer by layer."""
        grads = self._grad_buffers()  # reused (fresh multi-MB temporaries cost page faults every step)
        for l in range(len(self.W) - 1, -1, -1):
            gW, gb = grads[l]
            if delta.shape[1] == 1:
                torch.mul(delta.transpose(1, 2), fwd.inputs[l], out=gW)
            else:
                torch.bmm(delta.transpose(1, 2), fwd.inputs[l], out=gW)
            torch.sum(delta, dim=1, out=gb)
            if l > 0:  # delta of the layer below
                delta = self.acts[l - 1].backward(torch.bmm(delta, self.W[l]), fwd.pre[l - 1], fwd.inputs[l])
        if self.learner is not None and self.learner.transforms_gradients:
            self.learner.transform_gradients(self, grads)
        for l in range(len(self.W) - 1, -1, -1):
            self.optimizer.update(l, *grads[l])

    def _grad_buffers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if not hasattr(self, "_gbuf"):
            self._gbuf = [(torch.empty_like(W), torch.empty_like(b)) for W, b in zip(self.W, self.b)]
        return self._gbuf

    def train(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1):
        """Train on a chunk (x (K,n,in), y (K,n)) in consecutive batches of ``batch_size``."""
        n = x.shape[1]
        for s in range(0, n, batch_size):
            self.step(x[:, s : s + batch_size], y[:, s : s + batch_size])

    def take_totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss sum, correct count) per member since the last call, on the CPU; resets them."""
        out = self.loss_sum.to("cpu", copy=True), self.correct.to("cpu", copy=True)
        self.loss_sum.zero_()
        self.correct.zero_()
        return out

    # ------------------------------------------------------------------ members
    def freeze(self, k: int):
        """Stop member k (diverged): zero its weights and step size so it stays finite and inert."""
        for W, b in zip(self.W, self.b):
            W[k].zero_()
            b[k].zero_()
        self.step_size[k] = 0.0
        self._update_factors()
        self.optimizer.freeze(k)
        if self.learner is not None:
            self.learner.freeze(self, k)

    def take_counts(self) -> dict:
        """The learner's per-task counts {metric: (K, L) int array} since the last call (SPEC 4)."""
        return self.learner.take_counts() if self.learner is not None else {}

    def member_state(self, k: int) -> dict:
        """Member k's whole training state (weights, hyperparameters, optimiser and learner
        state, generators), for its checkpoint."""
        parts = {"population": self, "optimizer": self.optimizer, "learner": self.learner}
        return {"t": self.t, **{name: member_state(obj, k, self.K) for name, obj in parts.items() if obj is not None}}

    def load_member_states(self, states: list[dict]) -> None:
        """Restore all K members from ``member_state`` cut-outs (same settings, any packing)."""
        steps = {s["t"] for s in states}
        if len(steps) != 1:
            raise ValueError(f"members to resume together must have taken the same number of steps, got {sorted(steps)}")
        self.t = steps.pop()
        load_member_states(self, [s["population"] for s in states])
        self._update_factors()
        load_member_states(self.optimizer, [s["optimizer"] for s in states])
        if self.learner is not None:
            load_member_states(self.learner, [s["learner"] for s in states])

    def parameters_of(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Member k's [(W, b)] per linear layer, as CPU copies."""
        return [(W[k].detach().cpu().clone(), b[k].detach().cpu().clone()) for W, b in zip(self.W, self.b)]

    # ------------------------------------------------------------------ probes (read-only)
    # The measurement interface (plasticity_lab.probes); the reference backend answers it too.
    @torch.no_grad()
    def hidden_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-activation features [h1 .. hL], each (K, B, H), for inputs x (K, B, in)."""
        return self.forward(x)[1].inputs[1:]

    def stacked_parameters(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(W (K, out, in), b (K, out))] per linear layer: the live tensors, to be read, not written."""
        return list(zip(self.W, self.b))

    @torch.no_grad()
    def example_deltas(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-example backward quantities of the per-example loss l_i = CE(logits_i, y_i)
        (regression: l_i = (y_hat_i - y_i)^2).

        Returns (inputs [x, h1 .. hL], deltas [D_1 .. D_{L+1}]) with D_l[i] = dl_i / dz_l[i]
        the gradient w.r.t. the pre-activation of linear layer l, each (K, S, n); the
        per-example gradient of layer l is D_l[i] (x) inputs[l-1][i] (weights) and D_l[i] (bias).
        """
        logits, fwd = self.forward(x)
        if self.loss == "squared_error":
            delta = 2.0 * (logits - y.unsqueeze(-1))
        else:
            delta = torch.softmax(logits, dim=-1) - self.eye[y]
        deltas = [delta]
        for l in range(len(self.W) - 1, 0, -1):
            delta = self.acts[l - 1].backward(torch.bmm(delta, self.W[l]), fwd.pre[l - 1], fwd.inputs[l])
            deltas.append(delta)
        return fwd.inputs, deltas[::-1]
