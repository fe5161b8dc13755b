"""Hand-computed oracles for the reset learners (SPEC 3.3-3.6), each implementation on its own.

"Engine equals reference" cannot catch a mistake both implementations share. Here every
expected number is worked out by hand from SPEC's formulas (the arithmetic is in the comments)
on a tiny 4 -> 3 -> 3 -> 2 network whose weights, running means f, utilities u, ages and
accumulators are set through the learner's state; the learner then acts once. Every test runs
against each implementation in ``learner_impls.IMPLEMENTATIONS`` separately (fixture ``impl``).
float64 throughout, so the hand values are met to ~1e-15.

The CBP / adapted setting (hidden layer 1, eta = 0.5, m = 2):

- ages before the step (2, 1, 4) -> after step 1's age += 1: (3, 2, 5). Unit 1 has age = m
  (NOT eligible, SPEC 3.4 step 4 is strict), unit 0 has age m + 1 (eligible), unit 2 too.
- bias correction 1 - eta^age = (1 - 1/8, 1 - 1/4, 1 - 1/32) = (7/8, 3/4, 31/32).
- running utilities after the step u = (1.86, 1.2, 2.0) (the state before the step is set to
  2 u - x, x = the step's instantaneous utility, so that eta u_old + (1 - eta) x = u), hence
  u_hat = u / bc = (1.86 * 8/7, 1.2 * 4/3, 2.0 * 32/31) = (2.125714..., 1.6, 2.064516...).
  Among the eligible units {0, 2} the lowest u_hat is unit 2 and the highest is unit 0. The
  numbers are chosen so that each plausible slip picks another unit:
  raw u (no bias correction): 1.86 < 2.0 -> unit 0; exponent age + 1: (1.86 * 16/15 = 1.984,
  2.0 * 64/63 = 2.0317) -> unit 0; age >= m: unit 1 (u_hat 1.6, the lowest of all);
  highest instead of lowest: unit 0.
"""

from __future__ import annotations

import math

import pytest
import torch

from learner_impls import IMPLEMENTATIONS
from plasticity_lab import seeding
from plasticity_lab.network import NetworkSpec, init_weight, initial_parameters
from plasticity_lab.seeding import ALGO, COIN, NOISE, REINIT, UTIL, generator

SPEC = NetworkSpec.mlp(4, 3, 2, 2, "relu")  # 4 -> 3 -> 3 -> 2: two hidden layers of 3
SEED = 0
ETA, M = 0.5, 2

W1 = [[0.5, -0.5, 0.5, -0.5],  # mean_j |W_in[0, j]| = 0.5
      [1.0, -1.0, 1.0, -1.0],  # 1.0
      [0.25, -0.25, 0.25, -0.25]]  # 0.25
B1 = [0.1, 0.2, 0.3]
W2 = [[0.2, -0.4, 0.8],  # columns (outgoing weights of layer-1 units): mean_k |W_next[k, i]| = (0.2, 0.4, 0.8)
      [-0.2, 0.4, 0.8],
      [0.2, 0.4, -0.8]]
B2 = [0.01, 0.9, 0.03]
W3 = [[0.9, -0.6, 0.3], [-0.3, 0.6, -0.9]]
B3 = [0.05, -0.05]
NETWORK = [(W1, B1), (W2, B2), (W3, B3)]

AGE_BEFORE = [2.0, 1.0, 4.0]  # -> (3, 2, 5) after the step
AGE_AFTER = [3.0, 2.0, 5.0]
U_AFTER = [1.86, 1.2, 2.0]
U_HAT = [1.86 * 8 / 7, 1.2 * 4 / 3, 2.0 * 32 / 31]  # (2.125714..., 1.6, 2.064516...)

