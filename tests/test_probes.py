"""Probes (SPEC 4): hand-computed metric values, robustness, gradient covariance vs autograd,
cadence, config, the learner interface, and that probes never change training."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_config, optimizer
from plasticity_lab.config import ConfigError, parse_config, population_key
from plasticity_lab.data.permuted import PermutedImageStream
from plasticity_lab.engine import Population
from plasticity_lab.network import NetworkSpec
from plasticity_lab.probes import ProbeRunner, build_probes
from plasticity_lab.probes import metrics as M
from plasticity_lab.probes.arrays import load_npz, update_npz
from plasticity_lab.probes.settings import ProbeSettings, Scheduled, parse_probes, replace
from plasticity_lab.reference import ReferenceLearner, ReferencePopulation, build_mlp
from plasticity_lab.run import MemberJob, run_population

NAN = float("nan")
RANKS = ("rank", "effective_rank", "approximate_rank", "abs_approximate_rank", "stable_rank")


def _ranks(a, **kw):
    values, sv = M.rank_metrics(torch.as_tensor(a, dtype=torch.float64), **kw)
    return {k: v.item() if v.dim() == 0 else v.tolist() for k, v in values.items()}, sv


def _diag(*d, rows=None):
    a = torch.zeros(rows or len(d), len(d), dtype=torch.float64)
    a[range(len(d)), range(len(d))] = torch.tensor(d, dtype=torch.float64)
    return a


# --------------------------------------------------------------------------- rank family
@pytest.mark.parametrize("method", ["auto", "svd", "gram", "numpy"])
def test_identity_has_full_rank_and_effective_rank_n(method):
    values, sv = _ranks(torch.eye(5), method=method)
    assert sv.tolist() == pytest.approx([1.0] * 5)
    assert values == pytest.approx(dict(rank=5, effective_rank=5, approximate_rank=5, abs_approximate_rank=5,
                                        stable_rank=5))


def test_rank_one_matrix():
    a = torch.outer(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, -1.0, 0.5]))  # 4 x 3, rank 1
    values, _ = _ranks(a)
    assert values == pytest.approx(dict(rank=1, effective_rank=1, approximate_rank=1, abs_approximate_rank=1,
                                        stable_rank=1))


def test_hand_computed_diagonal_case():
    # sigma = (100, 1, 1, 1): sum sigma^2 = 10003, 10000/10003 >= 0.99 -> approximate rank 1;
    # sum sigma = 103: 100/103, 101/103 < 0.99 <= 102/103 -> abs approximate rank 3.
    values, sv = _ranks(_diag(100.0, 1.0, 1.0, 1.0, rows=6))
    p = np.array([100, 1, 1, 1]) / 103
    assert sv.tolist() == pytest.approx([100, 1, 1, 1])
    assert values["rank"] == 4
    assert values["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert values["approximate_rank"] == 1 and values["abs_approximate_rank"] == 3
    assert values["stable_rank"] == pytest.approx(10003 / 10000, rel=1e-12)


def test_stable_rank_of_a_diagonal_matrix_and_zero_log_zero():
    values, _ = _ranks(_diag(3.0, 4.0, 0.0))
    p = np.array([4, 3]) / 7
    assert values["stable_rank"] == pytest.approx(25 / 16)  # ||A||_F^2 / ||A||_2^2
    assert values["rank"] == 2 and values["approximate_rank"] == 2 and values["abs_approximate_rank"] == 2
    assert values["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))  # 0 ln 0 = 0
    assert _ranks(_diag(2.0, 0.0, 0.0))[0]["effective_rank"] == pytest.approx(1.0)


def test_zero_matrix_is_rank_zero_everywhere():
    values, _ = _ranks(torch.zeros(7, 3))
    assert values == dict(rank=0, effective_rank=0, approximate_rank=0, abs_approximate_rank=0, stable_rank=0)


def test_rank_tolerance_default_and_explicit():
    a = _diag(1.0, 1e-3, 1e-9)
    assert M.default_rtol((3, 3), torch.float32) == pytest.approx(3 * 1.1920929e-07)
    values, _ = M.rank_metrics(a.float())  # float32 features: tol = 3 eps32 sigma_max -> 1e-9 is noise
    assert values["rank"].item() == 2
    assert M.rank_metrics(a)[0]["rank"].item() == 3  # float64 features: tol = 3 eps64
    assert M.rank_metrics(a, rtol=1e-2)[0]["rank"].item() == 1


def test_batched_members_and_nan_member_give_nan_not_exceptions():
    a = torch.stack([_diag(3.0, 4.0, 0.0), torch.eye(3, dtype=torch.float64), _diag(1.0, 1.0, 1.0)])
    a[2, 0, 1] = NAN
    values, sv = M.rank_metrics(a)
    assert values["stable_rank"][:2].tolist() == pytest.approx([25 / 16, 3.0])
    assert values["rank"][:2].tolist() == [2, 3]
    assert all(math.isnan(v[2].item()) for v in values.values()) and torch.isnan(sv[2]).all()
    act = M.activity_metrics(a)
    assert all(math.isnan(v[2].item()) and not math.isnan(v[0].item()) for v in act.values())
    inf = torch.full((2, 4, 3), float("inf"))
    assert torch.isnan(M.rank_metrics(inf)[0]["effective_rank"]).all()


def test_methods_agree_on_a_random_matrix():
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(3, 200, 20, generator=g))
    a[:, :, :5] = 0  # many zero columns, as with dead units
    ref = M.singular_values(a, "svd")
    for method in ("gram", "numpy", "auto"):
        assert torch.allclose(M.singular_values(a, method), ref, rtol=1e-6, atol=1e-6)
    assert (ref[:, 15:] < 1e-6).all()


def test_svd_failure_falls_back_and_never_raises(monkeypatch, caplog):
    def broken(*args, **kw):
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    a = torch.stack([_diag(3.0, 4.0, 0.0), torch.eye(3, dtype=torch.float64)])
    monkeypatch.setitem(M._STAGES, "svd", broken)
    values, _ = M.rank_metrics(a, method="svd")
    assert values["stable_rank"].tolist() == pytest.approx([25 / 16, 3.0])
    assert "svd failed" in caplog.text
    monkeypatch.setitem(M._STAGES, "gram", broken)
    assert M.rank_metrics(a, method="svd")[0]["rank"].tolist() == [2, 3]  # numpy, the last resort
    monkeypatch.setitem(M._STAGES, "numpy", broken)
    assert torch.isnan(M.rank_metrics(a, method="svd")[0]["effective_rank"]).all()  # NaN, no exception


# --------------------------------------------------------------------------- activity and weights
def test_dead_units_dormant_ratio_feature_norm_by_hand():
    h = torch.tensor([[0.0, 1.0, 0.0, 4.0],
                      [0.0, 0.0, 0.0, 6.0]])  # units 0 and 2 dead, unit 1 zero on one example only
    count, fraction = M.dead_units(h)
    assert (count.item(), fraction.item()) == (2, 0.5)
    # mean |h_i| = (0, 0.5, 0, 5), mean over units 1.375: s = (0, 0.3636, 0, 3.636)
    assert M.dormant_ratio(h, 0.1).item() == 0.5
    assert M.dormant_ratio(h, 0.4).item() == 0.75
    assert M.dormant_ratio(h, 0.0).item() == 0.5  # tau = 0: the dead units
    assert M.dormant_ratio(torch.zeros(3, 4)).item() == 1.0
    assert M.feature_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).item() == 2.5
    combined = M.activity_metrics(h, 0.4)
    assert {k: v.item() for k, v in combined.items()} == dict(dead_units=2, dead_fraction=0.5, dormant_ratio=0.75,
                                                             feature_norm=pytest.approx((math.sqrt(17) + 6) / 2))


def test_weight_magnitude_and_norm_by_hand():
    W1 = torch.tensor([[[1.0, -2.0], [3.0, -4.0]]])  # (K=1, 2, 2): mean |w| 2.5, ||W||_F = sqrt(30)
    W2 = torch.tensor([[[-6.0]]])
    per_layer, network = M.weight_magnitude([W1, W2])
    assert [v.item() for v in per_layer] == [2.5, 6.0]
    assert network.item() == pytest.approx(16 / 5)  # (10 + 6) / 5 weights
    assert M.weight_norm(W1).item() == pytest.approx(math.sqrt(30))


def test_utility_summary_ignores_nan():
    u = torch.tensor([[1.0, NAN, 3.0, 10.0], [1.0, 2.0, 3.0, 4.0], [NAN, NAN, NAN, NAN]])
    s = {k: v.tolist() for k, v in M.utility_summary(u).items()}
    assert s["utility_mean"][:2] == pytest.approx([14 / 3, 2.5])
    assert s["utility_median"][:2] == [3.0, 2.5]
    assert s["utility_min"][:2] == [1.0, 1.0] and s["utility_max"][:2] == [10.0, 4.0]
    assert all(math.isnan(v[2]) for v in s.values())


def test_cosine_matrix_and_gradient_rank_by_hand():
    C = M.cosine_matrix(torch.tensor([[4.0, 2.0, 0.0], [2.0, 9.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert C[:2, :2].flatten().tolist() == pytest.approx([1, 1 / 3, 1 / 3, 1])
    assert torch.isnan(C[2]).all()  # zero gradient: cosine undefined
    G = torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64))  # eigenvalues 3, 1, 0: 75% then 100%
    assert M.gradient_rank(G, 0.7).item() == 1 and M.gradient_rank(G, 0.99).item() == 2
    assert M.gradient_rank(torch.zeros(2, 2)).item() == 0


# --------------------------------------------------------------------------- gradient covariance vs autograd
def _explicit_grads(net, x, y):
    """Per-example gradients of CE(net(x_i), y_i), flattened per linear layer: [(S, P_l)]."""
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    rows = []
    for i in range(x.shape[0]):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append([torch.cat([m.weight.grad.flatten(), m.bias.grad]) for m in linears])
    net.zero_grad()
    return [torch.stack(layer) for layer in zip(*rows)]


@pytest.mark.parametrize("activation", ["relu", "tanh", ["selu", "sigmoid"]])
@pytest.mark.parametrize("backend", ["engine", "reference"])
def test_gradient_gram_matches_autograd_per_example_gradients(activation, backend):
    spec = NetworkSpec.mlp(12, 9, 2, 10, activation)
    seeds, S = [3, 4], 7
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, S, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (2, S), generator=g)
    if backend == "engine":
        pop = Population(spec, seeds, optimizer(step_size=0.01), dtype=torch.float64)
    else:
        pop = _reference(spec, seeds, 0.01, dtype=torch.float64)
    grams = M.gradient_gram(*pop.example_deltas(x, y))
    for k, seed in enumerate(seeds):
        blocks = _explicit_grads(build_mlp(spec, seed).double(), x[k], y[k])
        for G, block in zip(grams, blocks):
            assert torch.allclose(G[k], block @ block.T, rtol=1e-10, atol=1e-12)
        full = torch.cat(blocks, dim=1)
        n = full.norm(dim=1)
        assert torch.allclose(M.cosine_matrix(sum(grams))[k], (full @ full.T) / torch.outer(n, n), atol=1e-12)
        eig = torch.linalg.eigvalsh(full @ full.T).flip(0).clamp_min(0)
        k99 = int(((eig.cumsum(0) / eig.sum()) < 0.99).sum()) + 1
        assert M.gradient_rank(sum(grams))[k].item() == k99
    assert grams[0].shape == (2, S, S)


def test_example_deltas_write_no_grad_and_keep_weights():
    spec = NetworkSpec.mlp(12, 9, 2, 10, "relu")
    ref = _reference(spec, [0], 0.1)
    before = ref.parameters_of(0)
    ref.example_deltas(torch.rand(1, 5, 12), torch.randint(0, 10, (1, 5)))
    assert all(p.grad is None for p in ref.members[0].net.parameters())
    assert all(torch.equal(a, b) for pa, pb in zip(before, ref.parameters_of(0)) for a, b in zip(pa, pb))


def test_backends_answer_the_same_probe_interface():
    spec = NetworkSpec.mlp(12, 9, 2, 10, ["relu", "tanh"])
    x = torch.rand(2, 6, 12)
    eng, ref = Population(spec, [5, 6], optimizer(step_size=0.01)), _reference(spec, [5, 6], 0.01)
    for a, b in zip(eng.hidden_features(x), ref.hidden_features(x)):
        assert a.shape == (2, 6, 9) and torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(eng.predict(x), ref.predict(x), atol=1e-6)
    for (Wa, ba), (Wb, bb) in zip(eng.stacked_parameters(), ref.stacked_parameters()):
        assert torch.equal(Wa, Wb) and torch.equal(ba, bb)


# --------------------------------------------------------------------------- cadence and settings
def test_cadence_every_k_and_explicit_tasks():
    s = Scheduled(every=3, tasks=(4,))
    assert [t for t in range(10) if s.due(t)] == [0, 3, 4, 6, 9]
    assert not Scheduled().enabled and not any(Scheduled().due(t) for t in range(5))
    assert Scheduled(tasks=(7,)).enabled and [t for t in range(10) if Scheduled(tasks=(7,)).due(t)] == [7]


def test_probe_presets_compose_and_validate():
    for option in ("minimal", "default", "timing"):
        assert isinstance(parse_config(compose_config(f"probes={option}")).probes, ProbeSettings)
    minimal = parse_config(compose_config("probes=minimal")).probes
    assert not minimal.any_enabled
    default = parse_config(compose_config()).probes  # train.yaml's default
    assert default.rank.enabled and default.weights.every == 1 and default.examples == 2000
    assert not (default.grad_covariance.enabled or default.forgetting.enabled or default.timing.enabled)
    full = parse_config(compose_config("probes=full")).probes  # on the default protocol (all 10,000 images)
    assert full.grad_covariance.enabled and full.grad_rank.enabled and not full.forgetting.enabled
    assert full.timing.tasks == (0,) and full.rank.every == 1 and full.activity.dormant_threshold == 0.1
    switched = parse_config(compose_config("probes=full", "probes.forgetting.every=10", "dataset.images_per_task=9000"))
    assert switched.probes.forgetting.enabled and switched.dataset.images_per_task == 9000
    assert parse_probes(None) == ProbeSettings() and not ProbeSettings().any_enabled


@pytest.mark.parametrize("overrides,key", [
    (["probes.rank.every=-1"], "probes.rank.every"),
    (["probes.rank.tasks=[1,x]"], "probes.rank.tasks"),
    (["probes.rank.fraction=1.5"], "probes.rank.fraction"),
    (["probes.rank.method=qr"], "probes.rank.method"),
    (["probes.timing.batch_sizes=[0]"], "probes.timing.batch_sizes"),
    (["probes.examples=0"], "probes.examples"),
    (["probes.on_error=ignore"], "probes.on_error"),
    (["+probes.rank.tolerance=1"], "probes.rank.tolerance"),
    (["+probes.ranks={every: 1}"], "probes.ranks"),
    (["probes=full", "probes.forgetting.every=10"], "probes.forgetting.holdout"),
    (["probes.forgetting.every=1", "dataset.subset=fresh"], "probes.forgetting"),
])
def test_bad_probe_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        parse_config(compose_config(*overrides))
    assert str(err.value).startswith(key), str(err.value)


def test_explicit_forgetting_on_the_default_protocol_names_the_fix():
    with pytest.raises(ConfigError) as err:
        parse_config(compose_config("probes=full", "probes.forgetting.every=10"))
    assert "dataset.images_per_task<=9000" in str(err.value) and "probes.forgetting.every=0" in str(err.value)


def test_probe_settings_are_part_of_the_population_key():
    a, b = parse_config(compose_config()), parse_config(compose_config("probes.rank.every=2"))
    assert population_key(a) != population_key(b)


def test_update_npz_merges_keys_atomically(tmp_path):
    path = tmp_path / "arrays" / "x.npz"
    update_npz(path, {"task_0": np.eye(2)})
    update_npz(path, {"task_5": np.ones((2, 2)), "task_0": np.zeros((2, 2))})
    got = load_npz(path)
    assert sorted(got) == ["task_0", "task_5"] and got["task_0"].sum() == 0
    assert [p.name for p in path.parent.iterdir()] == ["x.npz"]  # no temporary files left


# --------------------------------------------------------------------------- the runner
class _Rec:
    def __init__(self, out_dir):
        self.out_dir, self.rows = Path(out_dir), []

    def add(self, task, step, metric, value, layer=""):
        self.rows.append((task, step, metric, layer, value))

    def get(self, metric, layer=""):
        return {t: v for t, _, m, l, v in self.rows if m == metric and l == layer}


def _reference(spec, seeds, step_size, dtype=torch.float32):
    """A reference population of plain SGD members."""
    return ReferencePopulation([ReferenceLearner(spec, s, optimizer(step_size=step_size), dtype=dtype) for s in seeds])


def _tiny(tmp_path, K=2, n=60, settings=None, backend="engine", holdout=40):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n + holdout, 784), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n + holdout,), generator=g)
    seeds = list(range(10, 10 + K))
    stream = PermutedImageStream(images, labels, seeds, n, "fixed")
    spec = NetworkSpec.mlp(784, 16, 2, 10, "relu")
    pop = Population(spec, seeds, optimizer(step_size=0.05)) if backend == "engine" else _reference(spec, seeds, 0.05)
    recs = [_Rec(tmp_path / f"m{k}") for k in range(K)]
    settings = settings or ProbeSettings()
    runner = ProbeRunner(settings, stream, pop, recs, n, (images[-holdout:], labels[-holdout:]))
    return runner, stream, pop, recs


def _loop(runner, stream, pop, tasks, status):
    for t in range(tasks):
        runner.before_task(t, status)
        for x, y in stream.chunks(t):
            pop.train(x, y)
        pop.take_totals()
    runner.finish(tasks, status)


def _all_on(**extra):
    s = replace(ProbeSettings(on_error="raise"), rank={"every": 1, "save_singular_values": True},
                activity={"every": 1}, weights={"every": 1}, utility={"every": 1},
                grad_covariance={"tasks": (0, 2), "examples": 8}, grad_rank={"every": 2, "examples": 10},
                forgetting={"every": 1, "previous": 2, "holdout": 40},
                timing={"tasks": (1,), "batch_sizes": (1, 10), "examples": 20, "wall_time": True})
    return replace(s, **extra)


def test_runner_cadence_final_probe_and_rows(tmp_path):
    settings = replace(_all_on(), rank={"every": 2})
    runner, stream, pop, recs = _tiny(tmp_path, settings=settings)
    _loop(runner, stream, pop, 3, ["running", "running"])
    r = recs[0]
    assert sorted(r.get("effective_rank", 1)) == [0, 2, 3]  # every 2 + the final probe (task 3)
    assert sorted(r.get("feature_norm", 2)) == [0, 1, 2, 3]
    assert sorted(r.get("time_update_b10")) == [1] and sorted(r.get("wall_time_task")) == [0, 1, 2]
    assert sorted(r.get("grad_rank")) == [0, 2, 3] and set(r.get("grad_rank", 3)) == {0, 2, 3}
    assert sorted(r.get("past_task_accuracy_1")) == [1, 2, 3] and sorted(r.get("past_task_accuracy_2")) == [2, 3]
    steps = {(t, s) for t, s, m, _, _ in r.rows if m == "weight_magnitude"}
    assert steps == {(t, t * 60) for t in range(4)}  # step = examples trained before the probe
    assert set(r.get("weight_magnitude")) == {0, 1, 2, 3} and 3 in r.get("weight_norm", 3)  # output layer = L + 1
    assert r.get("time_inference_b1")[1] > 0
    assert 0 < r.get("rank", 1)[0] <= 16 - r.get("dead_units", 1)[0]  # dead units are zero columns
    cov = load_npz(tmp_path / "m0" / "arrays" / "grad_covariance.npz")
    assert sorted(cov) == ["task_0", "task_2", "task_3"] and cov["task_0"].shape == (8, 8)
    assert np.allclose(np.diag(cov["task_0"]), 1.0) and np.allclose(cov["task_0"], cov["task_0"].T)
    sv = load_npz(tmp_path / "m1" / "arrays" / "singular_values.npz")
    assert sv["task_2_layer_1"].shape == (16,)
    assert not any(math.isnan(v) for _, _, m, _, v in r.rows)


def test_probes_skip_members_that_are_not_running(tmp_path):
    runner, stream, pop, recs = _tiny(tmp_path, settings=_all_on())
    _loop(runner, stream, pop, 2, ["running", "diverged"])
    assert recs[1].rows == [] and recs[0].rows
    assert not (tmp_path / "m1" / "arrays").exists()


def test_nan_member_gives_nan_rows_without_exceptions(tmp_path):
    runner, stream, pop, recs = _tiny(tmp_path, settings=replace(_all_on(), timing={"tasks": ()}))
    pop.W[0][1, 0, 0] = NAN
    runner.before_task(2, ["running", "running"])
    for metric in ("effective_rank", "rank", "dormant_ratio", "feature_norm", "past_task_accuracy_1"):
        layer = "" if metric.startswith("past") else 1
        assert math.isnan(recs[1].get(metric, layer)[2]) is (metric != "past_task_accuracy_1")
        assert not math.isnan(recs[0].get(metric, layer)[2])
    assert math.isnan(recs[1].get("grad_rank")[2]) and math.isnan(recs[1].get("weight_magnitude")[2])


def test_forgetting_accuracy_by_hand(tmp_path):
    settings = replace(ProbeSettings(on_error="raise"), forgetting={"every": 1, "previous": 3, "holdout": 40})
    runner, stream, pop, recs = _tiny(tmp_path, settings=settings)
    _loop(runner, stream, pop, 2, ["running", "running"])
    images, labels = runner.heldout
    for k, seed in enumerate(stream.seeds):
        for j, task in ((1, 1), (2, 0)):
            perm, _ = stream.task_indices(seed, task)
            logits = pop.predict(images[:, perm].unsqueeze(0).expand(2, -1, -1).contiguous())[k]
            expected = (logits.argmax(-1) == labels).double().mean().item()
            assert recs[k].get(f"past_task_accuracy_{j}")[2] == pytest.approx(expected)
        assert recs[k].get("past_task_accuracy_mean")[2] == pytest.approx(
            (recs[k].get("past_task_accuracy_1")[2] + recs[k].get("past_task_accuracy_2")[2]) / 2)


def test_forgetting_refuses_images_the_stream_trains_on():
    class S:
        pool = 10
    settings = parse_config(compose_config("probes.forgetting.every=1", "dataset.images_per_task=9000"))
    images = torch.zeros(10, 784, dtype=torch.uint8)
    with pytest.raises(ValueError, match="not held out"):
        build_probes(settings, S(), None, [], images, torch.zeros(10), 1)


class FakeUtilities:
    """What cbp / adapted provide to the probes: u_hat per hidden layer (K, H), NaN for units of age 0."""

    def __init__(self):
        self.u = {1: torch.tensor([[1.0, 2.0, 3.0, NAN], [4.0, 4.0, 4.0, 4.0]]), 2: torch.zeros(2, 4)}

    def utility_stats(self):
        return self.u


def test_utility_statistics_through_the_duck_typed_interface(tmp_path):
    settings = replace(ProbeSettings(on_error="raise"), utility={"every": 2})
    runner, stream, pop, recs = _tiny(tmp_path, settings=settings)
    status = ["running", "running"]
    runner.before_task(0, status)
    assert recs[0].rows == []  # a backend without utilities records none
    pop.learner = FakeUtilities()  # found on backend.learner
    runner.before_task(1, status)
    runner.finish(2, status)
    assert recs[0].get("utility_mean", 1) == {2: 2.0} and recs[1].get("utility_median", 1)[2] == 4.0
    assert recs[0].get("utility_max", 1)[2] == 3.0 and recs[0].get("utility_min", 2)[2] == 0.0
    assert not any(m == "units_reset" for _, _, m, _, _ in recs[0].rows)  # the run loop records those
    # found on the backend itself (the reference population answers utility_stats)
    runner2, _, pop2, recs2 = _tiny(tmp_path / "b", settings=settings, backend="reference")
    pop2.utility_stats = FakeUtilities().utility_stats
    runner2.before_task(0, status)
    assert recs2[1].get("utility_mean", 1) == {0: 4.0}


# --------------------------------------------------------------------------- probes never change training
def _params(pop):
    return [p for k in range(pop.K) for layer in pop.parameters_of(k) for p in layer]


@pytest.mark.parametrize("backend", ["engine", "reference"])
def test_probes_do_not_change_training(tmp_path, backend):
    with_probes, stream, pop, recs = _tiny(tmp_path / "a", settings=_all_on(), backend=backend)
    rng = torch.get_rng_state()
    _loop(with_probes, stream, pop, 3, ["running", "running"])
    assert torch.equal(rng, torch.get_rng_state())  # no global random draws either
    quiet, stream2, pop2, _ = _tiny(tmp_path / "b", settings=ProbeSettings(), backend=backend)
    _loop(quiet, stream2, pop2, 3, ["running", "running"])
    assert all(torch.equal(a, b) for a, b in zip(_params(pop), _params(pop2)))
    assert len(recs[0].rows) > 100


def _metrics(folder):
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.data
def test_end_to_end_probes_keep_results_and_members_match_runs_alone(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    probes = ["probes=full", "probes.on_error=raise", "probes.rank.save_singular_values=false",
              "probes.timing.tasks=[]", "probes.timing.wall_time=false", "probes.grad_rank.every=1",
              "probes.forgetting.every=1", "probes.examples=150"]
    seeds = ("seed=0", "seed=1 optimizer.step_size=0.01".split())

    def job(name, *o):
        return MemberJob(compose_config("debug=smoke", "learner=l2", *o), tmp_path / name)

    run_population([job("pop0", *probes, "seed=0"), job("pop1", *probes, *seeds[1])])
    run_population([job("alone1", *probes, *seeds[1])])
    run_population([job("plain1", "probes=minimal", *seeds[1])])
    pop1, alone1, plain1 = (_metrics(tmp_path / n) for n in ("pop1", "alone1", "plain1"))
    assert [(r["task"], r["metric"], r["layer"]) for r in pop1] == [(r["task"], r["metric"], r["layer"]) for r in alone1]
    assert [float(r["value"]) for r in pop1] == pytest.approx([float(r["value"]) for r in alone1], rel=1e-6, abs=1e-9)
    trained = [r for r in pop1 if r["metric"] in ("accuracy", "loss")]
    assert trained == plain1  # identical to the last digit with and without probes
    metrics = {r["metric"] for r in pop1}
    assert {"effective_rank", "dead_units", "dormant_ratio", "weight_magnitude", "grad_rank",
            "past_task_accuracy_1", "grad_cosine_mean"} <= metrics
    cov = load_npz(tmp_path / "pop1" / "arrays" / "grad_covariance.npz")
    assert sorted(cov) == ["task_0", "task_2"] and cov["task_0"].shape == (50, 50)  # tasks [0] + final
    assert np.allclose(cov["task_2"], load_npz(tmp_path / "alone1" / "arrays" / "grad_covariance.npz")["task_2"],
                       atol=1e-6)
    assert not (tmp_path / "plain1" / "arrays").exists()


def test_probe_overhead_function_runs_small():
    from plasticity_lab.probes.bench import probe_overhead

    out = probe_overhead(K=2, examples_per_task=100, probes="default", num_tasks=10)
    assert out["train_seconds_per_task"] > 0 and 0 < out["overhead_fraction"]
    assert set(out["probe_seconds"]) >= {"features", "rank", "activity", "weights"}
    assert out["probe_runs_per_task"]["rank"] == pytest.approx((2 + 1) / 10)  # tasks 0, 5 + final


def test_a_failing_probe_warns_and_the_run_goes_on(tmp_path, caplog):
    settings = replace(ProbeSettings(), rank={"every": 1}, weights={"every": 1})
    runner, stream, pop, recs = _tiny(tmp_path, settings=settings)
    pop.hidden_features = None  # a broken backend method: the rank probe fails, weights still recorded
    _loop(runner, stream, pop, 2, ["running", "running"])
    assert sorted(recs[0].get("weight_magnitude")) == [0, 1, 2] and not recs[0].get("rank", 1)
    assert caplog.text.count("Traceback") == 1 and "failed again at task 1" in caplog.text
    strict, stream, pop, _ = _tiny(tmp_path, settings=replace(settings, on_error="raise"))
    pop.hidden_features = None
    with pytest.raises(TypeError):
        strict.before_task(0, ["running", "running"])
