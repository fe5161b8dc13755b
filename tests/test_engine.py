"""The population engine against the reference learner, and members against runs alone."""

import pytest
import torch

from conftest import optimizer
from plasticity_lab.engine import Population
from plasticity_lab.network import NetworkSpec
from plasticity_lab.reference import ReferenceLearner

STEPS = 250


def _data(K, n, seed=0, n_in=784):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(K, n, n_in, generator=g), torch.randint(0, 10, (K, n), generator=g)


def _max_diff(params_a, params_b):
    return max(max((Wa - Wb).abs().max().item(), (ba - bb).abs().max().item())
               for (Wa, ba), (Wb, bb) in zip(params_a, params_b))


@pytest.mark.parametrize("activation", ["relu", "tanh", ["relu", "tanh", "sigmoid"], ["selu", "gelu", "swish"]])
@pytest.mark.parametrize("batch_size,weight_decay", [(1, 0.0), (1, 1e-3), (4, 1e-2)])
def test_engine_matches_reference_step_by_step(activation, batch_size, weight_decay):
    spec = NetworkSpec.mlp(784, 64, 3, 10, activation)
    x, y = _data(1, STEPS * batch_size)
    pop = Population(spec, [7], optimizer(step_size=0.01), weight_decay=weight_decay)
    ref = ReferenceLearner(spec, 7, optimizer(step_size=0.01), weight_decay=weight_decay)
    assert _max_diff(pop.parameters_of(0), ref.parameters()) == 0.0  # identical init
    for s in range(0, STEPS * batch_size, batch_size):
        ref_loss, ref_correct = ref.step(x[0, s : s + batch_size], y[0, s : s + batch_size])
        pop.train(x[:, s : s + batch_size], y[:, s : s + batch_size], batch_size)
        loss, correct = pop.take_totals()
        assert loss[0].item() == pytest.approx(ref_loss, rel=1e-4, abs=1e-5)
        assert correct[0].item() == ref_correct
    diff = _max_diff(pop.parameters_of(0), ref.parameters())
    assert diff < 2e-5, diff
    moved = _max_diff(pop.parameters_of(0), ReferenceLearner(spec, 7, optimizer(step_size=0.01)).parameters())
    assert moved > 1e-3  # training really changed the weights, so agreeing means something


def test_member_of_population_equals_run_alone():
    spec = NetworkSpec.mlp(784, 50, 2, 10, "tanh")
    seeds, alphas, decays = [0, 1, 2, 3], [0.003, 0.01, 0.03, 0.003], [0.0, 1e-3, 0.0, 1e-2]
    x, y = _data(4, 300, seed=3)
    pop = Population(spec, seeds, optimizer(step_size=alphas), decays)
    pop.train(x, y)
    totals = pop.take_totals()
    for k in range(4):
        alone = Population(spec, [seeds[k]], optimizer(step_size=alphas[k]), decays[k])
        alone.train(x[k : k + 1], y[k : k + 1])
        loss, correct = alone.take_totals()
        assert _max_diff(pop.parameters_of(k), alone.parameters_of(0)) < 1e-6
        assert loss[0].item() == pytest.approx(totals[0][k].item(), rel=1e-6)
        assert correct[0] == totals[1][k]
    assert _max_diff(pop.parameters_of(0), pop.parameters_of(1)) > 1e-3


def test_diverging_member_is_frozen_and_others_are_unaffected():
    spec = NetworkSpec.mlp(784, 32, 2, 10, "relu")
    x, y = _data(2, 200)
    pop = Population(spec, [0, 1], optimizer(step_size=[1e6, 0.01]))
    pop.train(x[:, :100], y[:, :100])
    loss, _ = pop.take_totals()
    assert not torch.isfinite(loss[0]) and torch.isfinite(loss[1])
    pop.freeze(0)
    pop.train(x[:, 100:], y[:, 100:])
    loss, _ = pop.take_totals()
    assert torch.isfinite(loss).all()
    alone = Population(spec, [1], optimizer(step_size=0.01))
    alone.train(x[1:], y[1:])
    assert _max_diff(pop.parameters_of(1), alone.parameters_of(0)) < 1e-6


def test_rejects_wrong_number_of_per_member_values():
    spec = NetworkSpec.mlp(4, 3, 1, 2, "relu")
    with pytest.raises(ValueError, match="optimizer: expected one optimiser's settings or 3"):
        Population(spec, [0, 1, 2], optimizer(step_size=[0.1, 0.2]))
    with pytest.raises(ValueError, match="per-member values"):
        Population(spec, [0, 1, 2], optimizer(step_size=0.1), weight_decay=[0.0, 1e-3])