# Layer-1 activations of the step. Batch of 2: mean_batch h = (2, 0.5, -1), mean_batch |h| = (2, 0.5, 1).
# Batch of 1: the mean itself (same means; different mean |h - f_hat|, see X below).
H1 = {2: [[1.0, 0.5, -2.0], [3.0, 0.5, 0.0]], 1: [[2.0, 0.5, -1.0]]}
# f before the step; f after = eta f + (1 - eta) mean h = (1.1875 + 1, -0.0625 + 0.25, 0.015625 - 0.5)
F_BEFORE = [2.375, -0.125, 0.03125]
F_AFTER = [2.1875, 0.1875, -0.484375]  # f_hat = f / bc = (2.1875 * 8/7, 0.1875 * 4/3, -0.484375 * 32/31) = (2.5, 0.25, -0.5)
F_HAT = [2.5, 0.25, -0.5]
# mean_batch |h - f_hat|: batch 2: (|1 - 2.5| + |3 - 2.5|) / 2 = 1, (0.25 + 0.25) / 2 = 0.25, (1.5 + 0.5) / 2 = 1
#                         batch 1: |2 - 2.5| = 0.5, |0.5 - 0.25| = 0.25, |-1 + 0.5| = 0.5
# Instantaneous utility x (SPEC 3.4 step 3) with out = (0.2, 0.4, 0.8), in = (0.5, 1, 0.25):
X = {
    2: {"contribution": [0.4, 0.2, 0.8],  # out * mean|h| = (0.2 * 2, 0.4 * 0.5, 0.8 * 1)
        "adaptable_contribution": [0.4, 0.1, 3.2],  # out * dev / in = (0.2 * 1 / 0.5, 0.4 * 0.25 / 1, 0.8 * 1 / 0.25)
        "zero_contribution": [0.2, 0.1, 0.8],  # out * dev
        "weight": [0.2, 0.4, 0.8],  # out
        "adaptation": [2.0, 1.0, 4.0],  # 1 / in
        "feature_by_input": [2.0, 0.25, 4.0]},  # dev / in
    1: {"contribution": [0.4, 0.2, 0.8],
        "adaptable_contribution": [0.2, 0.1, 1.6],  # (0.2 * 0.5 / 0.5, 0.4 * 0.25, 0.8 * 0.5 / 0.25)
        "zero_contribution": [0.1, 0.1, 0.4],
        "weight": [0.2, 0.4, 0.8],
        "adaptation": [2.0, 1.0, 4.0],
        "feature_by_input": [1.0, 0.25, 2.0]},
}
CHOSEN = 2  # the eligible unit with the lowest u_hat (module docstring)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request):
    """One implementation class of the learners (learner_impls.py); each test runs once per implementation."""
    return IMPLEMENTATIONS[request.param]


def _close(actual, expected, rel=1e-12, abs=1e-12):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=rel, atol=abs)


def _features(batch, first=None):
    """The step's activations: hand-set for hidden layer 1, zeros for hidden layer 2 (rate 0 there)."""
    first = H1[batch] if first is None else first
    return [torch.tensor(first, dtype=torch.float64)] + [torch.zeros(batch, 3, dtype=torch.float64)]


def _cbp(impl, util_type="adaptable_contribution", batch=2, acc=0.6, rate=0.25, **hyper):
    """CBP on hidden layer 1 only (rates (rate, 0)) in the module docstring's state, before the step."""
    x = X[batch].get(util_type, [0.0, 0.0, 0.0])
    lrn = impl(SPEC, "cbp", dict(replacement_rate=[rate, 0.0], decay_rate=ETA, maturity_threshold=M,
                                 util_type=util_type, **hyper), seed=SEED)
    lrn.set_parameters(NETWORK)
    lrn.set_unit_state("age", 0, AGE_BEFORE)
    lrn.set_unit_state("f", 0, F_BEFORE)
    if util_type != "random":  # random has no running utility (u_hat is a fresh draw)
        lrn.set_unit_state("u", 0, [2 * u - xi for u, xi in zip(U_AFTER, x)])  # eta u_old + (1 - eta) x = U_AFTER
    lrn.set_accumulator(0, acc)
    return lrn


def _assert_replaced(lrn, unit, bias_correction=False):
    """SPEC 3.4 steps 6-7: unit ``unit`` of hidden layer 1 replaced, nothing else touched."""
    (w1, b1), (w2, b2), (w3, b3) = lrn.parameters()
    fresh = init_weight(SPEC, 0, generator(SEED, ALGO, REINIT), 1)[0]  # the member's REINIT stream, first draw
    expected_W1 = torch.tensor(W1, dtype=torch.float64)
    expected_W1[unit] = fresh.double()
    _close(w1, expected_W1, rel=0, abs=0)
    assert (fresh.abs() <= SPEC.init_bound(0)).all()
    _close(b1, [0.0 if i == unit else B1[i] for i in range(3)], rel=0, abs=0)
    expected_W2 = torch.tensor(W2, dtype=torch.float64)
    expected_b2 = torch.tensor(B2, dtype=torch.float64)
    if bias_correction:  # b2 += W2[:, unit] * f_hat[unit] (SPEC 3.4 step 7), before the column is zeroed
        expected_b2 += expected_W2[:, unit] * F_HAT[unit]
    expected_W2[:, unit] = 0.0  # outgoing weights zeroed
    _close(w2, expected_W2, rel=0, abs=0)
    _close(b2, expected_b2)
    _close(w3, W3, rel=0, abs=0)
    _close(b3, B3, rel=0, abs=0)
    kept = [i for i in range(3) if i != unit]
    age, f, u = (lrn.unit_state(name, 0) for name in ("age", "f", "u"))
    assert age[unit] == 0 and f[unit] == 0 and u[unit] == 0
    _close(age[kept], [AGE_AFTER[i] for i in kept], rel=0, abs=0)
    _close(f[kept], [F_AFTER[i] for i in kept])
    assert lrn.counts() == {"units_reset": [1, 0]}


