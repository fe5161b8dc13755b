"""Reset learners (SPEC 3.3-3.6) and optimisers (3.8): engine vs reference, properties, populations.

Rates are set high (rho ~ 1e-2, maturity 20) so that resets happen within a few hundred
steps; networks are small (784 -> 32 x 3 -> 10) so the whole file runs in seconds.
"""

import math

import numpy as np
import pytest
import torch

from conftest import optimizer
from learner_impls import adam_step_counts
from plasticity_lab.engine import Population
from plasticity_lab.engine import learners as E
from plasticity_lab.kernel import KernelPopulation
from plasticity_lab.kernel import learners as K
from plasticity_lab.network import NetworkSpec
from plasticity_lab.reference import ReferenceLearner
from plasticity_lab.reference.learners import adapted as RA, cbp as RC, redo as RR, shrink_perturb as RS
from plasticity_lab.reference.optim import ReadableAdam

STEPS = 300
FAST = dict(replacement_rate=1e-2, maturity_threshold=20)


def _data(K, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(K, n, 784, generator=g), torch.randint(0, 10, (K, n), generator=g)


def _max_diff(params_a, params_b):
    return max(max((Wa - Wb).abs().max().item(), (ba - bb).abs().max().item())
               for (Wa, ba), (Wb, bb) in zip(params_a, params_b))


def _spec(activation="relu", width=32):
    return NetworkSpec.mlp(784, width, 3, 10, activation)


def _engine_vs_reference(spec, engine_learner, ref_learner, steps=STEPS, tol=2e-5, seed=3, step_size=0.01,
                         weight_decay=0.0, batch_size=1, dtype=torch.float32, **opt):
    """Train both step by step on the same data; ages (i.e. which units were reset when) must be
    equal after every step, losses close, weights close at the end. Returns both.

    Settings that amplify rounding differences chaotically (large rescaling factors, Adam,
    momentum) are compared in float64, where the two agree to ~1e-12 after hundreds of steps.
    """
    x, y = _data(1, steps * batch_size, seed=seed)
    x = x.to(dtype)
    settings = optimizer(opt.pop("optimizer", "sgd"), step_size=step_size, **opt)
    pop = Population(spec, [seed], settings, weight_decay, learner=engine_learner, dtype=dtype)
    ref = ReferenceLearner(spec, seed, settings, weight_decay, learner=ref_learner, dtype=dtype)
    rel = 1e-3 if dtype == torch.float32 else 1e-9
    for s in range(0, steps * batch_size, batch_size):
        ref_loss, _ = ref.step(x[0, s : s + batch_size], y[0, s : s + batch_size])
        pop.train(x[:, s : s + batch_size], y[:, s : s + batch_size], batch_size)
        loss, _ = pop.take_totals()
        assert loss[0].item() == pytest.approx(ref_loss, rel=rel, abs=rel / 10), s
        if hasattr(ref_learner, "age"):
            for l in range(spec.num_hidden):
                assert torch.equal(engine_learner.age[l][0], ref_learner.age[l]), (s, l)
    diff = _max_diff(pop.parameters_of(0), ref.parameters())
    assert diff < tol, diff
    counts = pop.take_counts()
    ref_counts = ref.take_counts()
    assert {k: v[0].tolist() for k, v in counts.items()} == ref_counts
    return pop, ref, ref_counts


# ----------------------------------------------------------------------------- engine vs reference
@pytest.mark.parametrize("activation,kwargs", [
    ("relu", dict(util_type="contribution", **FAST)),
    ("tanh", dict(util_type="adaptable_contribution", replacement_rate=[1e-2, 2e-2, 5e-3],
                  maturity_threshold=[20, 10, 30], decay_rate=[0.99, 0.9, 0.95])),
    ("relu", dict(util_type="adaptable_contribution", **FAST)),
    ("tanh", dict(util_type="random", accumulate=False, bias_correction=True, replacement_rate=2e-3,
                  maturity_threshold=20)),
    ("tanh", dict(util_type="zero_contribution", bias_correction=True, **FAST)),
    ("relu", dict(util_type="feature_by_input", **FAST)),
    # [P]'s two-pass CBP: a high-utility pass with its own rate, re-initialisation without the gain
    ("relu", dict(util_type="contribution", high_replacement_rate=5e-3, reinit="no_gain", **FAST)),
    ("tanh", dict(util_type="adaptable_contribution", replacement_rate=[1e-2, 0.0, 5e-3],
                  high_replacement_rate=[0.0, 1e-2, 5e-3], maturity_threshold=[20, 10, 30], bias_correction=True)),
    ("tanh", dict(util_type="random", accumulate=False, replacement_rate=2e-3, high_replacement_rate=[2e-3, 0.0, 1e-3],
                  maturity_threshold=20, reinit="no_gain")),
])
def test_cbp_engine_matches_reference(activation, kwargs, coin_draws):
    per_member = {k: [v] if isinstance(v, list) else v for k, v in kwargs.items()}
    _, _, counts = _engine_vs_reference(_spec(activation), E.ContinualBackprop(**per_member),
                                        RC.ContinualBackprop(**kwargs))
    assert min(counts["units_reset"]) > 0  # replacements happened in every layer
    if kwargs.get("accumulate") is False:  # rho * 32 units < 1: a coin per pass, layer and step once units are mature
        rates = [kwargs["replacement_rate"], kwargs.get("high_replacement_rate", 0.0)]  # the low and the high pass
        coins_per_step = sum(r > 0 for rate in rates for r in (rate if isinstance(rate, list) else [rate] * 3))
        assert len(coin_draws) == 2 * coins_per_step * (STEPS - 20)  # engine and reference, steps 21..300


def test_cbp_many_replacements_per_step_match_reference():
    """Width 64 at rho 0.1: about 6 units per layer per step (like width 2000 at 1e-2: 20 a step)."""
    kwargs = dict(replacement_rate=0.1, maturity_threshold=5, util_type="adaptable_contribution")
    pop, _, counts = _engine_vs_reference(_spec("tanh", width=64), E.ContinualBackprop(**kwargs),
                                          RC.ContinualBackprop(**kwargs), steps=60)
    assert min(counts["units_reset"]) > 3 * 60  # ~4 a step (units stay immature for 5 steps)


def test_adapted_with_batches_matches_reference():
    kwargs = dict(c_low=-0.5, c_high=0.5, rho_low=2e-2, rho_high=1e-2, maturity_threshold=10, clip=2.0)
    _engine_vs_reference(_spec("relu"), E.AdaptedRescaling(**kwargs), RA.AdaptedRescaling(**kwargs), steps=100,
                         batch_size=8)


def test_cbp_with_adam_and_batches_matches_reference():
    _, _, counts = _engine_vs_reference(_spec("tanh"), E.ContinualBackprop(**FAST), RC.ContinualBackprop(**FAST),
                                        steps=200, optimizer="adam", step_size=1e-3, batch_size=4, tol=2e-5)
    assert min(counts["units_reset"]) > 0


ADAPTED_CASES = [
    ("relu", dict(c_low=-0.5, c_high=0.5, rho_low=1e-2, rho_high=5e-3, maturity_threshold=20, clip=None)),
    ("tanh", dict(c_low=[0.5, -1.0, 2.0], c_high=[0.2, 0.5, -0.5], rho_low=[1e-2, 2e-2, 5e-3],
                  rho_high=[5e-3, 1e-2, 2e-2], maturity_threshold=[20, 10, 15], clip=1.0)),
    # [P]'s "modified cfg" code: each pass ages and updates utilities; rescaled layers clamped to 5 / 10
    ("relu", dict(c_low=3.0, c_high=0.5, rho_low=2e-2, rho_high=2e-2, maturity_threshold=10, schedule="per_pass")),
    ("relu", dict(c_low=[-0.5, 3.0, 0.5], c_high=[0.5, 0.2, -2.0], rho_low=[2e-2, 0.0, 1e-2],
                  rho_high=[1e-2, 2e-2, 0.0], maturity_threshold=[0, 10, 15], schedule="per_pass")),
    ("tanh", dict(c_low=0.5, c_high=0.2, rho_low=1e-2, rho_high=1e-2, maturity_threshold=10, schedule="per_pass",
                  clip=None)),
]


# float32 only where no factor exceeds 1: factors > 1 amplify float32 rounding chaotically
# (engine and reference then part ways like two float32 runs of either one); float64 for all
@pytest.mark.parametrize("activation,kwargs,dtype,tol",
                         [(a, k, torch.float32, 2e-5) for a, k in ADAPTED_CASES[:1]]
                         + [(a, k, torch.float64, 1e-10) for a, k in ADAPTED_CASES])
def test_adapted_engine_matches_reference(activation, kwargs, dtype, tol):
    per_member = {k: [v] if isinstance(v, list) else v for k, v in kwargs.items()}
    _, _, counts = _engine_vs_reference(_spec(activation), E.AdaptedRescaling(**per_member),
                                        RA.AdaptedRescaling(**kwargs), dtype=dtype, tol=tol)
    rates = {side: kwargs[f"rho_{side}"] for side in ("low", "high")}
    for side, rate in rates.items():  # every (layer, pass) with a rate rescaled something
        on = [r > 0 for r in (rate if isinstance(rate, list) else [rate] * 3)]
        assert all(c > 0 for c, o in zip(counts[f"units_rescaled_{side}"], on) if o)
        assert all(c == 0 for c, o in zip(counts[f"units_rescaled_{side}"], on) if not o)


@pytest.mark.parametrize("kwargs", [dict(sigma=1e-3), dict(mode="toward_init", shrink=0.99)])
def test_shrink_perturb_engine_matches_reference(kwargs):
    # tanh: with ReLU a 1e-8 difference can flip a unit sitting at 0 and the runs part ways
    _engine_vs_reference(_spec("tanh"), E.ShrinkPerturb(**kwargs), RS.ShrinkPerturb(**kwargs), weight_decay=1e-4,
                         tol=5e-5)
    _engine_vs_reference(_spec("tanh"), E.ShrinkPerturb(**kwargs), RS.ShrinkPerturb(**kwargs), weight_decay=1e-4,
                         dtype=torch.float64, tol=1e-10, steps=100)


def test_redo_engine_matches_reference():
    _, _, counts = _engine_vs_reference(_spec("relu"), E.ReDo(reset_period=50, tau=[[0.5, 0.3, 0.0]]),
                                        RR.ReDo(reset_period=50, tau=[0.5, 0.3, 0.0]))
    assert min(counts["units_reset"][:2]) > 0


@pytest.mark.parametrize("opt", [dict(optimizer="sgd", momentum=0.9), dict(optimizer="adam", step_size=1e-3),
                                 dict(optimizer="adam", betas=(0.8, 0.99), eps=1e-6, step_size=3e-3)])
def test_optimizers_engine_match_reference(opt):
    # float32: momentum and Adam amplify last-bit differences of the two summation orders (which differ
    # between CPUs' vector units, ~1e-4 after 200 steps with momentum 0.9); float64 is the exact check.
    _engine_vs_reference(_spec("tanh"), None, None, steps=200, weight_decay=1e-3, tol=5e-4, **opt)
    _engine_vs_reference(_spec("tanh"), None, None, steps=100, weight_decay=1e-3, dtype=torch.float64, tol=1e-10, **opt)


def test_cbp_with_adam_matches_reference_in_float64():
    _engine_vs_reference(_spec("relu"), E.ContinualBackprop(**FAST), RC.ContinualBackprop(**FAST), steps=200,
                         optimizer="adam", step_size=1e-3, dtype=torch.float64, tol=1e-10)


def test_readable_adam_equals_torch_adam_without_resets():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(20, 5), torch.nn.Linear(20, 5)
    b.load_state_dict(a.state_dict())
    opt_a = ReadableAdam(a.parameters(), lr=1e-2, weight_decay=1e-3)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(50):
        x = torch.randn(3, 20)
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    assert (a.weight - b.weight).abs().max() < 1e-6 and (a.bias - b.bias).abs().max() < 1e-6
    assert (a.weight - torch.nn.Linear(20, 5).weight).abs().max() > 1e-2


# ----------------------------------------------------------------------------- properties
def _watch(learner):
    """Wrap ``learner.after_step`` to snapshot the population's state just before it acts."""
    snaps = []
    original = learner.after_step

    def after_step(pop, fwd):
        snaps.append(dict(W=[W.clone() for W in pop.W], b=[b.clone() for b in pop.b],
                          age=[a.clone() for a in getattr(learner, "age", [])], t=pop.t,
                          u=[u.clone() for u in getattr(learner, "u", [])],
                          h=[h.clone() for h in fwd.inputs]))
        original(pop, fwd)
        snaps[-1].update(W_after=[W.clone() for W in pop.W], b_after=[b.clone() for b in pop.b],
                         age_after=[a.clone() for a in getattr(learner, "age", [])])

    learner.after_step = after_step
    return snaps


def test_cbp_touches_only_mature_units_and_host_counts_match_device_ages():
    m = [20, 35, 5]
    learner = E.ContinualBackprop(replacement_rate=[[0.05, 0.02, 0.1], [0.03, 0.0, 0.01]], maturity_threshold=[m, m])
    pop = Population(_spec(), [0, 1], optimizer(step_size=0.01), learner=learner)
    snaps = _watch(learner)
    x, y = _data(2, 250)
    replaced = 0
    for s in range(250):
        pop.train(x[:, s : s + 1], y[:, s : s + 1])
        snap = snaps[-1]
        resets = []
        for l in range(3):
            before, after = snap["age"][l], snap["age_after"][l]
            active = learner.active[:, l]
            reset = (after == 0) & torch.as_tensor(active).unsqueeze(1)  # inactive layers never age (all 0)
            resets.append(reset)
            assert (before[reset] + 1 > m[l]).all()  # age at decision time > m
            changed = snap["W"][l] != snap["W_after"][l]
            if l > 0:  # ignore the columns of layer l-1's replaced units (their outgoing weights were zeroed)
                changed &= ~resets[l - 1].unsqueeze(1)
            assert torch.equal(changed.any(dim=2), reset)  # only replaced units' input rows changed
            replaced += int(reset.sum())
            # host-side eligibility (no device sync) equals the device ages
            host = learner.maturity.widths[:, l] - learner.maturity.immature[:, l]
            assert host.tolist() == (after > m[l]).sum(dim=1).tolist()
    assert replaced > 50
    assert (learner.age[1][1] == 0).all()  # member 1 has rate 0 in layer 2: skipped entirely
    assert (learner.u[1][1] == 0).all()


def test_fractional_accumulation_gives_floor_of_the_sum():
    rho = [0.013, 0.007, 0.021]
    learner = E.ContinualBackprop(replacement_rate=[rho], maturity_threshold=15)
    pop = Population(_spec(), [4], optimizer(step_size=0.01), learner=learner)
    x, y = _data(1, 400)
    expected = [[] for _ in range(3)]
    for s in range(400):
        for l in range(3):
            expected[l].append(rho[l] * int((learner.age[l][0] + 1 > 15).sum()))  # #eligible after ageing
        pop.train(x[:, s : s + 1], y[:, s : s + 1])
    total = pop.take_counts()["units_reset"][0]
    assert total.tolist() == [math.floor(math.fsum(e)) for e in expected]
    assert min(total) > 0


def test_coin_mode_replaces_at_most_one_unit_per_step_with_the_right_rate(coin_draws):
    learner = E.ContinualBackprop(replacement_rate=2e-3, maturity_threshold=0, accumulate=False)
    pop = Population(_spec(width=50), [0, 1, 2, 3], optimizer(step_size=0.01), learner=learner)
    x, y = _data(4, 500)
    per_step = []
    for s in range(500):
        pop.train(x[:, s : s + 1], y[:, s : s + 1])
        per_step.append(pop.take_counts()["units_reset"])
    per_step = np.stack(per_step)  # (steps, K, L)
    assert len(coin_draws) == 500 * 4 * 3  # the coin branch ran: one coin per step, member and layer
    assert per_step.max() == 1  # rho * #eligible = 0.1 < 1: one unit with probability 0.1
    mean = per_step.mean()
    assert 0.07 < mean < 0.13, mean  # 6000 Bernoulli(0.1) draws: sd 0.004
    # members draw their own coins: different members replace at different steps
    assert not np.array_equal(per_step[:, 0], per_step[:, 1])


def test_cbp_replacement_leaves_outputs_unchanged_and_draws_from_init():
    spec = _spec()
    learner = E.ContinualBackprop(replacement_rate=[[0.05, 0.0, 0.0]], maturity_threshold=10)
    pop = Population(spec, [5], optimizer(step_size=0.01), learner=learner)
    snaps = _watch(learner)
    x, y = _data(1, 200)
    probe = _data(1, 64, seed=9)[0]
    checked = 0
    for s in range(200):
        pop.train(x[:, s : s + 1], y[:, s : s + 1])
        snap = snaps[-1]
        rows = (snap["W"][0] != snap["W_after"][0]).any(dim=2)[0]
        if not rows.any():
            continue
        units = torch.nonzero(rows).flatten()
        after = pop.predict(probe)
        # the same network before the replacement, with the old units' outgoing weights removed
        W = [w.clone() for w in snap["W"]]
        W[1][:, :, units] = 0.0
        saved = [w.clone() for w in pop.W]
        for l in range(len(W)):
            pop.W[l].copy_(W[l])
        before = pop.predict(probe)
        for l in range(len(W)):
            pop.W[l].copy_(saved[l])
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)  # the new unit has no effect yet
        assert (pop.W[1][0][:, units] == 0).all() and (pop.b[0][0, units] == 0).all()
        bound = spec.init_bound(0)
        assert (pop.W[0][0, units].abs() <= bound).all()
        assert learner.age[0][0, units].eq(0).all() and learner.u[0][0, units].eq(0).all()
        checked += 1
    assert checked > 5


