"""The compiled kernel backend (plasticity_lab/kernel/) against the readable reference, member by member.

Every comparison trains the kernel and the reference learner (nn.Module + autograd +
torch.optim, reference/) step by step on the same data and requires: the loss of every step
close, the learner's ages equal after every step (so the same units were reset / rescaled at
the same steps), the per-layer counts equal, and the weights within float32 rounding at the
end (float64: ~1e-10). Inputs are sparse (70% zeros) so the kernel's non-zero-input paths run.
Networks are small (784 -> 32 x 3 -> 10) and rates high so that resets happen within a few
hundred steps.
"""

import copy

import numpy as np
import pytest
import torch

from plasticity_lab.activations import ACTIVATIONS
from plasticity_lab.config import ConfigError, parse_config
from plasticity_lab.engine import Population
from plasticity_lab.kernel import KernelPopulation
from plasticity_lab.kernel.learners import KernelAdaptedRescaling as KA
from plasticity_lab.kernel.learners import KernelContinualBackprop as KC
from plasticity_lab.kernel.learners.base import age_one
from plasticity_lab.network import NetworkSpec
from plasticity_lab.reference import ReferenceLearner
from plasticity_lab.reference.learners import adapted as RA, cbp as RC
from plasticity_lab.seeding import UniformStream, generator

from conftest import compose_config, optimizer

FAST = dict(replacement_rate=1e-2, maturity_threshold=20)
UTIL_TYPES = ("contribution", "adaptable_contribution", "zero_contribution", "weight", "adaptation",
              "feature_by_input", "random")


def _data(K, n, seed=0, n_in=784, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(K, n, n_in, generator=g)
    return (x * (x > 0.7)).to(dtype), torch.randint(0, 10, (K, n), generator=g)


def _spec(activation="relu", width=32, depth=3, n_in=784, n_out=10):
    return NetworkSpec.mlp(n_in, width, depth, n_out, activation)


def _max_diff(a, b):
    return max(max((Wa - Wb).abs().max().item(), (ba - bb).abs().max().item()) for (Wa, ba), (Wb, bb) in zip(a, b))


def _per_member(kwargs):
    return {k: [v] if isinstance(v, list) else v for k, v in kwargs.items()}


def _kernel_vs_reference(spec, kernel_learner, ref_learner, steps=300, tol=2e-5, seed=3, step_size=0.01,
                         batch_size=1, dtype=torch.float32, regression=False, chunk=1, **opt):
    """Train both on the same data; ages equal after every ``chunk`` steps (the kernel trains a chunk
    per call: 1 = step by step; larger chunks run the kernel's within-chunk paths: incremental |w|
    sums, events in the middle of a call, the clip of the touched rows), losses close, weights close
    at the end, counts equal. Returns the counts."""
    n = steps * batch_size
    if regression:  # binary inputs, a real-valued target (SPEC 2)
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 2, (1, n, spec.sizes[0]), generator=g).to(dtype)
        y = torch.randn(1, n, generator=g, dtype=torch.float64).to(dtype)
    else:
        x, y = _data(1, n, seed=seed, dtype=dtype)
    loss = "squared_error" if regression else "cross_entropy"
    weight_decay = opt.pop("weight_decay", 0.0)
    settings = optimizer(step_size=step_size, **opt)
    kp = KernelPopulation(spec, [seed], settings, weight_decay, learner=kernel_learner, dtype=dtype, loss=loss)
    ref = ReferenceLearner(spec, seed, settings, weight_decay, learner=ref_learner, dtype=dtype, loss=loss)
    rel = 1e-3 if dtype == torch.float32 else 1e-9
    span = chunk * batch_size
    for s in range(0, n, span):
        ref_loss = ref_correct = 0
        for b in range(s, min(n, s + span), batch_size):
            loss, correct = ref.step(x[0, b : b + batch_size], y[0, b : b + batch_size])
            ref_loss, ref_correct = ref_loss + loss, ref_correct + correct
        kp.train(x[:, s : s + span], y[:, s : s + span], batch_size)
        loss_sum, correct = kp.take_totals()
        assert loss_sum[0].item() == pytest.approx(ref_loss, rel=rel, abs=rel / 10), s
        assert int(correct[0]) == ref_correct, s
        if ref_learner is not None:
            for l in range(spec.num_hidden):
                assert torch.equal(kernel_learner.age[l][0], ref_learner.age[l]), (s, l)
    diff = _max_diff(kp.parameters_of(0), ref.parameters())
    assert diff < tol, diff
    counts = {k: v[0].tolist() for k, v in kp.take_counts().items()}
    assert counts == ref.take_counts()
    return counts