# ----------------------------------------------------------------------------- CBP (SPEC 3.4)
@pytest.mark.parametrize("batch", [2, 1])
@pytest.mark.parametrize("util_type", sorted(X[2]))
def test_cbp_statistics_and_choice_by_hand(impl, util_type, batch):
    # 1. no replacement this step (acc 0 + 0.25 * 2 eligible = 0.5 < 1): every unit's statistics
    lrn = _cbp(impl, util_type, batch, acc=0.0)
    lrn.after_step(_features(batch))
    _close(lrn.unit_state("age", 0), AGE_AFTER, rel=0, abs=0)
    _close(lrn.unit_state("f", 0), F_AFTER)
    _close(lrn.unit_state("u", 0), U_AFTER)
    _close(lrn.utility(0), U_HAT)
    assert lrn.accumulator(0) == pytest.approx(0.5, abs=1e-15)
    # rate 0: hidden layer 2 skips the whole algorithm (SPEC 3.4 step 1)
    assert (lrn.unit_state("age", 1) == 0).all() and (lrn.unit_state("u", 1) == 0).all()
    _close(lrn.parameters()[0][0], W1, rel=0, abs=0)
    assert lrn.counts() == {"units_reset": [0, 0]}
    # 2. the same state with acc 0.6: 0.6 + 0.25 * 2 = 1.1 -> n = 1, acc -> 0.1; the lowest eligible u_hat goes
    lrn = _cbp(impl, util_type, batch, acc=0.6)
    lrn.after_step(_features(batch))
    _assert_replaced(lrn, CHOSEN)
    _close(lrn.unit_state("u", 0)[[0, 1]], U_AFTER[:2])
    assert lrn.accumulator(0) == pytest.approx(0.1, abs=1e-15)


@pytest.mark.parametrize("batch", [2, 1])
def test_cbp_random_utility_is_the_generators_draw(impl, batch):
    """u_hat := a fresh U(0, 1) draw per unit from the member's UTIL stream, drawn when units are chosen:
    seed 0 draws (0.1398, 0.8513, 0.0199), so of the eligible units {0, 2} unit 2 goes (equal running
    utilities would give unit 0, the lowest index)."""
    draws = torch.rand(3, generator=generator(SEED, ALGO, UTIL))
    _close(draws, [0.1398, 0.8513, 0.0199], rel=0, abs=1e-4)
    lrn = _cbp(impl, "random", batch)
    lrn.after_step(_features(batch))
    _assert_replaced(lrn, 2)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_cbp_bias_correction_adds_the_removed_mean_contribution(impl, bias_correction):
    # on: b2 += W2[:, 2] * f_hat_2 = (0.8, 0.8, -0.8) * -0.5 = (-0.4, -0.4, 0.4) -> (-0.39, 0.5, 0.43)
    lrn = _cbp(impl, bias_correction=bias_correction)
    lrn.after_step(_features(2))
    _assert_replaced(lrn, CHOSEN, bias_correction=bias_correction)
    _close(lrn.parameters()[1][1], [-0.39, 0.5, 0.43] if bias_correction else B2)


def test_cbp_maturity_boundary(impl):
    """age = m is not eligible, age = m + 1 is: with rate 1 and all three units at (3, 2, 5) the
    accumulator gains 1 * 2 = 2 (not 3), and units 2 and 0 (the two eligible, lowest u_hat first) go."""
    lrn = _cbp(impl, rate=1.0, acc=0.0)
    lrn.after_step(_features(2))
    assert lrn.unit_state("age", 0).tolist() == [0.0, 2.0, 0.0]
    assert lrn.counts() == {"units_reset": [2, 0]}
    assert lrn.accumulator(0) == 0.0


def _two_pass_cbp(impl, low=0.25, high=0.5, acc_low=0.6, acc_high=0.6, reinit="init"):
    """[P]'s two-pass CBP (SPEC 5) on hidden layer 1 in the module docstring's state: low-utility rate
    ``low``, high-utility rate ``high`` (high_replacement_rate), each pass its own accumulator."""
    lrn = _cbp(impl, "contribution", acc=acc_low, rate=low, high_replacement_rate=[high, 0.0], reinit=reinit)
    lrn.set_accumulator(0, acc_high, "high")
    return lrn


@pytest.mark.parametrize("reinit", ["init", "no_gain"])
def test_cbp_high_pass_replaces_the_highest_mature_unit_the_low_pass_left(impl, reinit):
    """low: 0.6 + 0.25 * 2 = 1.1 -> unit 2 (lowest u_hat of {0, 2}), acc 0.1; high: unit 2 has age 0 now,
    so 1 eligible: 0.6 + 0.5 * 1 = 1.1 -> unit 0, acc 0.1. Both redrawn from the REINIT stream in that
    order (draw 1: unit 2, draw 2: unit 0); reinit no_gain: bound sqrt(3 / 4) instead of sqrt(2) sqrt(3 / 4)."""
    lrn = _two_pass_cbp(impl, reinit=reinit)
    lrn.after_step(_features(2))
    gain = None if reinit == "init" else 1.0
    gen = generator(SEED, ALGO, REINIT)
    first, second = (init_weight(SPEC, 0, gen, 1, gain)[0].double() for _ in range(2))
    bound = math.sqrt(3 / 4) * (math.sqrt(2) if reinit == "init" else 1.0)
    assert SPEC.init_bound(0, gain) == pytest.approx(bound)
    assert max(first.abs().max(), second.abs().max()) <= bound
    (w1, b1), (w2, b2), (w3, b3) = lrn.parameters()
    _close(w1, torch.stack([second, torch.tensor(W1[1], dtype=torch.float64), first]), rel=0, abs=0)
    _close(b1, [0.0, 0.2, 0.0], rel=0, abs=0)
    _close(w2, [[0.0, -0.4, 0.0], [0.0, 0.4, 0.0], [0.0, 0.4, 0.0]], rel=0, abs=0)  # both columns zeroed
    _close(b2, B2, rel=0, abs=0)
    _close(w3, W3, rel=0, abs=0)
    _close(lrn.unit_state("age", 0), [0.0, 2.0, 0.0], rel=0, abs=0)
    _close(lrn.unit_state("u", 0), [0.0, U_AFTER[1], 0.0])
    _close(lrn.unit_state("f", 0), [0.0, F_AFTER[1], 0.0])
    assert lrn.accumulator(0) == pytest.approx(0.1, abs=1e-15)
    assert lrn.accumulator(0, "high") == pytest.approx(0.1, abs=1e-15)
    assert lrn.counts() == {"units_reset": [2, 0]}