def test_rescale_multiplies_exactly_the_input_row_and_bias():
    c_low, c_high = [-0.5, 2.0, 0.3], [0.25, -1.0, 1.5]
    learner = E.AdaptedRescaling(c_low=[c_low], c_high=[c_high], rho_low=0.02, rho_high=0.02,
                                 maturity_threshold=10, clip=None)
    pop = Population(_spec("tanh"), [2], optimizer(step_size=0.01), learner=learner)
    snaps = _watch(learner)
    x, y = _data(1, 200)
    low = high = 0
    for s in range(200):
        pop.train(x[:, s : s + 1], y[:, s : s + 1])
        snap = snaps[-1]
        for l in range(3):
            rescaled = (snap["age_after"][l][0] == 0)
            if not rescaled.any():
                continue
            units = torch.nonzero(rescaled).flatten()
            W0, W1, b0, b1 = snap["W"][l][0], snap["W_after"][l][0], snap["b"][l][0], snap["b_after"][l][0]
            for i in units.tolist():
                ok_low = torch.equal(W1[i], W0[i] * c_low[l]) and torch.equal(b1[i], b0[i] * c_low[l])
                ok_high = torch.equal(W1[i], W0[i] * c_high[l]) and torch.equal(b1[i], b0[i] * c_high[l])
                assert ok_low or ok_high
                low += ok_low
                high += ok_high and not ok_low
            others = ~rescaled
            assert torch.equal(W1[others], W0[others]) and torch.equal(b1[others], b0[others])
            # outgoing weights untouched: the next layer's rows change only where that layer rescaled
            kept = torch.ones(snap["W"][l + 1].shape[1], dtype=torch.bool) if l == 2 else snap["age_after"][l + 1][0] != 0
            assert torch.equal(snap["W_after"][l + 1][0][kept], snap["W"][l + 1][0][kept])
    assert low > 0 and high > 0


