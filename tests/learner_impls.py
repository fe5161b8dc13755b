"""Each implementation of the reset learners behind one small interface, for the oracle tests.

The oracle tests (tests/test_oracles.py) set weights, running statistics, ages and
accumulators by hand, let a learner act once, and compare with numbers computed by hand from
SPEC 3.3-3.6. They drive every implementation through the same calls, one at a time, so a bug
shared by two implementations is still caught: the engine, the reference and the compiled
kernel. To check another backend, write one more class with these methods and add it to
``IMPLEMENTATIONS``.

Interface (one network; hidden layer ``l`` is 0-based; per-layer hyperparameters are lists):

- ``Impl(spec, learner, hyperparameters, seed=0, optimizer='sgd', step_size=0.01, dtype=float64,
  weight_decay=0.0, **opt)`` (``weight_decay``: the learner's coupled weight decay; ``opt``: the
  optimiser's other settings, e.g. momentum, betas)
- ``set_parameters([(W, b), ...])`` / ``parameters()``: every linear layer's weights and biases;
- ``set_unit_state(name, l, values)`` / ``unit_state(name, l)``: per-unit ``age``, ``f``, ``u``;
- ``set_accumulator(l, value, side=None)`` / ``accumulator(l, side=None)``: the fractional
  replacement accumulator (cbp; ``side`` 'high': its high-utility pass; adapted: 'low' or 'high');
- ``utility(l)``: the bias-corrected utility u_hat (the probes' interface);
- ``after_step(features)``: the learner alone, after one more step whose hidden-layer
  post-activations were ``features`` (one (B, H) tensor per hidden layer);
- ``step(x, y)``: one whole training step (forward, loss, optimiser, learner);
- ``optimizer_state(l)``: {'W': (m, v, steps), 'b': (m, v, steps)} of linear layer l (Adam);
- ``counts()``: the learner's per-layer counts since the last call;
- ``checkpoint()`` / ``restored(state)``: the member's checkpoint state (through torch.save)
  and a fresh object of the same settings resumed from it.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from conftest import optimizer as optimizer_settings
from plasticity_lab.engine import Population
from plasticity_lab.engine.population import StepResult
from plasticity_lab.learners import declared
from plasticity_lab.reference import ReferenceLearner, ReferencePopulation
from plasticity_lab.kernel import KERNEL_LEARNER_CLASSES, KernelPopulation
from plasticity_lab.kernel.learners.adapted import adapted_decide, adapted_event, adapted_statistics
from plasticity_lab.kernel.learners.cbp import cbp_decide, cbp_statistics
from plasticity_lab.kernel.step import clamp_hidden, sync_abs_sums


def _through_file(state):
    """``state`` after a round trip through torch.save / torch.load, as a checkpoint file makes it."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def adam_step_counts(opt, which: int, l: int) -> torch.Tensor:
    """The engine Adam's per-element step counts of W[l] (which=0) or b[l] (which=1), as a per-element
    counter would hold them: t - the step at which the element's row or column was last reset."""
    p = (opt.pop.W, opt.pop.b)[which][l]
    last = torch.zeros(p.shape, dtype=torch.long, device=p.device)
    if opt.row_reset[which][l] is not None:
        rows = opt.row_reset[which][l]
        last = torch.maximum(last, rows.view(rows.shape + (1,) * (p.dim() - 2)))
    if which == 0 and opt.col_reset[l] is not None:
        last = torch.maximum(last, opt.col_reset[l].unsqueeze(1))
    return opt.pop.t - last


def _accumulators(learner, side):
    """The accumulators of pass ``side``: adapted's ``acc[side]``; cbp's ``acc`` (None or 'low') and
    ``acc_high`` ('high', the high-utility pass), one per member (engine) or per layer."""
    if isinstance(learner.acc, dict):
        return learner.acc[side]
    return learner.acc_high if side == "high" else learner.acc


class _Impl:
    def __init__(self, spec, learner, hyperparameters, seed=0, optimizer="sgd", step_size=0.01,
                 dtype=torch.float64, weight_decay=0.0, **opt):
        self.args = (spec, learner, dict(hyperparameters))
        self.kwargs = dict(seed=seed, optimizer=optimizer, step_size=step_size, dtype=dtype, weight_decay=weight_decay,
                           **opt)
        self.spec, self.dtype = spec, dtype
        self._build(spec, learner, dict(hyperparameters), seed, optimizer, step_size, dtype, weight_decay, **opt)

    def restored(self, state):
        """A fresh implementation with the same settings, resumed from ``checkpoint()``'s state."""
        fresh = type(self)(*self.args, **self.kwargs)
        fresh._load(_through_file(state))
        return fresh

    def _tensor(self, values):
        return torch.as_tensor(values, dtype=self.dtype)