def test_cbp_high_pass_counts_only_the_units_the_low_pass_left(impl):
    """acc_high 0.3: 0.3 + 0.5 * 1 eligible = 0.8 -> no high replacement. (Counting the low pass's unit
    would give 1.3 and replace unit 0.)"""
    lrn = _two_pass_cbp(impl, acc_high=0.3)
    lrn.after_step(_features(2))
    _assert_replaced(lrn, CHOSEN)
    assert lrn.accumulator(0, "high") == pytest.approx(0.8, abs=1e-15)


def test_cbp_high_pass_alone_takes_the_highest_utility(impl):
    """Low rate 0, high rate 0.5: the layer still runs the statistics (a layer is skipped only when both
    rates are 0); 0.6 + 0.5 * 2 = 1.6 -> one unit, the HIGHER u_hat of {0, 2}: unit 0 (2.1257 > 2.0645;
    the lowest, or raw u (1.86 < 2.0), would give unit 2; age >= m would count 3 and take two)."""
    lrn = _two_pass_cbp(impl, low=0.0)
    lrn.after_step(_features(2))
    _close(lrn.unit_state("age", 0), [0.0, 2.0, 5.0], rel=0, abs=0)
    _close(lrn.unit_state("u", 0), [0.0, U_AFTER[1], U_AFTER[2]])
    (w1, b1), (w2, _), _ = lrn.parameters()
    _close(w1[1:], W1[1:], rel=0, abs=0)
    _close(w1[0], init_weight(SPEC, 0, generator(SEED, ALGO, REINIT), 1)[0], rel=0, abs=0)
    _close(b1, [0.0, 0.2, 0.3], rel=0, abs=0)
    _close(w2[:, 0], [0.0, 0.0, 0.0], rel=0, abs=0)
    assert lrn.accumulator(0) == pytest.approx(0.6, abs=1e-15)  # rate 0: the low pass adds nothing
    assert lrn.accumulator(0, "high") == pytest.approx(0.6, abs=1e-15)
    assert lrn.counts() == {"units_reset": [1, 0]}


def _first_coin():
    return seeding.UniformStream(generator(SEED, ALGO, COIN)).next()


@pytest.mark.parametrize("replaces", [True, False])
def test_cbp_coin_rule_when_the_expected_number_is_below_one(impl, coin_draws, replaces):
    """accumulate: false, rho * #eligible = p < 1: one unit iff the member's first coin <= p (SPEC 3.4 step 5)."""
    coin = _first_coin()
    coin_draws.clear()  # (that draw was the test's own)
    p = (1 + coin) / 2 if replaces else coin / 2  # just above / below the coin
    lrn = _cbp(impl, accumulate=False, rate=p / 2, acc=0.0)  # 2 eligible units
    lrn.after_step(_features(2))
    assert coin_draws == [coin]  # the coin branch ran, once, with the member's COIN stream
    if replaces:
        _assert_replaced(lrn, CHOSEN)
    else:
        _close(lrn.unit_state("age", 0), AGE_AFTER, rel=0, abs=0)
        assert lrn.counts() == {"units_reset": [0, 0]}
    assert lrn.accumulator(0) == 0.0  # the coin rule carries nothing over


def test_cbp_coin_rule_floors_without_a_coin_when_one_or_more_is_expected(impl, coin_draws):
    lrn = _cbp(impl, accumulate=False, rate=0.75, acc=0.0)  # 0.75 * 2 = 1.5 -> floor: 1, no coin
    lrn.after_step(_features(2))
    assert coin_draws == []
    _assert_replaced(lrn, CHOSEN)