# ----------------------------------------------------------------------------- kernel vs reference
@pytest.mark.parametrize("util_type", UTIL_TYPES)
def test_cbp_every_util_type_matches_reference(util_type):
    counts = _kernel_vs_reference(_spec("relu"), KC(util_type=util_type, **FAST), RC.ContinualBackprop(util_type=util_type, **FAST))
    assert min(counts["units_reset"]) > 0


def test_cbp_coins_random_utility_and_bias_correction_match_reference():
    kwargs = dict(util_type="random", accumulate=False, bias_correction=True, replacement_rate=2e-3, maturity_threshold=20)
    counts = _kernel_vs_reference(_spec("tanh"), KC(**kwargs), RC.ContinualBackprop(**kwargs))
    assert min(counts["units_reset"]) > 0


def test_cbp_coin_rule_with_accumulated_contribution_and_bias_correction_matches_reference():
    kwargs = dict(util_type="adaptable_contribution", accumulate=False, bias_correction=True, replacement_rate=3e-3,
                  maturity_threshold=10)
    counts = _kernel_vs_reference(_spec("tanh"), KC(**kwargs), RC.ContinualBackprop(**kwargs), dtype=torch.float64,
                                  tol=1e-10)
    assert min(counts["units_reset"]) > 0


def test_cbp_reinit_without_the_activation_gain_matches_reference():
    """``reinit: no_gain`` ([P]'s CBP): fresh rows uniform in [-sqrt(3 / fan_in), +]."""
    kwargs = dict(reinit="no_gain", util_type="contribution", **FAST)
    counts = _kernel_vs_reference(_spec("relu"), KC(**kwargs), RC.ContinualBackprop(**kwargs), dtype=torch.float64,
                                  tol=1e-10)
    assert min(counts["units_reset"]) > 0


TWO_PASS = [  # [P]'s two-pass CBP (high_replacement_rate, SPEC 5): (util_type, kwargs, dtype, tol)
    ("contribution", dict(replacement_rate=1e-2, high_replacement_rate=2e-2, maturity_threshold=20, reinit="no_gain"),
     torch.float64, 1e-10),
    ("adaptable_contribution", dict(replacement_rate=1e-2, high_replacement_rate=5e-3, maturity_threshold=15,
                                    bias_correction=True), torch.float32, 2e-5),
    ("random", dict(replacement_rate=3e-3, high_replacement_rate=[2e-3, 0.0, 4e-3], maturity_threshold=10,
                    accumulate=False), torch.float64, 1e-10),  # coins of both passes, keys drawn per pass
    ("weight", dict(replacement_rate=[0.0, 1e-2, 2e-2], high_replacement_rate=[2e-2, 1e-2, 0.0],
                    maturity_threshold=10), torch.float64, 1e-10),  # a layer with the high pass alone
]