def _first_decisions(learner, m: int, width: int):
    """Train ``learner`` on a tanh net to step m + 1, when every unit has age m + 1 > m (the first
    decisions); returns the population and the snapshot of that step (``_watch``)."""
    pop = Population(_spec("tanh", width=width), [1], optimizer(step_size=0.01), learner=learner)
    snaps = _watch(learner)
    x, y = _data(1, m + 1)
    pop.train(x, y)
    return pop, snaps[-1]


def test_adapted_low_pass_picks_lowest_and_high_pass_highest_utilities():
    c_low, c_high, m, H = 0.5, 2.0, 5, 40
    learner = E.AdaptedRescaling(c_low=c_low, c_high=c_high, rho_low=0.1, rho_high=0.1, maturity_threshold=m, clip=None)
    _, snap = _first_decisions(learner, m, H)
    for l in range(3):
        # what the learner ranks: this step's running mean of the SIGNED activation, bias-corrected
        u = torch.lerp(snap["u"][l][0], snap["h"][l + 1][0, 0], 1 - 0.99)
        u_hat = u / (1 - 0.99 ** (m + 1))
        W0, W1 = snap["W"][l][0], snap["W_after"][l][0]
        low = [i for i in range(H) if torch.equal(W1[i], W0[i] * c_low) and not torch.equal(W1[i], W0[i])]
        high = [i for i in range(H) if torch.equal(W1[i], W0[i] * c_high) and not torch.equal(W1[i], W0[i])]
        assert len(low) == 4 and len(high) == 3  # 0.1 * 40 = 4; then 0.1 * 36 = 3.6 -> 3 (0.6 carried)
        order = torch.argsort(u_hat).tolist()
        assert set(low) == set(order[:4])
        assert set(high) == set([i for i in order[::-1] if i not in low][:3])
    assert learner.acc["high"][0].tolist() == pytest.approx([0.6] * 3)