class EngineImpl(_Impl):
    """The population engine (plasticity_lab.engine) with K = 1."""

    name = "engine"

    def _build(self, spec, learner, hyper, seed, optimizer, step_size, dtype, weight_decay, **opt):
        # a per-layer list is one member's value: the engine takes one entry per member
        hyper = {k: [v] if isinstance(v, (list, tuple)) else v for k, v in hyper.items()}
        cls = declared()[learner].engine  # None: the optimiser alone (bp, l2)
        self.learner = cls(**hyper) if cls is not None else None
        self.pop = Population(spec, [seed], optimizer_settings(optimizer, step_size=step_size, **opt), weight_decay,
                              dtype=dtype, learner=self.learner)
        self._ages_set = False

    def set_parameters(self, params):
        for l, (W, b) in enumerate(params):
            self.pop.W[l][0] = self._tensor(W)
            self.pop.b[l][0] = self._tensor(b)

    def parameters(self):
        return [(W.clone(), b.clone()) for W, b in self.pop.parameters_of(0)]

    def set_unit_state(self, name, l, values):
        getattr(self.learner, name)[l][0] = self._tensor(values)
        self._ages_set |= name == "age"

    def unit_state(self, name, l):
        return getattr(self.learner, name)[l][0].clone()

    def set_accumulator(self, l, value, side=None):
        _accumulators(self.learner, side)[0, l] = value

    def accumulator(self, l, side=None):
        return float(_accumulators(self.learner, side)[0, l])

    def utility(self, l):
        return self.learner.utility(l)[0]

    def _sync_maturity(self):
        """Ages set by hand: rebuild the host-side maturity schedule from them (as after a resume)."""
        if self._ages_set:
            self.learner.after_load()
            self._ages_set = False

    @torch.no_grad()
    def after_step(self, features):
        self._sync_maturity()
        self.pop.t += 1
        B = features[0].shape[0]
        inputs = [torch.zeros(1, B, self.spec.sizes[0], dtype=self.dtype)]
        inputs += [self._tensor(h).unsqueeze(0) for h in features]
        self.learner.after_step(self.pop, StepResult(inputs, inputs[1:]))

    def step(self, x, y):
        self._sync_maturity()
        self.pop.train(self._tensor(x).unsqueeze(0), torch.as_tensor(y).unsqueeze(0), batch_size=len(y))

    def optimizer_state(self, l):
        opt = self.pop.optimizer
        return {part: (opt.m[which][l][0].clone(), opt.v[which][l][0].clone(), adam_step_counts(opt, which, l)[0])
                for which, part in enumerate(("W", "b"))}

    def counts(self):
        return {name: c[0].tolist() for name, c in self.pop.take_counts().items()}

    def checkpoint(self):
        return self.pop.member_state(0)

    def _load(self, state):
        self.pop.load_member_states([state])


class ReferenceImpl(_Impl):
    """The readable reference (plasticity_lab.reference): nn.Module, autograd, torch.optim."""

    name = "reference"

    def _build(self, spec, learner, hyper, seed, optimizer, step_size, dtype, weight_decay, **opt):
        cls = declared()[learner].implementation("reference")
        self.learner = cls(**hyper) if cls is not None else None
        self.ref = ReferenceLearner(spec, seed, optimizer_settings(optimizer, step_size=step_size, **opt), weight_decay,
                                    learner=self.learner, dtype=dtype)

    @torch.no_grad()
    def set_parameters(self, params):
        for layer, (W, b) in zip(self.ref.linears, params):
            layer.weight.copy_(self._tensor(W))
            layer.bias.copy_(self._tensor(b))

    def parameters(self):
        return [(m.weight.detach().clone(), m.bias.detach().clone()) for m in self.ref.linears]

    def set_unit_state(self, name, l, values):
        getattr(self.learner, name)[l] = self._tensor(values).clone()

    def unit_state(self, name, l):
        return getattr(self.learner, name)[l].clone()

    def set_accumulator(self, l, value, side=None):
        _accumulators(self.learner, side)[l] = value

    def accumulator(self, l, side=None):
        return float(_accumulators(self.learner, side)[l])

    def utility(self, l):
        return self.learner.utility(l)

    def after_step(self, features):
        self.learner.after_step([self._tensor(h) for h in features])

    def step(self, x, y):
        self.ref.step(self._tensor(x), torch.as_tensor(y))

    def optimizer_state(self, l):
        layer = self.ref.linears[l]
        out = {}
        for part, p in (("W", layer.weight), ("b", layer.bias)):
            s = self.ref.optimizer.state[p]
            out[part] = (s["exp_avg"].clone(), s["exp_avg_sq"].clone(), s["step"].clone())
        return out

    def counts(self):
        return self.ref.take_counts()

    def _population(self):
        return ReferencePopulation([self.ref])

    def checkpoint(self):
        return self._population().member_state(0)

    def _load(self, state):
        pop = self._population()
        pop.load_member_states([state])
        self.ref = pop.members[0]
        self.learner = self.ref.learner