@pytest.mark.parametrize("util_type,kwargs,dtype,tol", TWO_PASS)
@pytest.mark.parametrize("chunk", [1, 100])
def test_cbp_two_pass_matches_reference(util_type, kwargs, dtype, tol, chunk):
    """The high-utility pass after the low one, each with its own accumulator (or coins), in the
    same steps and order as the reference, step by step and with events inside a chunk."""
    counts = _kernel_vs_reference(_spec("tanh"), KC(util_type=util_type, **_per_member(kwargs)),
                                  RC.ContinualBackprop(util_type=util_type, **kwargs), dtype=dtype, tol=tol,
                                  chunk=chunk)
    high = kwargs["high_replacement_rate"]
    for l in range(3):  # every layer with a rate replaced units
        if kwargs["replacement_rate"] if np.isscalar(kwargs["replacement_rate"]) else kwargs["replacement_rate"][l]:
            assert counts["units_reset"][l] > 0
        if high if np.isscalar(high) else high[l]:
            assert counts["units_reset"][l] > 0


def test_cbp_two_pass_replaces_highest_utility_units_on_the_default_network():
    """Two-pass CBP on 3 x 100 relu against the torch engine (the same engine learner class): the
    same units at the same steps (ages equal), weights to float32 rounding; the high pass acted
    (the reference's high-pass-only counts: it replaced units the low pass alone would not)."""
    spec = _spec("relu", width=100)
    x, y = _data(1, 400, seed=6)
    kwargs = dict(replacement_rate=2e-3, high_replacement_rate=5e-3, maturity_threshold=50, util_type="contribution")
    kp = KernelPopulation(spec, [6], optimizer(step_size=0.01), learner=KC(**kwargs))
    ep = Population(spec, [6], optimizer(step_size=0.01), learner=__import__("plasticity_lab.engine.learners", fromlist=["x"])
                    .ContinualBackprop(**kwargs))
    kp.train(x, y)
    ep.train(x, y)
    for l in range(3):
        assert torch.equal(kp.learner.age[l], ep.learner.age[l])
    counts = kp.take_counts()["units_reset"]
    assert counts.tolist() == ep.take_counts()["units_reset"].tolist() and counts.min() > 0
    assert _max_diff(kp.parameters_of(0), ep.parameters_of(0)) < 1e-4


def test_cbp_per_layer_rates_maturities_decays_and_a_switched_off_layer_match_reference():
    kwargs = dict(replacement_rate=[1e-2, 0.0, 2e-2], maturity_threshold=[20, 10, 30], decay_rate=[0.99, 0.9, 0.95],
                  util_type="contribution")
    counts = _kernel_vs_reference(_spec("tanh"), KC(**_per_member(kwargs)), RC.ContinualBackprop(**kwargs),
                                  dtype=torch.float64, tol=1e-10)
    assert counts["units_reset"][1] == 0 and min(counts["units_reset"][0], counts["units_reset"][2]) > 0


def test_cbp_many_replacements_per_step_match_reference():
    kwargs = dict(replacement_rate=0.1, maturity_threshold=5, util_type="adaptable_contribution")
    counts = _kernel_vs_reference(_spec("tanh", width=64), KC(**kwargs), RC.ContinualBackprop(**kwargs), steps=60)
    assert min(counts["units_reset"]) > 3 * 60


def test_cbp_batches_momentum_and_weight_decay_match_reference():
    counts = _kernel_vs_reference(_spec("relu"), KC(**FAST), RC.ContinualBackprop(**FAST), steps=150, batch_size=4,
                                  momentum=0.9, weight_decay=1e-3, tol=1e-4)
    assert min(counts["units_reset"]) > 0


def test_l2_weight_decay_and_a_short_last_batch_match_reference():
    """10 examples in batches of 4: steps of 4, 4 and 2 (the engine's rule), in float64."""
    spec = _spec("tanh")
    x, y = _data(1, 30, seed=1, dtype=torch.float64)
    kp = KernelPopulation(spec, [1], optimizer(step_size=0.05), 1e-2, dtype=torch.float64)
    ref = ReferenceLearner(spec, 1, optimizer(step_size=0.05), 1e-2, dtype=torch.float64)
    for start in (0, 10, 20):
        kp.train(x[:, start : start + 10], y[:, start : start + 10], batch_size=4)
        for s in (0, 4, 8):
            ref.step(x[0, start + s : start + min(s + 4, 10)], y[0, start + s : start + min(s + 4, 10)])
    assert kp.t == 9
    assert _max_diff(kp.parameters_of(0), ref.parameters()) < 1e-12