def test_clip_bounds_every_hidden_layer():
    learner = E.AdaptedRescaling(c_low=3.0, c_high=3.0, rho_low=0.02, rho_high=0.02, maturity_threshold=5, clip=0.05)
    pop = Population(_spec("relu"), [0], optimizer(step_size=0.05), learner=learner)
    x, y = _data(1, 100)
    pop.train(x, y)
    for l in range(3):
        assert pop.W[l].abs().max() <= 0.05 and pop.b[l].abs().max() <= 0.05
    assert pop.W[3].abs().max() > 0.05  # the output layer is not clipped


def test_cbp_high_pass_replaces_the_highest_utility_units_left_by_the_low_pass():
    """[P]'s two-pass CBP: the low pass takes the 4 lowest u_hat of 40 mature units, then the high
    pass floor(0.1 * 36) = 3 of the HIGHEST among the other 36 (0.6 carried in its own accumulator)."""
    m, H, eta = 5, 40, 0.99
    learner = E.ContinualBackprop(replacement_rate=0.1, high_replacement_rate=0.1, maturity_threshold=m,
                                  util_type="contribution")
    pop, snap = _first_decisions(learner, m, H)
    for l in range(3):
        # contribution utility by hand: mean_k |W_next[k, i]| * |h_i|, averaged with decay eta
        x_util = snap["W"][l + 1][0].abs().mean(dim=0) * snap["h"][l + 1][0, 0].abs()
        u_hat = torch.lerp(snap["u"][l][0], x_util, 1 - eta) / (1 - eta ** (m + 1))
        replaced = set(torch.nonzero(snap["age_after"][l][0] == 0).flatten().tolist())
        order = torch.argsort(u_hat).tolist()
        low = order[:4]
        high = [i for i in order[::-1] if i not in low][:3]
        assert replaced == set(low) | set(high)
    assert learner.acc_high[0].tolist() == pytest.approx([0.6] * 3)
    assert learner.acc[0].tolist() == pytest.approx([0.0] * 3)
    assert pop.take_counts()["units_reset"][0].tolist() == [7, 7, 7]