def _adam_cbp_or_redo(impl, learner):
    """A tanh net (no zero gradients) with Adam: two real steps, then the learner acts in step 3.

    cbp: hidden layer 2 only (rates (0, 0.25)), ages 10 > m = 2, utilities (5, 0.01, 3):
    x = mean_k |W3[k, i]| <= 0.75, so u = 0.5 u + 0.5 x leaves unit 1 the lowest; acc 0.9 + 0.25 * 3
    = 1.65 -> one unit: unit 1. redo: reset_period 3 and tau (0, 10): every score of layer 2 is
    <= 3 < 10, layer 1 has no dead unit (tanh): all three units of hidden layer 2 go.
    """
    spec = NetworkSpec.mlp(4, 3, 2, 2, "tanh")
    if learner == "cbp":
        hyper = dict(replacement_rate=[0.0, 0.25], decay_rate=ETA, maturity_threshold=M, util_type="weight")
    else:
        hyper = dict(reset_period=3, tau=[0.0, 10.0])
    lrn = impl(spec, learner, hyper, optimizer="adam", step_size=1e-2)
    lrn.set_parameters(NETWORK)
    x = torch.tensor([[1.0, 0.5, -0.5, 2.0]], dtype=torch.float64)
    for y in (1, 0):
        lrn.step(x, torch.tensor([y]))
    if learner == "cbp":
        lrn.set_unit_state("age", 1, [10.0, 10.0, 10.0])
        lrn.set_unit_state("u", 1, [5.0, 0.01, 3.0])
        lrn.set_accumulator(1, 0.9)
    lrn.step(x, torch.tensor([1]))
    return lrn, ([1] if learner == "cbp" else [0, 1, 2])


@pytest.mark.parametrize("learner", ["cbp", "redo"])
def test_replaced_units_adam_moments_and_step_counts_are_zeroed(impl, learner):
    """SPEC 3.4 step 8 / 3.6: the input row, bias and outgoing column of a replaced unit restart Adam
    (first and second moments 0, per-element step count 0); every other element keeps 3 steps."""
    lrn, units = _adam_cbp_or_redo(impl, learner)
    assert lrn.counts()["units_reset"] == [0, len(units)]
    _, (w2, b2), (w3, _) = lrn.parameters()
    assert (w3[:, units] == 0).all() and (b2[units] == 0).all()  # outgoing weights zeroed, bias 0
    state = {l: lrn.optimizer_state(l) for l in range(3)}
    reset = {(1, "W"): (units, slice(None)), (1, "b"): (units,), (2, "W"): (slice(None), units)}
    for l in range(3):  # linear layers 1, 2 and the output layer
        for part in ("W", "b"):
            m, v, steps = state[l][part]
            mask = torch.zeros_like(m, dtype=torch.bool)
            if (l, part) in reset:
                mask[reset[(l, part)]] = True
            assert (m[mask] == 0).all() and (v[mask] == 0).all() and (steps[mask] == 0).all(), (l, part)
            assert (m[~mask] != 0).all() and (v[~mask] != 0).all() and (steps[~mask] == 3).all(), (l, part)


# ----------------------------------------------------------------------------- adapted (SPEC 3.5)
# The same layer-1 state. The utility is the running mean of the SIGNED activation: with
# mean_batch h = (2, 0.5, -1), u_old = 2 u - mean h = (1.72, 1.9, 5.0) gives u = (1.86, 1.2, 2.0) and
# u_hat = U_HAT: the low pass takes unit 2, the high pass unit 0 (with |h| instead, unit 2's u would be
# 0.5 * 5 + 0.5 * 1 = 3.0 and the low pass would take unit 0).
U_ADAPTED_BEFORE = [1.72, 1.9, 5.0]
C_LOW, C_HIGH = -0.5, 2.0


def _adapted(impl, acc_low, acc_high, rate=0.5, clip=None, schedule="per_step", rate_low=None, network=NETWORK):
    rate_low = rate if rate_low is None else rate_low
    lrn = impl(SPEC, "adapted", dict(c_low=C_LOW, c_high=C_HIGH, rho_low=[rate_low, 0.0], rho_high=[rate, 0.0],
                                     decay_rate=ETA, maturity_threshold=M, clip=clip, schedule=schedule), seed=SEED)
    lrn.set_parameters(network)
    lrn.set_unit_state("age", 0, AGE_BEFORE)
    lrn.set_unit_state("u", 0, U_ADAPTED_BEFORE)
    lrn.set_accumulator(0, acc_low, "low")
    lrn.set_accumulator(0, acc_high, "high")
    return lrn


@pytest.mark.parametrize("batch", [2, 1])
def test_adapted_signed_running_mean_by_hand(impl, batch):
    lrn = _adapted(impl, 0.0, 0.0, rate=0.25)  # 0 + 0.25 * 2 = 0.5 in both passes: nothing rescaled
    lrn.after_step(_features(batch))
    _close(lrn.unit_state("age", 0), AGE_AFTER, rel=0, abs=0)
    _close(lrn.unit_state("u", 0), U_AFTER)
    _close(lrn.utility(0), U_HAT)
    assert lrn.accumulator(0, "low") == lrn.accumulator(0, "high") == 0.5
    for (w, b), (w0, b0) in zip(lrn.parameters(), NETWORK):
        _close(w, w0, rel=0, abs=0)
        _close(b, b0, rel=0, abs=0)
    assert (lrn.unit_state("age", 1) == 0).all()  # both rates 0 in hidden layer 2: skipped