ADAPTED_CASES = [
    ("relu", dict(c_low=-0.5, c_high=0.5, rho_low=1e-2, rho_high=5e-3, maturity_threshold=20, clip=None),
     torch.float32, 2e-5),
    ("relu", dict(c_low=-0.5, c_high=0.5, rho_low=1e-2, rho_high=5e-3, maturity_threshold=20, clip=0.05),
     torch.float32, 2e-5),  # clip below the initial weights: the first step clamps every entry
    ("tanh", dict(c_low=[0.5, -1.0, 2.0], c_high=[0.2, 0.5, -0.5], rho_low=[1e-2, 2e-2, 5e-3],
                  rho_high=[5e-3, 1e-2, 2e-2], maturity_threshold=[20, 10, 15], clip=1.0), torch.float64, 1e-10),
    ("tanh", dict(c_low=2.0, c_high=1.5, rho_low=2e-2, rho_high=2e-2, maturity_threshold=10, clip=0.3),
     torch.float64, 1e-10),
]


PER_PASS_CASES = [  # schedule per_pass ([P]'s "modified cfg" code, SPEC 5): each pass ages and averages
    ("relu", dict(c_low=-0.5, c_high=0.5, rho_low=1e-2, rho_high=5e-3, maturity_threshold=20), torch.float32, 2e-5),
    ("relu", dict(c_low=-0.5, c_high=0.5, rho_low=1e-2, rho_high=2e-2, maturity_threshold=10, clip=None),
     torch.float64, 1e-10),  # clamping off
    ("tanh", dict(c_low=[0.5, -1.0, 0.5], c_high=[0.2, 0.5, -0.5], rho_low=[1e-2, 0.0, 5e-3],
                  rho_high=[5e-3, 1e-2, 0.0], maturity_threshold=[20, 10, 0]), torch.float64, 1e-10),  # one pass
    # per layer; m = 0: a unit rescaled by the low pass is eligible again in the high pass
    ("tanh", dict(c_low=1.5, c_high=3.0, rho_low=5e-3, rho_high=5e-3, maturity_threshold=20), torch.float64,
     1e-10),  # factors > 1: the [-5, 5] clamp acts
]


@pytest.mark.parametrize("activation,kwargs,dtype,tol", PER_PASS_CASES)
@pytest.mark.parametrize("chunk,batch_size", [(1, 1), (100, 1), (100, 3)])
def test_adapted_per_pass_matches_reference(activation, kwargs, dtype, tol, chunk, batch_size):
    kwargs = dict(schedule="per_pass", **kwargs)
    learner = KA(**_per_member(kwargs))
    counts = _kernel_vs_reference(_spec(activation), learner, RA.AdaptedRescaling(**kwargs), dtype=dtype, tol=tol,
                                  chunk=chunk, batch_size=batch_size, steps=150)
    assert max(counts["units_rescaled_low"]) > 0 and max(counts["units_rescaled_high"]) > 0
    if kwargs["c_high"] == 3.0:  # rows tripled again and again, yet the largest weight is at the clamp bound 5
        assert 4.99 < max(W.abs().max().item() for W in learner._pop.W[:3]) < 5.01


@pytest.mark.parametrize("activation,kwargs,dtype,tol", ADAPTED_CASES)
def test_adapted_matches_reference(activation, kwargs, dtype, tol):
    counts = _kernel_vs_reference(_spec(activation), KA(**_per_member(kwargs)), RA.AdaptedRescaling(**kwargs),
                                  dtype=dtype, tol=tol)
    assert min(counts["units_rescaled_low"]) > 0 and min(counts["units_rescaled_high"]) > 0