def test_cbp_reinit_no_gain_draws_the_same_rows_without_the_activation_gain():
    """reinit=no_gain ([P]): U(-sqrt(3 / fan_in), +); reinit=init: the layer's Kaiming bound, sqrt(2) larger
    for relu. Same seed, same draws: the rows differ exactly by the gain."""
    spec = _spec("relu")
    rows = {}
    for reinit in ("init", "no_gain"):
        learner = E.ContinualBackprop(replacement_rate=[[0.05, 0.0, 0.0]], maturity_threshold=10, reinit=reinit)
        pop = Population(spec, [5], optimizer(step_size=0.01), learner=learner)
        snaps = _watch(learner)
        x, y = _data(1, 11)
        pop.train(x, y)  # the first replacement in layer 1 at step 11 (floor(0.05 * 32) = 1)
        replaced = (snaps[-1]["W"][0] != snaps[-1]["W_after"][0]).any(dim=2)[0]
        assert replaced.sum() == 1 and all(not (s["W"][0] != s["W_after"][0]).any() for s in snaps[:-1])
        rows[reinit] = pop.W[0][0, replaced]
    bound = math.sqrt(3 / 784)
    assert spec.gain(0) == pytest.approx(math.sqrt(2))
    torch.testing.assert_close(rows["no_gain"] * math.sqrt(2), rows["init"], rtol=1e-6, atol=0)
    assert rows["no_gain"].abs().max() <= bound and rows["no_gain"].abs().max() > 0.95 * bound
    assert rows["init"].abs().max() > 1.3 * bound