def test_adapted_low_pass_then_high_pass_by_hand(impl):
    """low: 0.3 + 0.5 * 2 eligible = 1.3 -> unit 2 (lowest u_hat) times c_low, acc 0.3; high: unit 2 now
    has age 0, so 1 eligible: 0.6 + 0.5 * 1 = 1.1 -> unit 0 (highest u_hat) times c_high, acc 0.1."""
    lrn = _adapted(impl, acc_low=0.3, acc_high=0.6)
    lrn.after_step(_features(2))
    (w1, b1), (w2, b2), (w3, b3) = lrn.parameters()
    _close(w1, [[1.0, -1.0, 1.0, -1.0],  # unit 0: (0.5, -0.5, 0.5, -0.5) * 2
                W1[1],  # unit 1 (age = m): untouched
                [-0.125, 0.125, -0.125, 0.125]])  # unit 2: (0.25, -0.25, 0.25, -0.25) * -0.5
    _close(b1, [0.2, 0.2, -0.15])  # the biases too: 0.1 * 2, 0.2, 0.3 * -0.5 (not again * 2: rescaled once)
    for (w, b), (w0, b0) in zip([(w2, b2), (w3, b3)], NETWORK[1:]):  # outgoing weights untouched
        _close(w, w0, rel=0, abs=0)
        _close(b, b0, rel=0, abs=0)
    _close(lrn.unit_state("age", 0), [0.0, 2.0, 0.0], rel=0, abs=0)
    _close(lrn.unit_state("u", 0), [0.0, 1.2, 0.0])
    assert lrn.accumulator(0, "low") == pytest.approx(0.3, abs=1e-15)
    assert lrn.accumulator(0, "high") == pytest.approx(0.1, abs=1e-15)
    assert lrn.counts() == {"units_rescaled_low": [1, 0], "units_rescaled_high": [1, 0]}


def test_adapted_high_pass_counts_only_units_still_eligible(impl):
    """acc_high 0.3: after the low pass one unit is eligible, 0.3 + 0.5 * 1 = 0.8 -> no high rescale.
    (Counting the low pass's unit, or running the high pass first, would give 1.3 -> unit 0 times 2.)"""
    lrn = _adapted(impl, acc_low=0.3, acc_high=0.3)
    lrn.after_step(_features(2))
    (w1, b1), _, _ = lrn.parameters()
    _close(w1, [W1[0], W1[1], [-0.125, 0.125, -0.125, 0.125]])
    _close(b1, [0.1, 0.2, -0.15])
    assert lrn.accumulator(0, "high") == pytest.approx(0.8, abs=1e-15)
    assert lrn.counts() == {"units_rescaled_low": [1, 0], "units_rescaled_high": [0, 0]}


def test_adapted_clip_by_hand(impl):
    """schedule per_step (the published code), clip 0.7 after the passes: every hidden layer clamped, every
    step: layer 1 (rescaled) -> units 0 and 1 (entries +-1) to +-0.7, hidden layer 2 too (W2's 0.8 entries,
    b2's 0.9; it rescaled nothing); never the output layer (W3 keeps its 0.9)."""
    lrn = _adapted(impl, acc_low=0.3, acc_high=0.6, clip=0.7)
    lrn.after_step(_features(2))
    (w1, b1), (w2, b2), (w3, b3) = lrn.parameters()
    _close(w1, [[0.7, -0.7, 0.7, -0.7], [0.7, -0.7, 0.7, -0.7], [-0.125, 0.125, -0.125, 0.125]])
    _close(b1, [0.2, 0.2, -0.15])
    _close(w2, [[0.2, -0.4, 0.7], [-0.2, 0.4, 0.7], [0.2, 0.4, -0.7]])
    _close(b2, [0.01, 0.7, 0.03])
    _close(w3, W3, rel=0, abs=0)
    _close(b3, B3, rel=0, abs=0)


# schedule per_pass ([P]'s "modified cfg" code, SPEC 5): a network with entries beyond its clamp bounds
# (weights 5, biases 10) in hidden layer 1 (unit 1: 6.0 and 12.0) and hidden layer 2 (7.0 and 11.0)
W1_BIG = [W1[0], [6.0, -1.0, 1.0, -1.0], W1[2]]
B1_BIG = [0.1, 12.0, 0.3]
W2_BIG = [[7.0, -0.4, 0.8], W2[1], W2[2]]
B2_BIG = [11.0, 0.9, 0.03]
NETWORK_BIG = [(W1_BIG, B1_BIG), (W2_BIG, B2_BIG), (W3, B3)]