@pytest.mark.parametrize("kernel,ref,dtype,tol", [
    (KC(bias_correction=True, **FAST), RC.ContinualBackprop(bias_correction=True, **FAST), torch.float64, 1e-10),
    (KC(util_type="feature_by_input", **FAST), RC.ContinualBackprop(util_type="feature_by_input", **FAST),
     torch.float32, 2e-5),
    (KA(c_low=[[0.5, -1.0, 2.0]], c_high=[[1.5, 0.5, -2.0]], rho_low=2e-2, rho_high=2e-2, maturity_threshold=10,
        clip=0.5),
     RA.AdaptedRescaling(c_low=[0.5, -1.0, 2.0], c_high=[1.5, 0.5, -2.0], rho_low=2e-2, rho_high=2e-2,
                        maturity_threshold=10, clip=0.5), torch.float64, 1e-10),
    (KA(rho_low=2e-2, rho_high=2e-2, maturity_threshold=10, clip=0.05),
     RA.AdaptedRescaling(rho_low=2e-2, rho_high=2e-2, maturity_threshold=10, clip=0.05), torch.float32, 2e-5),
])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_events_inside_a_chunk_match_reference(kernel, ref, dtype, tol, batch_size):
    """300 steps in chunks of 100 per call: the incremental |w| sums, the exact re-sums after a
    replacement and the clip of a rescaled layer's touched rows all run inside the kernel's loop."""
    counts = _kernel_vs_reference(_spec("tanh"), copy.deepcopy(kernel), copy.deepcopy(ref), dtype=dtype, tol=tol,
                                  chunk=100, batch_size=batch_size)
    assert min(min(c) for c in counts.values()) > 0


def test_adapted_with_batches_matches_reference():
    kwargs = dict(c_low=-0.5, c_high=0.5, rho_low=2e-2, rho_high=1e-2, maturity_threshold=10, clip=2.0)
    _kernel_vs_reference(_spec("relu"), KA(**kwargs), RA.AdaptedRescaling(**kwargs), steps=100, batch_size=8)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_matches_reference(activation):
    """bp in float64 (equal to ~1e-12) and cbp in float32, mixed per-layer widths."""
    spec = NetworkSpec((784, 24, 16, 20, 10), (activation,) * 3)
    _kernel_vs_reference(spec, None, None, steps=120, dtype=torch.float64, tol=1e-11)
    _kernel_vs_reference(spec, KC(**FAST), RC.ContinualBackprop(**FAST), steps=120, tol=5e-5)


def test_per_layer_activation_list_and_depth_one_and_five_match_reference():
    _kernel_vs_reference(NetworkSpec((784, 40, 10), ("gelu",)), KC(**FAST), RC.ContinualBackprop(**FAST), steps=150)
    spec = NetworkSpec.mlp(784, 16, 5, 10, ["relu", "relu", "tanh", "tanh", "relu"])
    kwargs = dict(c_low=-0.5, c_high=0.5, rho_low=2e-2, rho_high=1e-2, maturity_threshold=10, clip=10.0)
    _kernel_vs_reference(spec, KA(**kwargs), RA.AdaptedRescaling(**kwargs), steps=150, dtype=torch.float64, tol=1e-10)


@pytest.mark.parametrize("learner", ["bp", "cbp", "adapted"])
def test_squared_error_on_binary_inputs_matches_reference(learner):
    """Regression (SPEC 2): 20 binary inputs, 6 x 5 relu / tanh, one linear output."""
    spec = _spec("tanh", width=5, depth=6, n_in=20, n_out=1)
    if learner == "cbp":
        kwargs = dict(replacement_rate=0.05, maturity_threshold=5)
        pair = KC(**kwargs), RC.ContinualBackprop(**kwargs)
    elif learner == "adapted":
        kwargs = dict(c_low=0.5, c_high=0.2, rho_low=0.05, rho_high=0.05, maturity_threshold=5)
        pair = KA(**kwargs), RA.AdaptedRescaling(**kwargs)
    else:
        pair = None, None
    _kernel_vs_reference(spec, *pair, steps=400, regression=True, dtype=torch.float64, tol=1e-10)