def test_adapted_per_pass_ages_and_updates_the_utility_once_per_pass():
    """schedule=per_pass ([P]'s modified code): where both rates are > 0 a unit ages 2 per step and its
    running mean decays as eta^2 (u <- eta (eta u + (1 - eta) a) + (1 - eta) a); with one rate, once.
    per_step ages every active layer once."""
    eta, steps = 0.9, 30
    per_pass = E.AdaptedRescaling(rho_low=[[0.5, 0.5, 0.0]], rho_high=[[0.5, 0.0, 0.5]], maturity_threshold=1000,
                                  decay_rate=eta, schedule="per_pass")
    per_step = E.AdaptedRescaling(rho_low=[[0.5, 0.5, 0.0]], rho_high=[[0.5, 0.0, 0.5]], maturity_threshold=1000,
                                  decay_rate=eta)
    for learner in (per_pass, per_step):
        pop = Population(_spec("tanh"), [0], optimizer(step_size=0.01), learner=learner)
        snaps = _watch(learner)
        x, y = _data(1, steps)
        pop.train(x, y)
        ticks = [2, 1, 1] if learner is per_pass else [1, 1, 1]
        for l in range(3):
            assert learner.age[l][0].eq(ticks[l] * steps).all()
            u = torch.zeros_like(learner.u[l][0])
            for snap in snaps:
                for _ in range(ticks[l]):
                    u = eta * u + (1 - eta) * snap["h"][l + 1][0, 0]
            torch.testing.assert_close(learner.u[l][0], u, rtol=1e-5, atol=1e-7)


def test_adapted_per_pass_clamps_only_a_layer_it_rescaled_to_5_and_10():
    """[P]'s modified code clamps weights to [-5, 5] and biases to [-10, 10], in a layer where a unit was
    rescaled at that step only; per_step clamps every hidden layer to [-clip, clip] every step."""
    learner = E.AdaptedRescaling(c_low=1.0, c_high=1.0, rho_low=[[0.0, 0.05, 0.0]], rho_high=0.0,
                                 maturity_threshold=10, schedule="per_pass")
    pop = Population(_spec("relu"), [0], optimizer(step_size=1e-4), learner=learner)
    with torch.no_grad():
        for l in (1, 2):  # hidden layers 2 and 3: one weight and one bias beyond the bounds
            pop.W[l][0, 0, 0] = 8.0
            pop.b[l][0, 0] = 20.0
    snaps = _watch(learner)
    x, y = _data(1, 11)
    pop.train(x, y)  # layer 2's units mature (age > 10) at step 11: the first rescale
    assert all(s["W_after"][1].abs().max() > 7.9 and s["b_after"][1].abs().max() > 19.9 for s in snaps[:-1])
    assert pop.take_counts()["units_rescaled_low"][0].tolist() == [0, 1, 0]
    assert pop.W[1].abs().max() == 5.0 and pop.b[1].abs().max() == 10.0  # rescaled layer: clamped
    assert pop.W[2].abs().max() > 7.9 and pop.b[2].abs().max() > 19.9  # layer 3 rescaled nothing: untouched
    assert pop.W[0].abs().max() < 1.0  # (layer 1's weights are small anyway)
    every_step = E.AdaptedRescaling(c_low=1.0, c_high=1.0, rho_low=[[0.0, 0.05, 0.0]], rho_high=0.0,
                                    maturity_threshold=10, clip=3.0)
    pop = Population(_spec("relu"), [0], optimizer(step_size=1e-4), learner=every_step)
    with torch.no_grad():
        pop.W[2][0, 0, 0] = 8.0
    pop.train(x[:, :1], y[:, :1])  # no unit is mature yet, every layer is clamped all the same
    assert pop.W[2].abs().max() == 3.0


def test_adam_state_is_zeroed_only_for_replaced_units():
    learner = E.ContinualBackprop(replacement_rate=[[0.05, 0.0, 0.0]] * 2, maturity_threshold=10)
    pop = Population(_spec("tanh"), [0, 1], optimizer("adam", step_size=1e-3), learner=learner)
    opt = pop.optimizer
    x, y = _data(2, 100)
    seen = 0
    last_reset = torch.zeros(2, 32, dtype=torch.long)  # step of each unit's last replacement, kept by the test
    for s in range(100):
        m_before = [m.clone() for m in opt.m[0]]
        pop.train(x[:, s : s + 1], y[:, s : s + 1])
        for k in range(2):
            reset = learner.age[0][k] == 0
            if not reset.any():
                continue
            seen += 1
            assert (opt.m[0][0][k][reset] == 0).all() and (opt.v[0][0][k][reset] == 0).all()
            assert (opt.m[1][0][k][reset] == 0).all() and (opt.v[1][0][k][reset] == 0).all()
            assert (opt.m[0][1][k][:, reset] == 0).all() and (opt.v[0][1][k][:, reset] == 0).all()
            # other rows / columns keep their moments (those that had any before this step)
            had = (m_before[0][k] != 0).any(dim=1) & ~reset
            assert (opt.m[0][0][k][had] != 0).any(dim=1).all()
            had = (m_before[1][k] != 0).any(dim=0) & ~reset
            assert (opt.m[0][1][k][:, had] != 0).any(dim=0).all()
            assert had.sum() > 20
            last_reset[k][reset] = pop.t
            steps = adam_step_counts(opt, 0, 0)[k]
            assert (steps[reset] == 0).all()
            assert torch.equal(steps, (pop.t - last_reset[k]).unsqueeze(1).expand_as(steps))
            assert torch.equal(adam_step_counts(opt, 1, 0)[k], pop.t - last_reset[k])
            assert torch.equal(adam_step_counts(opt, 0, 1)[k], (pop.t - last_reset[k]).unsqueeze(0).expand(32, 32))
    assert seen > 3