@pytest.mark.parametrize("clip", [10.0, None])
def test_adapted_per_pass_ages_and_averages_in_each_pass_and_clamps_the_rescaled_layer(impl, clip):
    """Each pass ages the units and updates the signed running mean before choosing (both rates > 0).
    low pass: ages (3, 2, 5), u = (1.86, 1.2, 2.0), u_hat = U_HAT; 0.3 + 0.5 * 2 eligible = 1.3 -> unit 2
    times c_low (-0.5), its age and u 0; layer 1 clamped: W1[1, 0] 6 -> 5, b1[1] 12 -> 10.
    high pass: ages (4, 3, 1): unit 1 (age 3 > m) is now eligible too; u = 0.5 u + 0.5 mean h =
    (1.93, 0.85, -0.5), u_hat = (1.93 * 16/15, 0.85 * 8/7, -0.5 * 2) = (2.0587, 0.9714, -1.0);
    0.6 + 0.5 * 2 = 1.6 -> the higher of {0, 1}: unit 0 times c_high (2). Hidden layer 2 rescaled nothing:
    not clamped (W2's 7.0, b2's 11.0 stay), nor is the output layer. clip None: no clamping at all."""
    lrn = _adapted(impl, acc_low=0.3, acc_high=0.6, clip=clip, schedule="per_pass", network=NETWORK_BIG)
    lrn.after_step(_features(2))
    (w1, b1), (w2, b2), (w3, b3) = lrn.parameters()
    big_w, big_b = (5.0, 10.0) if clip is not None else (6.0, 12.0)
    _close(w1, [[1.0, -1.0, 1.0, -1.0], [big_w, -1.0, 1.0, -1.0], [-0.125, 0.125, -0.125, 0.125]])
    _close(b1, [0.2, big_b, -0.15])
    _close(w2, W2_BIG, rel=0, abs=0)
    _close(b2, B2_BIG, rel=0, abs=0)
    _close(w3, W3, rel=0, abs=0)
    _close(b3, B3, rel=0, abs=0)
    _close(lrn.unit_state("age", 0), [0.0, 3.0, 1.0], rel=0, abs=0)
    _close(lrn.unit_state("u", 0), [0.0, 0.85, -0.5])
    _close(lrn.utility(0)[1:], [0.85 * 8 / 7, -1.0])
    assert lrn.accumulator(0, "low") == pytest.approx(0.3, abs=1e-15)
    assert lrn.accumulator(0, "high") == pytest.approx(0.6, abs=1e-15)
    assert lrn.counts() == {"units_rescaled_low": [1, 0], "units_rescaled_high": [1, 0]}
    assert (lrn.unit_state("age", 1) == 0).all()  # both rates 0 in hidden layer 2: no pass ticks it


def test_adapted_per_pass_a_pass_with_rate_zero_does_not_tick(impl):
    """per_pass with rho_low 0: only the high pass ages and averages (once): ages (3, 2, 5), u = U_AFTER;
    0.6 + 0.5 * 2 eligible = 1.6 -> unit 0 (highest u_hat) times 2; layer 1 clamped after it."""
    lrn = _adapted(impl, acc_low=0.3, acc_high=0.6, clip=10.0, schedule="per_pass", rate_low=0.0, network=NETWORK_BIG)
    lrn.after_step(_features(2))
    _close(lrn.unit_state("age", 0), [0.0, 2.0, 5.0], rel=0, abs=0)
    _close(lrn.unit_state("u", 0), [0.0, U_AFTER[1], U_AFTER[2]])
    (w1, b1), _, _ = lrn.parameters()
    _close(w1, [[1.0, -1.0, 1.0, -1.0], [5.0, -1.0, 1.0, -1.0], W1[2]])
    _close(b1, [0.2, 10.0, 0.3])
    assert lrn.accumulator(0, "low") == pytest.approx(0.3, abs=1e-15)
    assert lrn.counts() == {"units_rescaled_low": [0, 0], "units_rescaled_high": [1, 0]}


def test_adapted_maturity_boundary(impl):
    """rate 1: low: 0 + 1 * 2 eligible = 2 -> units 2 and 0 (age 3 = m + 1 counts, unit 1 with age m does not);
    high: no unit left eligible -> nothing."""
    lrn = _adapted(impl, acc_low=0.0, acc_high=0.0, rate=1.0)
    lrn.after_step(_features(2))
    assert lrn.unit_state("age", 0).tolist() == [0.0, 2.0, 0.0]
    assert lrn.counts() == {"units_rescaled_low": [2, 0], "units_rescaled_high": [0, 0]}
    _close(lrn.parameters()[0][1], [0.1 * C_LOW, 0.2, 0.3 * C_LOW])


# ----------------------------------------------------------------------------- Shrink & Perturb (SPEC 3.3)
def test_shrink_perturb_toward_init_by_hand(impl):
    """theta <- s theta + (1 - s) theta_init with s = 0.75, theta_init the seed's initial network, for every
    weight and bias of every layer; twice: 0.75^2 theta + (1 - 0.75^2) theta_init (pulled toward the
    INITIAL network, not the previous one)."""
    lrn = impl(SPEC, "shrink_perturb", dict(mode="toward_init", shrink=0.75), seed=SEED)
    init = initial_parameters(SPEC, SEED)
    lrn.set_parameters(NETWORK)
    for s in (0.75, 0.5625):
        lrn.after_step(_features(2))
        for (w, b), (w0, b0), (wi, bi) in zip(lrn.parameters(), NETWORK, init):
            _close(w, s * torch.tensor(w0, dtype=torch.float64) + (1 - s) * wi.double())
            _close(b, s * torch.tensor(b0, dtype=torch.float64) + (1 - s) * bi.double())