class KernelImpl(EngineImpl):
    """The compiled kernel backend (plasticity_lab.kernel) with K = 1. ``step`` is its compiled
    training step; ``after_step`` runs the kernel learner's compiled parts in the order the step
    runs them (decide how many units are due, the running statistics, the clip the step fuses into
    its update, then the event: replacement / rescaling). It runs bp, l2, cbp and adapted with
    SGD; what else the tests ask is skipped (README, Backends)."""

    name = "kernel"

    def _build(self, spec, learner, hyper, seed, optimizer, step_size, dtype, weight_decay, **opt):
        if learner not in KERNEL_LEARNER_CLASSES or optimizer != "sgd":
            pytest.skip(f"the kernel backend does not run learner={learner} with optimizer={optimizer}")
        hyper = {k: [v] if isinstance(v, (list, tuple)) else v for k, v in hyper.items()}
        self.learner = KERNEL_LEARNER_CLASSES[learner](**hyper)
        self.pop = KernelPopulation(spec, [seed], optimizer_settings(optimizer, step_size=step_size, **opt), weight_decay,
                                    dtype=dtype, learner=self.learner)
        self._ages_set = False

    @torch.no_grad()
    def after_step(self, features):
        pop, lrn, layout = self.pop, self.learner, self.pop.layout
        L, B, table = self.spec.num_hidden, features[0].shape[0], layout.table
        np_dtype = np.dtype(str(self.dtype).removeprefix("torch."))
        h = pop._scratch(B)[1]  # the step's activations where the kernel keeps them
        for l, feature in enumerate(features):
            h[:, layout.uoff[l] : layout.uoff[l] + feature.shape[1]] = self._tensor(feature).numpy()
        lp, lpt = lrn.lp[0], lrn.lpt[0]
        units = lrn.units.numpy()[:, 0]
        theta = pop.theta.numpy()[0]
        n_due = np.zeros((2, L), dtype=np.int64)
        flags, hyper, _ = pop._member_settings(0, B)
        hidden = layout.num_hidden_units
        if isinstance(lrn, KERNEL_LEARNER_CLASSES["cbp"]):
            coins = lrn.coins_ahead(0, 2 * L)  # at most one per layer and pass
            _, used = cbp_decide(table, lp, units[0], lrn.acc[0], lrn.acc_high[0], lrn.accumulate, coins, 0, n_due, L)
            lrn.coins_used(0, used)
            sync_abs_sums(table, theta, lrn.abs_sums[0], lrn.abs_sums[1], L, True, True)
            cbp_statistics(table, lpt, units[0], units[1], units[2], h, lrn.abs_sums[0], lrn.abs_sums[1],
                           lrn.util_code, B, L, np.empty(hidden), np.empty(hidden), lrn.bias_corr[0])
            if n_due.any():
                lrn.handle_event(pop, 0, n_due, flags)  # draws ahead, then the compiled cbp_event
        else:
            per_pass = lrn.schedule == "per_pass"
            event = adapted_decide(table, lp, units[0], lrn.acc["low"][0], lrn.acc["high"][0], n_due, per_pass, L)
            if not (per_pass and event):  # (a per_pass event updates u itself, pass by pass)
                adapted_statistics(table, lp, lpt, units[1], h, B, L, per_pass)
            clip = lrn.clip_bound(0)
            if math.isfinite(clip) and not per_pass:  # the clamp the step fuses into its update
                clamp_hidden(table, theta, L, np_dtype.type(clip), n_due, True)
            if event:  # (no update ran: the rescaled layers are clamped whole)
                nz, nzc = pop._scratch(B)[3:5]
                work = pop.work_space()
                adapted_event(table, theta, lp, lpt, units[0], units[1], h, B, n_due, lrn.factors_np[0],
                              lrn.counts_np[0], per_pass, clip if math.isfinite(clip) else -1.0, True, nz, nzc,
                              work["work"][2], work["marks"], L)

    def step(self, x, y):
        self.pop.train(self._tensor(x).unsqueeze(0), torch.as_tensor(y).unsqueeze(0), batch_size=len(y))


IMPLEMENTATIONS = {impl.name: impl for impl in (EngineImpl, ReferenceImpl, KernelImpl)}


def assert_checkpoint_continues_exactly(whole, x, y, at: int) -> None:
    """``whole`` trained on the first ``at`` examples, checkpointed (through torch.save) and restored
    into a fresh object: both then train on the rest and must end with identical weights."""
    for s in range(at):
        whole.step(x[s : s + 1], y[s : s + 1])
    resumed = whole.restored(whole.checkpoint())
    for lrn in (whole, resumed):
        for s in range(at, len(x)):
            lrn.step(x[s : s + 1], y[s : s + 1])
    for (Wa, ba), (Wb, bb) in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(Wa, Wb) and torch.equal(ba, bb)