def test_kernel_equals_the_population_engine_on_the_default_network():
    """3 x 100 relu, cbp at its defaults: the kernel and the torch engine (the same engine learner
    class) agree on every reset and, to float32 rounding, on the weights."""
    spec = _spec("relu", width=100)
    x, y = _data(1, 400, seed=5)
    kp = KernelPopulation(spec, [5], optimizer(step_size=0.01), learner=KC(replacement_rate=5e-3, maturity_threshold=50))
    ep = Population(spec, [5], optimizer(step_size=0.01), learner=__import__("plasticity_lab.engine.learners", fromlist=["x"])
                    .ContinualBackprop(replacement_rate=5e-3, maturity_threshold=50))
    kp.train(x, y)
    ep.train(x, y)
    assert torch.equal(kp.learner.age[0], ep.learner.age[0])
    assert kp.take_counts()["units_reset"].tolist() == ep.take_counts()["units_reset"].tolist()
    assert _max_diff(kp.parameters_of(0), ep.parameters_of(0)) < 1e-4


# ----------------------------------------------------------------------------- populations
def _population(make, seeds, step_size, dtype=torch.float32, activation="relu", **kw):
    return KernelPopulation(_spec(activation), seeds, optimizer(step_size=step_size, **kw), learner=make, dtype=dtype)


def test_member_k_equals_the_member_alone():
    rates = [[1e-2, 2e-2, 0.0], [5e-3, 1e-2, 1e-2], [2e-2, 0.0, 0.0], [0.0, 0.0, 1e-2]]
    high = [[5e-3, 0.0, 1e-2], [0.0, 0.0, 0.0], [1e-2, 1e-2, 0.0], [0.0, 2e-2, 0.0]]  # [P]'s high-utility pass
    steps, mats = [0.01, 0.003, 0.01, 0.03], [20, 10, [5, 10, 15], 30]

    def make(sel):
        return KC(replacement_rate=[rates[k] for k in sel], high_replacement_rate=[high[k] for k in sel],
                  maturity_threshold=[mats[k] for k in sel])

    seeds = [0, 1, 2, 3]
    x, y = _data(4, 300, seed=7)
    pop = _population(make(range(4)), seeds, steps)
    pop.train(x, y)
    counts = pop.take_counts()["units_reset"]
    assert counts.sum() > 20
    for k in range(4):
        alone = _population(make([k]), [seeds[k]], [steps[k]])
        alone.train(x[k : k + 1], y[k : k + 1])
        assert _max_diff(pop.parameters_of(k), alone.parameters_of(0)) == 0.0  # the same computation
        assert counts[k].tolist() == alone.take_counts()["units_reset"][0].tolist()
    assert _max_diff(pop.parameters_of(0), pop.parameters_of(1)) > 1e-3


@pytest.mark.parametrize("schedule", ["per_step", "per_pass"])
def test_members_with_and_without_momentum_and_clip_equal_alone(schedule):
    def make(sel):
        return KA(rho_low=[[1e-2, 1e-2, 0.0, 2e-2][k] for k in sel], rho_high=1e-2, maturity_threshold=10,
                  clip=[[10.0, None, 0.5, 1.0][k] for k in sel], schedule=schedule)

    x, y = _data(4, 200, seed=2)
    mom = [0.9, 0.0, 0.5, 0.0]
    pop = _population(make(range(4)), [4, 5, 6, 7], 0.01, activation="tanh", momentum=mom)
    pop.train(x, y)
    counts = pop.take_counts()
    assert (counts["units_rescaled_low"].sum(axis=1) > 0).tolist() == [True, True, False, True]  # rho_low 0
    assert (counts["units_rescaled_high"].sum(axis=1) > 0).all()
    for k in range(4):
        alone = _population(make([k]), [4 + k], 0.01, activation="tanh", momentum=[mom[k]])
        alone.train(x[k : k + 1], y[k : k + 1])
        assert _max_diff(pop.parameters_of(k), alone.parameters_of(0)) == 0.0