def test_shrink_perturb_noise_statistics_and_draws(impl):
    """N(0, sigma^2) on every weight and bias after every step: (theta' - theta) / sigma over the 5,730
    parameters of a 50 -> 3 x 40 -> 10 net has mean 0 (sd 1/sqrt(5730) = 0.013) and sd 1 (sd of the sample
    sd ~0.009); every parameter moves; two steps' noise is uncorrelated; and the draws are the member's
    NOISE stream, layer by layer, weights then biases."""
    spec, sigma = NetworkSpec.mlp(50, 40, 3, 10, "tanh"), 0.01
    lrn = impl(spec, "shrink_perturb", dict(sigma=sigma), seed=SEED)
    features = [torch.zeros(1, 40, dtype=torch.float64)] * 3
    noise = []
    for _ in range(2):
        before = torch.cat([torch.cat([w.flatten(), b]) for w, b in lrn.parameters()])
        lrn.after_step(features)
        after = torch.cat([torch.cat([w.flatten(), b]) for w, b in lrn.parameters()])
        noise.append((after - before) / sigma)
    z = noise[0]
    assert z.numel() == spec.num_parameters() == 5730
    assert abs(z.mean()) < 4 / math.sqrt(z.numel()) and abs(z.std() - 1) < 0.05
    assert (z != 0).all()
    assert abs(torch.corrcoef(torch.stack(noise))[0, 1]) < 0.06
    g = generator(SEED, ALGO, NOISE)
    expected = torch.cat([torch.cat([torch.randn(w.shape, generator=g).flatten(), torch.randn(b.shape, generator=g)])
                          for w, b in lrn.parameters()])
    _close(z, expected.double(), rel=1e-6, abs=1e-6)


# ----------------------------------------------------------------------------- ReDo (SPEC 3.6)
# reset_period 2, two batches of 2 (the 4 examples of the period). Per layer, the mean |h| per unit:
#   layer 1, tau 0:    unit 0 always 0; units 1, 2: 1 and 2 -> mean|h| (0, 1, 2), mean 1, s = (0, 1, 2):
#                      s <= 0 only for unit 0 (a dead unit; "<" would recycle nothing)
#   layer 2, tau 0.75: unit 0 (0, 0 | -1.4, -1.4) -> 0.7; unit 1 (1, -1 | 1, -1) -> 1; unit 2 (1.3, 1.3 | 1.3, -1.3)
#                      -> 1.3: mean 1, s = (0.7, 1, 1.3) / (1 + 1e-9) -> unit 0. (The last batch alone would give
#                      (1.4, 1, 1.3) / 1.2333 -> none; signed means (-0.7, 0, 0.65) would give units 1 and 2.)
REDO_BATCHES = [
    [[[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]], [[0.0, 1.0, 1.3], [0.0, -1.0, 1.3]]],
    [[[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]], [[-1.4, 1.0, 1.3], [-1.4, -1.0, -1.3]]],
]


def test_redo_dormant_scores_by_hand(impl):
    lrn = impl(SPEC, "redo", dict(reset_period=2, tau=[0.0, 0.75]), seed=SEED)
    lrn.set_parameters(NETWORK)
    lrn.after_step([torch.tensor(h, dtype=torch.float64) for h in REDO_BATCHES[0]])
    for (w, b), (w0, b0) in zip(lrn.parameters(), NETWORK):  # step 1 of the period: nothing yet
        _close(w, w0, rel=0, abs=0)
        _close(b, b0, rel=0, abs=0)
    lrn.after_step([torch.tensor(h, dtype=torch.float64) for h in REDO_BATCHES[1]])
    g = generator(SEED, ALGO, REINIT)  # fresh rows, layer by layer: layer 1's unit 0, then layer 2's unit 0
    fresh1, fresh2 = init_weight(SPEC, 0, g, 1)[0].double(), init_weight(SPEC, 1, g, 1)[0].double()
    (w1, b1), (w2, b2), (w3, b3) = lrn.parameters()
    _close(w1, [fresh1.tolist(), W1[1], W1[2]], rel=0, abs=0)
    _close(b1, [0.0, 0.2, 0.3], rel=0, abs=0)
    # layer 1's unit 0: outgoing column W2[:, 0] zeroed; then layer 2's unit 0 gets a fresh row (W2[0, 0] too)
    _close(w2, [fresh2.tolist(), [0.0, 0.4, 0.8], [0.0, 0.4, -0.8]], rel=0, abs=0)
    _close(b2, [0.0, 0.9, 0.03], rel=0, abs=0)
    _close(w3, [[0.0, -0.6, 0.3], [0.0, 0.6, -0.9]], rel=0, abs=0)  # layer 2's unit 0: outgoing column zeroed
    _close(b3, B3, rel=0, abs=0)
    assert lrn.counts() == {"units_reset": [1, 1]}