def test_redo_recycles_dead_units_every_period_only():
    learner = E.ReDo(reset_period=25, tau=0.0)
    pop = Population(_spec("relu"), [0], optimizer(step_size=0.01), learner=learner)
    with torch.no_grad():
        pop.W[0][0, :5] = -1.0  # five dead units in layer 1 (inputs are >= 0)
    snaps = _watch(learner)
    x, y = _data(1, 50)
    pop.train(x, y)
    changed = [int((s["W"][0] != s["W_after"][0]).any(dim=2).sum()) for s in snaps]
    assert changed[24] >= 5 and sum(changed) == changed[24] + changed[49]  # only at steps 25 and 50
    after = snaps[24]
    recycled1 = (after["W"][0][0] != after["W_after"][0][0]).any(dim=1)
    recycled2 = ((after["W"][1][0] != after["W_after"][1][0]) & ~recycled1).any(dim=1)
    kept = ~recycled2  # layer-2 units not recycled themselves (those get fresh rows)
    assert kept.sum() > 20 and (after["W_after"][1][0][kept, :5] == 0).all()
    assert (after["b_after"][0][0, :5] == 0).all()
    assert (after["W_after"][0][0, :5].abs() <= _spec().init_bound(0)).all()
    assert pop.take_counts()["units_reset"][0][0] == changed[24] + changed[49]


# ----------------------------------------------------------------------------- populations
MEMBERS = [0, 1, 2, 3]


def _population_equals_alone(make, seeds=MEMBERS, tol=1e-6, steps=200, activation="tanh", **pop_kwargs):
    """Member k of a population built with make(list_of_k) equals a population of one built with make([k])."""
    spec = _spec(activation)
    x, y = _data(len(seeds), steps, seed=7)
    per = {key: v for key, v in pop_kwargs.items()}

    def values(sel):
        return {key: ([v[k] for k in sel] if isinstance(v, list) else v) for key, v in per.items()}

    def build(sel):
        chosen = values(sel)
        weight_decay = chosen.pop("weight_decay", 0.0)
        settings = optimizer(chosen.pop("optimizer", "sgd"), **chosen)
        return Population(spec, [seeds[k] for k in sel], settings, weight_decay, learner=make(sel))

    idx = list(range(len(seeds)))
    pop = build(idx)
    pop.train(x, y)
    counts = pop.take_counts()
    for k in idx:
        alone = build([k])
        alone.train(x[k : k + 1], y[k : k + 1])
        diff = _max_diff(pop.parameters_of(k), alone.parameters_of(0))
        assert diff < tol, (k, diff)
        for name, c in alone.take_counts().items():
            assert counts[name][k].tolist() == c[0].tolist()
    assert _max_diff(pop.parameters_of(0), pop.parameters_of(1)) > 1e-3
    return counts


def _pick(values, sel):
    return [values[k] for k in sel]


def test_population_members_equal_runs_alone_cbp():
    rates = [[1e-2, 2e-2, 0.0], [5e-3, 1e-2, 1e-2], [2e-2, 0.0, 0.0], [0.0, 0.0, 1e-2]]
    counts = _population_equals_alone(
        lambda sel: E.ContinualBackprop(replacement_rate=_pick(rates, sel), decay_rate=_pick([0.99, 0.9, 0.95, 0.99], sel),
                                        maturity_threshold=_pick([20, 10, [5, 10, 15], 30], sel)),
        step_size=[0.01, 0.003, 0.01, 0.03], activation="relu")
    assert counts["units_reset"].sum() > 20


def test_population_members_equal_runs_alone_cbp_high_pass_and_reinit():
    counts = _population_equals_alone(
        lambda sel: E.ContinualBackprop(replacement_rate=_pick([1e-2, [5e-3, 0.0, 1e-2], 0.0, 2e-2], sel),
                                        high_replacement_rate=_pick([5e-3, [0.0, 1e-2, 1e-2], 1e-2, 0.0], sel),
                                        maturity_threshold=_pick([20, 10, 15, 30], sel), util_type="contribution",
                                        reinit="no_gain"),
        step_size=0.01, activation="relu")
    assert counts["units_reset"].sum() > 20


def test_population_members_equal_runs_alone_cbp_coins_random_utility_adam(coin_draws):
    _population_equals_alone(
        lambda sel: E.ContinualBackprop(replacement_rate=_pick([1e-3, 2e-3, 5e-3, 1e-2], sel), maturity_threshold=10,
                                        util_type="random", accumulate=False),
        optimizer="adam", step_size=1e-3, betas=[(0.9, 0.999), (0.8, 0.99), (0.9, 0.999), (0.95, 0.9)], tol=2e-6)
    # rho * 32 eligible < 1 for every member: a coin per member, layer and step from step 11 on, in the
    # population and in the four runs alone
    assert len(coin_draws) == 2 * 4 * 3 * (200 - 10)


