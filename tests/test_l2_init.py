"""L2 Init (Kumar et al. 2023; engine/learners/l2_init.py, reference/learners/l2_init.py): the engine
equals the readable reference (which differentiates the regularised loss by autograd), a population
member equals the member alone, the step equals the paper's gradient computed by hand, and an
interrupted run resumes exactly."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from learner_impls import IMPLEMENTATIONS, assert_checkpoint_continues_exactly
from plasticity_lab.config import parse_config
from plasticity_lab.engine.learners.l2_init import L2Init
from plasticity_lab.network import NetworkSpec, initial_parameters
from plasticity_lab.reference.learners import l2_init as R
from test_learners import _engine_vs_reference, _pick, _population_equals_alone, _spec
from test_resume import assert_regression_run_resumes


@pytest.mark.parametrize("opt,dtype,tol", [
    ({}, torch.float32, 2e-5), ({}, torch.float64, 1e-10),
    (dict(momentum=0.9), torch.float64, 1e-10), (dict(optimizer="adam", step_size=1e-3), torch.float64, 1e-10),
])
def test_engine_matches_reference(opt, dtype, tol):
    """Engine (g + 2 lambda (theta - theta_0) added to the materialised gradient) and reference (autograd of
    lambda ||theta - theta_0||^2 added to the loss) agree step by step, with every optimiser; lambda is
    large enough to pull the weights measurably (compared with plain SGD below)."""
    opt = {"step_size": 0.01, **opt}
    pop, _, _ = _engine_vs_reference(_spec("tanh"), L2Init(lambda_=0.05), R.L2Init(lambda_=0.05), steps=150,
                                     dtype=dtype, tol=tol, **opt)
    plain, _, _ = _engine_vs_reference(_spec("tanh"), None, None, steps=150, dtype=dtype, tol=tol, **opt)
    pulled = max((a[0] - b[0]).abs().max().item() for a, b in zip(pop.parameters_of(0), plain.parameters_of(0)))
    assert pulled > 1e-4


def test_population_members_equal_runs_alone():
    lambdas = [1e-2, 0.0, 5e-2, 1e-3]
    _population_equals_alone(lambda sel: L2Init(lambda_=_pick(lambdas, sel)), step_size=[0.01, 0.003, 0.01, 0.03])


# ----------------------------------------------------------------------------- by hand
SPEC = NetworkSpec.mlp(4, 3, 2, 2, "relu")  # 4 -> 3 -> 3 -> 2
ALPHA, LAMBDA = 0.1, 0.25


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request):
    return IMPLEMENTATIONS[request.param]


def test_one_step_adds_twice_lambda_times_the_distance_from_the_initial_parameters(impl):
    """From the same state theta = theta_0 + D, one SGD step of L2 Init and one of lambda = 0 differ by
    exactly -alpha * 2 lambda * D (the gradient of lambda ||theta - theta_0||^2 is 2 lambda (theta - theta_0)):
    with alpha = 0.1 and lambda = 0.25, by -0.05 D. theta_0 is the member's initial network (its seed)."""
    theta_0 = [(W.double(), b.double()) for W, b in initial_parameters(SPEC, seed=0)]
    D = [(torch.full_like(W, 1.0), torch.full_like(b, -2.0)) if l == 0 else (torch.full_like(W, 0.5), torch.zeros_like(b))
         for l, (W, b) in enumerate(theta_0)]  # layer 1: +1 weights, -2 biases; later layers: +0.5 weights
    theta = [(W + dW, b + db) for (W, b), (dW, db) in zip(theta_0, D)]
    x, y = torch.tensor([[0.5, -1.0, 2.0, 0.25]], dtype=torch.float64), torch.tensor([1])
    after = {}
    for lam in (LAMBDA, 0.0):
        lrn = impl(SPEC, "l2_init", {"lambda_": lam}, seed=0, step_size=ALPHA)
        lrn.set_parameters(theta)
        lrn.step(x, y)
        after[lam] = lrn.parameters()
    for (Wa, ba), (Wb, bb), (dW, db) in zip(after[LAMBDA], after[0.0], D):
        torch.testing.assert_close(Wa - Wb, -0.05 * dW, rtol=0, atol=1e-15)
        torch.testing.assert_close(ba - bb, -0.05 * db, rtol=0, atol=1e-15)


def test_a_member_at_its_initial_parameters_is_plain_sgd(impl):
    """theta = theta_0: the regulariser's gradient is 0, the step is the unregularised one."""
    x, y = torch.tensor([[1.0, 0.0, -0.5, 2.0]], dtype=torch.float64), torch.tensor([0])
    steps = []
    for lam in (LAMBDA, 0.0):
        lrn = impl(SPEC, "l2_init", {"lambda_": lam}, seed=3, step_size=ALPHA)
        lrn.step(x, y)
        steps.append(lrn.parameters())
    for (Wa, ba), (Wb, bb) in zip(*steps):
        assert torch.equal(Wa, Wb) and torch.equal(ba, bb)


# ----------------------------------------------------------------------------- resume
def test_member_checkpoint_mid_run_continues_exactly(impl):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(80, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (80,), generator=g)
    whole = impl(SPEC, "l2_init", {"lambda_": 0.1}, seed=2, optimizer="adam", step_size=1e-2)
    assert_checkpoint_continues_exactly(whole, x, y, at=40)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_interrupted_run_resumes_to_identical_metrics(tmp_path, monkeypatch, backend):
    """A regression run killed in its third bin resumes to the metrics of an uninterrupted run;
    ``auto`` trains on the engine (the kernel does not run L2 Init)."""
    overrides = ("debug=smoke", "num_tasks=4", "checkpoint_seconds=0", "dataset=bit_flipping",
                 "network_depth=width_5_depth_6", "learner=l2_init", "learner.lambda=0.05", f"backend={backend}")
    assert parse_config(compose_config(*overrides)).backend_used == ("population" if backend == "auto" else backend)
    assert_regression_run_resumes(tmp_path, monkeypatch, overrides)