@pytest.mark.parametrize("make", [
    lambda: KC(replacement_rate=1e-2, maturity_threshold=10, util_type="random", accumulate=False),
    lambda: KC(replacement_rate=3e-3, maturity_threshold=10, accumulate=False, bias_correction=True),
    lambda: KA(rho_low=1e-2, rho_high=1e-2, maturity_threshold=10, clip=0.5),
    lambda: KC(replacement_rate=3e-3, high_replacement_rate=2e-3, maturity_threshold=10, accumulate=False),
    lambda: KA(rho_low=[[1e-2, 0.0, 1e-2]] * 2, rho_high=[[1e-2, 1e-2, 0.0]] * 2, maturity_threshold=10,
               schedule="per_pass"),
])
def test_resume_mid_run_is_identical(make):
    """Member states cut after 150 steps and loaded into a fresh population (members re-packed in
    another order) continue exactly like the uninterrupted run."""
    x, y = _data(2, 300, seed=4)
    full = _population(make(), [0, 1], 0.01, momentum=0.5)
    full.train(x, y)
    first = _population(make(), [0, 1], 0.01, momentum=0.5)
    first.train(x[:, :150], y[:, :150])
    states = [first.member_state(k) for k in (1, 0)]
    resumed = _population(make(), [1, 0], 0.01, momentum=0.5)
    resumed.load_member_states(states)
    resumed.train(x[[1, 0], 150:], y[[1, 0], 150:])
    for k, j in ((0, 1), (1, 0)):
        assert _max_diff(full.parameters_of(k), resumed.parameters_of(j)) == 0.0
        assert torch.equal(full.learner.age[0][k], resumed.learner.age[0][j])
    assert full.learner.counts[full.learner.COUNTS[0]].sum() > 0


def test_a_frozen_member_is_not_trained_any_more():
    """(That a diverging member is frozen without touching the others is tests/test_learners.py's
    divergence test, which runs on the kernel too.)"""
    x, y = _data(2, 60)
    pop = KernelPopulation(_spec(), [0, 1], optimizer(step_size=0.01), learner=KC(**FAST))
    pop.freeze(0)
    pop.train(x, y)
    loss, correct = pop.take_totals()
    assert loss[0] == 0 and correct[0] == 0 and loss[1] > 0
    assert all((W[0] == 0).all() for W in pop.W) and (pop.learner.units[:, 0] == 0).all()


# ----------------------------------------------------------------------------- the interface
def test_weights_are_views_shared_with_the_kernel_and_deepcopy_keeps_them():
    pop = KernelPopulation(_spec(), [0, 1], optimizer(step_size=0.01), learner=KC(**FAST))
    x, y = _data(2, 50)
    pop.train(x, y)
    W, b = pop.stacked_parameters()[0]
    assert W.shape == (2, 32, 784) and b.shape == (2, 32)
    before = W.clone()
    scratch = copy.deepcopy(pop)  # what the timing probe does
    scratch.train(x, y)
    assert torch.equal(pop.W[0], before)  # the original is untouched
    assert not torch.equal(scratch.W[0], before)  # and the copy trained through its own views
    assert scratch.W[0].data_ptr() != pop.W[0].data_ptr()
    assert torch.equal(scratch.theta[:, : 784 * 32].view(2, 784, 32).transpose(1, 2), scratch.W[0])
    ages = scratch.learner.age[0]
    assert ages.data_ptr() == scratch.learner.units[0].data_ptr()