def test_population_members_equal_runs_alone_adapted():
    _population_equals_alone(
        lambda sel: E.AdaptedRescaling(c_low=_pick([-0.5, [0.5, 1, 2], 2.0, 0.0], sel),
                                       c_high=_pick([0.5, 0.2, [-1, 0.5, 1.5], 1.0], sel),
                                       rho_low=_pick([1e-2, 2e-2, 0.0, 5e-3], sel), rho_high=_pick([5e-3, 0.0, 1e-2, 1e-2], sel),
                                       maturity_threshold=_pick([10, 20, 5, 15], sel), clip=_pick([10.0, None, 0.5, 1.0], sel)),
        step_size=0.01)


def test_population_members_equal_runs_alone_adapted_per_pass():
    """Members whose passes tick different layers keep their own maturity clocks (per_pass)."""
    counts = _population_equals_alone(
        lambda sel: E.AdaptedRescaling(c_low=_pick([-0.5, 0.5, 2.0, 0.0], sel), c_high=_pick([0.5, 0.2, 1.0, 1.5], sel),
                                       rho_low=_pick([1e-2, [2e-2, 0.0, 1e-2], 0.0, 5e-3], sel),
                                       rho_high=_pick([5e-3, [0.0, 1e-2, 1e-2], 1e-2, 0.0], sel),
                                       maturity_threshold=_pick([10, [0, 5, 20], 5, 15], sel),
                                       clip=_pick([10.0, None, 10.0, 10.0], sel), schedule="per_pass"),
        step_size=0.01)
    assert counts["units_rescaled_low"].sum() > 10 and counts["units_rescaled_high"].sum() > 10


def test_population_members_equal_runs_alone_shrink_perturb_and_redo():
    _population_equals_alone(lambda sel: E.ShrinkPerturb(sigma=_pick([1e-3, 0.0, 1e-4, 3e-3], sel)),
                             step_size=0.01, weight_decay=[1e-4, 0.0, 1e-3, 1e-4])
    _population_equals_alone(lambda sel: E.ShrinkPerturb(mode="toward_init", shrink=_pick([0.99, 1.0, 0.999, 0.9], sel)),
                             step_size=0.01)
    _population_equals_alone(lambda sel: E.ReDo(reset_period=_pick([20, 50, 30, 100], sel),
                                                tau=_pick([0.5, 0.1, [0.0, 0.3, 0.6], 0.2], sel)),
                             step_size=0.01, activation="relu")


def test_population_members_equal_runs_alone_momentum():
    # a member with momentum 0 takes the materialised path in a population with momentum members
    # and the fused path alone: equal up to rounding
    _population_equals_alone(lambda sel: None, step_size=0.01, momentum=[0.9, 0.0, 0.5, 0.99], tol=1e-5)


@pytest.mark.parametrize("make,opt,backend", [
    (lambda: E.ContinualBackprop(**FAST), {}, Population),
    (lambda: E.AdaptedRescaling(rho_low=1e-2, rho_high=1e-2, maturity_threshold=20), {}, Population),
    (lambda: E.AdaptedRescaling(rho_low=1e-2, rho_high=1e-2, maturity_threshold=20, schedule="per_pass"), {},
     Population),
    (lambda: E.ContinualBackprop(high_replacement_rate=1e-2, **FAST), {}, Population),
    (lambda: E.ShrinkPerturb(sigma=1e-3), dict(optimizer="adam"), Population),
    (lambda: E.ReDo(reset_period=20), dict(optimizer="sgd", momentum=0.9), Population),
    (lambda: K.KernelContinualBackprop(**FAST), dict(momentum=0.9), KernelPopulation),
    (lambda: K.KernelAdaptedRescaling(rho_low=1e-2, rho_high=1e-2, maturity_threshold=20), {}, KernelPopulation),
])
def test_diverged_member_is_frozen_with_learners_and_others_are_unaffected(make, opt, backend):
    spec = _spec("relu")
    x, y = _data(2, 200)
    name = opt.pop("optimizer", "sgd")
    pop = backend(spec, [0, 1], optimizer(name, step_size=[1e30, 0.01], **opt), learner=make())
    pop.train(x[:, :100], y[:, :100])
    loss, _ = pop.take_totals()
    assert not torch.isfinite(loss[0]) and torch.isfinite(loss[1])
    pop.freeze(0)
    pop.train(x[:, 100:], y[:, 100:])
    loss, _ = pop.take_totals()
    assert torch.isfinite(loss).all()
    assert all(torch.isfinite(W[0]).all() for W in pop.W)
    alone = backend(spec, [1], optimizer(name, step_size=0.01, **opt), learner=make())
    alone.train(x[1:], y[1:])
    assert _max_diff(pop.parameters_of(1), alone.parameters_of(0)) < 1e-6

