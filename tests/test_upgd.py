"""UPGD (Elsayed & Mahmood 2024; engine/learners/upgd.py, reference/learners/upgd.py): the engine equals
the readable reference, a population member equals the member alone, steps equal the paper's update
computed by hand from the loss gradient, and an interrupted run resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_config
from learner_impls import IMPLEMENTATIONS, assert_checkpoint_continues_exactly
from plasticity_lab.config import parse_config
from plasticity_lab.engine.learners.upgd import UPGD
from plasticity_lab.network import NetworkSpec
from plasticity_lab.reference.learners import upgd as R
from plasticity_lab.seeding import ALGO, NOISE, generator
from test_learners import _engine_vs_reference, _pick, _population_equals_alone, _spec
from test_resume import assert_regression_run_resumes


@pytest.mark.parametrize("opt,dtype,tol", [
    (dict(weight_decay=1e-3), torch.float32, 2e-5), (dict(weight_decay=1e-3), torch.float64, 1e-10),
    (dict(momentum=0.9), torch.float64, 1e-10), (dict(optimizer="adam", step_size=1e-3), torch.float64, 1e-10),
])
def test_engine_matches_reference(opt, dtype, tol):
    """The same utilities, scaling, noise draws and update, step by step, with every optimiser."""
    opt = {"step_size": 0.01, **opt}
    hyper = dict(beta_utility=0.9, sigma=0.01)
    _engine_vs_reference(_spec("tanh"), UPGD(**hyper), R.UPGD(**hyper), steps=150, dtype=dtype, tol=tol, **opt)


def test_population_members_equal_runs_alone():
    betas, sigmas = [0.9, 0.999, 0.5, 0.0], [1e-2, 0.0, 1e-3, 1e-1]
    _population_equals_alone(lambda sel: UPGD(beta_utility=_pick(betas, sel), sigma=_pick(sigmas, sel)),
                             step_size=[0.01, 0.003, 0.01, 0.03], weight_decay=[1e-3, 0.0, 1e-2, 0.0])


# ----------------------------------------------------------------------------- by hand
SPEC = NetworkSpec.mlp(4, 3, 2, 2, "tanh")  # 4 -> 3 -> 3 -> 2: six parameter tensors
ALPHA, BETA, SEED = 0.1, 0.5, 4
X = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.0, 0.5, -0.5, -2.0]], dtype=torch.float64)
Y = torch.tensor([1, 0])


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request):
    return IMPLEMENTATIONS[request.param]


def _flat(params) -> list[torch.Tensor]:
    """[W1, b1, W2, b2, W3, b3]: every parameter tensor in the order UPGD visits them."""
    return [p for layer in params for p in layer]


def _gradient(impl, params, i):
    """The loss gradient g of example i at ``params``: a plain SGD step (bp) moves them by -alpha g."""
    sgd = impl(SPEC, "bp", {}, seed=SEED, step_size=ALPHA)
    sgd.set_parameters(params)
    sgd.step(X[i : i + 1], Y[i : i + 1])
    return [(a - b) / ALPHA for a, b in zip(_flat(params), _flat(sgd.parameters()))]


def _noise(n: int):
    """The member's NOISE stream's first n draws of every parameter's shape, in UPGD's order (float32)."""
    gen = generator(SEED, ALGO, NOISE)
    shapes = [p.shape for p in _flat(_start())]
    return [[torch.randn(shape, generator=gen).double() for shape in shapes] for _ in range(n)]


def _start():
    """A hand-set network: every weight and bias non-zero, so that every utility -g w is."""
    g = torch.Generator().manual_seed(9)
    return [(torch.rand(o, i, generator=g, dtype=torch.float64) - 0.5, torch.rand(o, generator=g, dtype=torch.float64) - 0.5)
            for i, o in zip(SPEC.sizes[:-1], SPEC.sizes[1:])]


def _pack(flat):
    return [(flat[2 * l], flat[2 * l + 1]) for l in range(len(flat) // 2)]


@pytest.mark.parametrize("sigma,weight_decay", [(0.0, 0.0), (0.1, 0.0), (0.1, 0.05)])
def test_two_steps_by_hand(impl, sigma, weight_decay):
    """Step t with the loss gradient g_t (from a plain SGD twin) and beta_utility = 0.5:
    u_t = 0.5 u_{t-1} + 0.5 (-g_t w), eta_t = max of u_t over the whole network, s = sigmoid(u_t / (1 - 0.5^t)
    / eta_t), w <- w - alpha [(g_t + sigma xi)(1 - s) + lambda w]. At t = 1 this is s = sigmoid(-g w /
    (0.5 max(-g w))): with the maximum of the bias-corrected utility instead it would be sigmoid(-g w /
    max(-g w)), with a per-layer maximum each layer would reach 1 (both fail here)."""
    lrn = impl(SPEC, "upgd", {"beta_utility": BETA, "sigma": sigma}, seed=SEED, step_size=ALPHA,
               weight_decay=weight_decay)
    w = _flat(_start())
    lrn.set_parameters(_pack(w))
    u = [torch.zeros_like(p) for p in w]
    noise = _noise(2)
    for t in (1, 2):
        g = _gradient(impl, _pack(w), t - 1)
        u = [BETA * ut + (1 - BETA) * (-gt * wt) for ut, gt, wt in zip(u, g, w)]
        eta = max(float(ut.max()) for ut in u)
        scaled = [torch.sigmoid(ut / (1 - BETA**t) / eta) for ut in u]
        w = [wt - ALPHA * ((gt + sigma * xi) * (1 - st) + weight_decay * wt)
             for wt, gt, xi, st in zip(w, g, noise[t - 1], scaled)]
        lrn.step(X[t - 1 : t], Y[t - 1 : t])
        for got, expected in zip(_flat(lrn.parameters()), w):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)
    assert max(float((a - b).abs().max()) for a, b in zip(w, _flat(_start()))) > 1e-3  # the weights moved


def test_the_most_useful_weight_moves_least(impl):
    """sigmoid(u_hat / eta) is largest where the utility is the network's largest: that weight's step is
    scaled by 1 - sigmoid(1 / (1 - beta)) = 1 - sigmoid(2) at t = 1 (beta 0.5), the smallest factor of all."""
    lrn = impl(SPEC, "upgd", {"beta_utility": BETA, "sigma": 0.0}, seed=SEED, step_size=ALPHA)
    w = _flat(_start())
    lrn.set_parameters(_pack(w))
    g = _gradient(impl, _pack(w), 0)
    lrn.step(X[:1], Y[:1])
    utility = torch.cat([(-gt * wt).flatten() for gt, wt in zip(g, w)])
    step = torch.cat([(wt - a).flatten() for wt, a in zip(w, _flat(lrn.parameters()))])
    plain = torch.cat([(ALPHA * gt).flatten() for gt in g])
    moving = plain.abs() > 1e-8
    factor = step / plain  # 1 - s (where the gradient is not ~0)
    best = int(utility.argmax())
    assert factor[best].item() == pytest.approx(1 - 1 / (1 + math.exp(-2.0)), abs=1e-12)
    assert factor[best] == factor[moving].min()


# ----------------------------------------------------------------------------- resume
def test_member_checkpoint_mid_run_continues_exactly(impl):
    """Utilities, the step count and the noise generator survive a checkpoint (noise is drawn after it)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(80, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (80,), generator=g)
    whole = impl(SPEC, "upgd", {"beta_utility": 0.9, "sigma": 0.05}, seed=2, step_size=0.05)
    assert_checkpoint_continues_exactly(whole, x, y, at=40)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_interrupted_run_resumes_to_identical_metrics(tmp_path, monkeypatch, backend):
    """A regression run killed in its third bin resumes to the metrics of an uninterrupted run;
    ``auto`` trains on the engine (the kernel does not run UPGD)."""
    overrides = ("debug=smoke", "num_tasks=4", "checkpoint_seconds=0", "dataset=bit_flipping",
                 "network_depth=width_5_depth_6", "learner=upgd", "learner.sigma=0.01", "learner.beta_utility=0.9",
                 f"backend={backend}")
    assert parse_config(compose_config(*overrides)).backend_used == ("population" if backend == "auto" else backend)
    assert_regression_run_resumes(tmp_path, monkeypatch, overrides)