def test_probes_interface_answers_like_the_engine():
    spec = _spec("tanh")
    kp = KernelPopulation(spec, [0, 1], optimizer(step_size=0.01), learner=KC(**FAST))
    ep = Population(spec, [0, 1], optimizer(step_size=0.01))
    x, y = _data(2, 16)
    for a, b in zip(kp.hidden_features(x), ep.hidden_features(x)):
        torch.testing.assert_close(a, b)
    (inputs_k, da), (inputs_e, db) = kp.example_deltas(x, y), ep.example_deltas(x, y)
    for a, b in zip(inputs_k + da, inputs_e + db):
        torch.testing.assert_close(a, b)
    kp.train(x, y)
    stats = kp.learner.utility_stats()
    assert set(stats) == {1, 2, 3} and stats[1].shape == (2, 32) and torch.isfinite(stats[1]).all()


def test_engine_learner_is_refused():
    from plasticity_lab.engine.learners import ContinualBackprop

    with pytest.raises(ValueError, match="kernel learner"):
        KernelPopulation(_spec(), [0], optimizer(step_size=0.01), learner=ContinualBackprop())
    with pytest.raises(ValueError, match="optimizer=sgd only"):
        KernelPopulation(_spec(), [0], optimizer("adam", step_size=0.01))


def test_uniform_stream_peek_and_skip_follow_next():
    a, b = UniformStream(generator(0, 2, 1), block=16), UniformStream(generator(0, 2, 1), block=16)
    seq = [a.next() for _ in range(50)]
    got = []
    for n in (3, 20, 0, 27):
        ahead = b.peek(n + 5).copy()
        b.skip(n)
        got.extend(ahead[:n].tolist())
    assert got == seq
    state = b.get_state()
    c = UniformStream(generator(9, 2, 1), block=16)
    c.set_state(state)
    assert [c.next() for _ in range(40)] == [a.next() for _ in range(40)]
    with pytest.raises(ValueError, match="skip"):
        c.skip(10_000)


def test_bias_correction_is_exactly_one_from_age_one_on():
    for dtype in (np.float32, np.float64):
        for eta in (0.99, 0.9, 0.5, 0.999):
            A = int(age_one(np.array([eta]), dtype)[0])
            ages = np.arange(A, A + 2000, dtype=dtype)
            assert (1 - np.power(dtype(eta), ages) == 1).all()
            assert 1 - np.power(dtype(eta), dtype(A // 2)) < 1  # not trivially large
    assert age_one(np.array([0.0]), np.float32)[0] == 1


# ----------------------------------------------------------------------------- configuration
def test_auto_picks_the_kernel_on_cpu_and_the_engine_where_the_kernel_does_not_run():
    def used(*overrides):
        return parse_config(compose_config(*overrides)).backend_used

    assert used() == "kernel"
    assert used("learner=cbp", "optimizer.momentum=0.9", "batch_size=4", "dtype=float64") == "kernel"
    assert used("learner=adapted", "activation=tanh", "dataset=bit_flipping", "network_depth=width_5_depth_6") == "kernel"
    assert used("learner=cbp", "learner.reinit=no_gain", "learner.util_type=contribution") == "kernel"
    assert used("learner=cbp", "learner.high_replacement_rate=[0,1e-5,0]") == "kernel"  # [P]'s two-pass CBP
    assert used("learner=adapted", "learner.schedule=per_pass") == "kernel"
    assert used("experiment=purice/twisted", "method=cbp") == "kernel"  # both in one of [P]'s presets
    assert used("learner=shrink_perturb") == "population"
    assert used("learner=redo") == "population"
    assert used("optimizer=adam") == "population"
    assert used("network.norm=layer") == "reference"
    assert used("backend=population") == "population"


@pytest.mark.parametrize("overrides,named", [
    (["learner=redo"], "learner=redo"), (["optimizer=adam"], "optimizer=adam"),
    (["network.norm=layer"], "network.norm=layer"), (["learner=shrink_perturb"], "learner=shrink_perturb"),
])
def test_backend_kernel_refuses_what_it_does_not_run(overrides, named):
    with pytest.raises(ConfigError, match=rf"backend=kernel:.*{named}"):
        parse_config(compose_config("backend=kernel", *overrides))

