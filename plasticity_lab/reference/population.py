"""The reference learner behind the population interface, one network at a time.

Lets the runner drive K reference networks exactly like the engine (same data chunks,
same recording), so engine-vs-reference comparisons run through the same code path.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..learners import declared
from ..network import NetworkSpec
from .learner import ReferenceLearner


class ReferencePopulation:
    """K ReferenceLearners (``members``, one network each, of one architecture) with the engine's
    ``train`` / ``take_totals`` / ``take_counts`` / ``freeze`` interface."""

    def __init__(self, members: list[ReferenceLearner]):
        self.members = list(members)
        self.spec = self.members[0].spec
        self.K = len(self.members)
        self.loss_sum = [0.0] * self.K
        self.correct = [0] * self.K
        self.frozen = [False] * self.K

    @classmethod
    def from_settings(cls, spec: NetworkSpec, settings: list, device="cpu", dtype=torch.float32,
                      loss: str = "cross_entropy"):
        """One ReferenceLearner per member's parsed RunSettings: its optimiser settings, its readable
        learner (the learner's declaration, plasticity_lab/learners.py) and its normalisation."""
        return cls([ReferenceLearner(spec, s.seed, s.optimizer, s.learner.weight_decay, device,
                                     learner=declared()[s.learner.name].build("reference", [s.learner]),
                                     dtype=dtype, loss=loss, norm=s.network.norm) for s in settings])

    def train(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1) -> None:
        for k, member in enumerate(self.members):
            if self.frozen[k]:
                continue
            for s in range(0, x.shape[1], batch_size):
                loss, correct = member.step(x[k, s : s + batch_size], y[k, s : s + batch_size])
                self.loss_sum[k] += loss
                self.correct[k] += correct

    def take_totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.tensor(self.loss_sum, dtype=torch.float64), torch.tensor(self.correct)
        self.loss_sum = [0.0] * self.K
        self.correct = [0] * self.K
        return out

    def take_counts(self) -> dict:
        """{metric: (K, L) int array} of the members' reset counts since the last call."""
        per_member = [m.take_counts() for m in self.members]
        return {name: np.array([c[name] for c in per_member], dtype=np.int64) for name in per_member[0]}

    def freeze(self, k: int) -> None:
        self.frozen[k] = True

    def utility_stats(self) -> dict:
        """{hidden layer (1-based): u_hat (K, H)} of the members' reset learners, where they keep one
        (the probes' interface, as the engine's learners answer it)."""
        out = {}
        for l in range(self.spec.num_hidden):
            per_member = [m.learner.utility(l) if m.learner is not None else None for m in self.members]
            if any(u is not None for u in per_member):
                H = self.spec.sizes[l + 1]
                out[l + 1] = torch.stack([torch.full((H,), float("nan")) if u is None else u for u in per_member])
        return out

    def member_state(self, k: int) -> dict:
        """Member k whole (network, optimiser, reset learner and its generators), for its checkpoint."""
        return {"member": copy.deepcopy(self.members[k]), "frozen": self.frozen[k]}

    def load_member_states(self, states: list[dict]) -> None:
        self.members = [state["member"] for state in states]
        self.frozen = [state["frozen"] for state in states]

    def parameters_of(self, k: int):
        return self.members[k].parameters()

    # ------------------------------------------------------------------ probes (read-only)
    # The engine's measurement interface (plasticity_lab.probes), one member at a time.
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, C) for inputs x (K, B, in) (normalisation layers in eval mode)."""
        with _evaluating(self.members):
            return torch.stack([m.net(x[k]) for k, m in enumerate(self.members)])

    @torch.no_grad()
    def hidden_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-activation features [h1 .. hL], each (K, B, H): the inputs of linear layers 2 .. L+1."""
        with _evaluating(self.members):
            per_member = [_linear_io(m.net, x[k])[0][1:] for k, m in enumerate(self.members)]
        return [torch.stack(layer) for layer in zip(*per_member)]

    def stacked_parameters(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(W (K, out, in), b (K, out))] per linear layer (copies)."""
        params = [m.parameters() for m in self.members]
        return [(torch.stack([p[l][0] for p in params]), torch.stack([p[l][1] for p in params]))
                for l in range(len(params[0]))]

    def example_deltas(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(inputs [x, h1 .. hL], deltas [dl_i/dz_1 .. dl_i/dz_{L+1}]) by autograd, each (K, S, n).

        l_i is example i's own cross-entropy; with reduction="sum" the gradient of the sum
        w.r.t. example i's pre-activations is that example's alone (no layer mixes
        examples). Uses ``torch.autograd.grad``, so no ``.grad`` is written.
        """
        inputs, deltas = [], []
        with torch.enable_grad(), _evaluating(self.members):
            for k, m in enumerate(self.members):
                ins, outs, logits = _linear_io(m.net, x[k])
                if m.loss == "squared_error":
                    loss = ((logits[:, 0] - y[k]) ** 2).sum()
                else:
                    loss = F.cross_entropy(logits, y[k], reduction="sum")
                deltas.append([d.detach() for d in torch.autograd.grad(loss, outs)])
                inputs.append([h.detach() for h in ins])
        return [torch.stack(t) for t in zip(*inputs)], [torch.stack(t) for t in zip(*deltas)]


@contextmanager
def _evaluating(members):
    """Probes measure, never train: BatchNorm uses (and keeps) its running statistics."""
    modes = [m.net.training for m in members]
    for m in members:
        m.net.eval()
    try:
        yield
    finally:
        for m, mode in zip(members, modes):
            m.net.train(mode)


def _linear_io(net: nn.Module, x: torch.Tensor):
    """Run ``net`` on x; return (inputs, outputs) of its nn.Linear layers in call order, and the logits."""
    ins, outs = [], []

    def hook(module, args, out):
        ins.append(args[0])
        outs.append(out)

    handles = [mod.register_forward_hook(hook) for mod in net.modules() if isinstance(mod, nn.Linear)]
    try:
        logits = net(x)
    finally:
        for h in handles:
            h.remove()
    return ins, outs, logits
