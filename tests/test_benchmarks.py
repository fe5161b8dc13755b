"""Issue 7: bit-flipping / slowly-changing regression (SPEC 2), permuted Fashion-MNIST on the
training split, and BatchNorm / LayerNorm networks on the reference backend (SPEC 3.7)."""

import csv
import json

import pytest
import torch

from conftest import compose_config
from plasticity_lab.config import ConfigError, parse_config
from plasticity_lab.data.regression import (FLIPPING_BITS, RegressionStream, ltu_thresholds, target_network,
                                            target_outputs)
from plasticity_lab.run import MemberJob, build_backend, build_stream, run_population
from plasticity_lab.tasks import task_kind

LEARNERS = ["bp", "l2", "cbp", "adapted", "redo", "shrink_perturb"]


def _stream(seeds=(0,), bin_size=1000, flip_after=100, M=20, flip_one=False):
    return RegressionStream(list(seeds), bin_size, flip_after, M, flip_one, dtype=torch.float64)


def _bin(stream, task, k=0):
    data, order = stream.task_tensors(task)
    return stream.gather(data, order)[0][k], stream.gather(data, order)[1][k]


# ----------------------------------------------------------------------------- the generator
def test_flipping_bits_constant_within_a_period_and_noise_bits_vary():
    x, _ = _bin(_stream(), 0)
    for p in range(10):
        period = x[p * 100 : (p + 1) * 100]
        assert (period[:, :FLIPPING_BITS] == period[0, :FLIPPING_BITS]).all()
        noise = period[:, FLIPPING_BITS:]
        assert 0.35 < noise.mean() < 0.65 and (noise != noise[0]).any(dim=1).float().mean() > 0.9
    assert set(x.unique().tolist()) == {0.0, 1.0} and x.shape == (1000, 20)


def test_all_flipping_bits_redrawn_by_default_one_toggled_with_flip_one():
    x, _ = _bin(_stream(bin_size=20_000, flip_after=100), 0)
    changed = (x[100::100, :FLIPPING_BITS] != x[:-100:100, :FLIPPING_BITS]).sum(dim=1).double()
    assert changed.mean() == pytest.approx(FLIPPING_BITS / 2, abs=0.5)  # each bit redrawn: changes w.p. 1/2
    assert (changed > 1).float().mean() > 0.9
    x, _ = _bin(_stream(bin_size=20_000, flip_after=100, flip_one=True), 0)
    changed = (x[100::100, :FLIPPING_BITS] != x[:-100:100, :FLIPPING_BITS]).sum(dim=1)
    assert (changed == 1).all()
    which = (x[100::100, :FLIPPING_BITS] != x[:-100:100, :FLIPPING_BITS]).float().argmax(dim=1)
    assert len(which.unique()) == FLIPPING_BITS  # the toggled bit is random


def test_stream_regenerates_any_bin_identically_and_across_bin_boundaries():
    a, b = _stream(bin_size=250, flip_one=True), _stream(bin_size=250, flip_one=True)
    xa = torch.cat([_bin(a, t)[0] for t in range(4)])
    xb3 = _bin(b, 3)[0]  # a fresh stream asked for bin 3 first (resume, probes)
    assert torch.equal(xa[750:], xb3)
    assert (xa[700:800, :FLIPPING_BITS] == xa[700, :FLIPPING_BITS]).all()  # period 7 spans bins 2 and 3


def test_target_reproducible_from_the_seed_and_different_across_seeds():
    t0, t0b, t1 = target_network(0, 50), target_network(0, 50), target_network(1, 50)
    assert all(torch.equal(t0[k], t0b[k]) for k in t0)
    assert not torch.equal(t0["W"], t1["W"])
    for key in ("W", "b", "v"):
        assert set(t0[key].unique().tolist()) == {-1.0, 1.0}
    assert t0["c"].item() in (-1.0, 1.0)
    x0, y0 = _bin(_stream(seeds=(0, 1)), 0, 0)
    x1, y1 = _bin(_stream(seeds=(0, 1)), 0, 1)
    assert not torch.equal(x0, x1) and not torch.equal(y0, y1)  # members have their own streams
    assert torch.equal(y0, target_outputs(target_network(0, 20), x0))


def test_target_outputs_once_per_distinct_input_equal_the_formula_on_every_row():
    """target_outputs evaluates the target once per distinct input and spreads the results back;
    against SPEC 2's formula applied to every row of a [J]-sized bin (M = 500, repeated inputs)."""
    target = target_network(3, 500)
    x, y = _bin(_stream(seeds=(3,), bin_size=40000, flip_after=2500, M=500, flip_one=True), 2)
    assert len(torch.unique(x, dim=0)) <= 16 * 32  # 16 periods x 2^5 noise patterns: a bin repeats its inputs
    per_row = ((x.double() @ target["W"].T + target["b"]) > target["tau"]).double() @ target["v"] + target["c"]
    assert torch.equal(y.double(), per_row)
    bits = torch.randint(0, 2, (4, 50, 20), generator=torch.Generator().manual_seed(1)).double()  # any shape (..., n)
    direct = ((bits @ target["W"].T + target["b"]) > target["tau"]).double() @ target["v"] + target["c"]
    assert torch.equal(target_outputs(target, bits), direct)


def test_ltu_thresholds_and_outputs_on_a_hand_computed_case():
    # n = 4 inputs, 2 units. Unit 0: w = [1, 1, -1, 1], b = 1: sum w = 2, S = (4 - 2 + 1) / 2 = 1.5,
    # tau = 0.7 * 5 - 1.5 = 2.0. Unit 1: w = [-1, -1, -1, -1], b = -1: S = (4 + 4 - 1) / 2 = 3.5, tau = 0.
    W = torch.tensor([[1.0, 1, -1, 1], [-1, -1, -1, -1]])
    b = torch.tensor([1.0, -1])
    tau = ltu_thresholds(W, b)
    assert tau.tolist() == pytest.approx([2.0, 0.0])
    target = {"W": W.double(), "b": b.double(), "v": torch.tensor([1.0, -1]).double(), "c": torch.tensor(1.0).double(),
              "tau": tau.double()}
    x = torch.tensor([[1.0, 1, 0, 0],   # unit 0: 2 + 1 = 3 > 2 -> 1; unit 1: -2 - 1 = -3 > 0? no -> 0; y = 1 + 1
                      [1.0, 0, 1, 0],   # unit 0: 0 + 1 = 1 -> 0; unit 1: -3 -> 0; y = 1
                      [0.0, 0, 0, 0]])  # unit 0: 1 -> 0; unit 1: -1 -> 0; y = 1
    assert target_outputs(target, x).tolist() == [2.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- config
def _parse(*overrides):
    return parse_config(compose_config(*overrides))


def test_regression_datasets_compose_with_their_defaults_and_sizes():
    d = _parse("dataset=slowly_changing_regression").dataset
    assert (d.target_units, d.flip_after, d.bin_size, d.flip_one, d.num_inputs, d.num_outputs) == \
        (100, 10_000, 20_000, False, 20, 1)
    d = _parse("dataset=bit_flipping", "dataset.flip_one=true").dataset
    assert (d.name, d.target_units, d.flip_after, d.flip_one) == ("bit_flipping", 500, 2500, True)
    assert task_kind(d).loss == "squared_error" and task_kind(d).summary_key == "mean_error"
    assert _parse("dataset=bit_flipping", "debug=smoke").dataset.bin_size == 200


@pytest.mark.parametrize("overrides,key", [
    (["dataset=bit_flipping", "dataset.flip_after=0"], "dataset.flip_after"),
    (["dataset=bit_flipping", "dataset.bin_size=-5"], "dataset.bin_size"),
    (["dataset=bit_flipping", "+dataset.split=train"], "dataset.split"),
    (["+dataset.flip_after=10"], "dataset.flip_after"),
    (["dataset=bit_flipping", "batch_size=3"], "dataset.bin_size"),
    (["dataset=bit_flipping", "probes.forgetting.every=1"], "probes.forgetting"),
    (["network.norm=batch"], "batch_size=1"),
    (["network.norm=batch", "batch_size=3", "dataset.images_per_task=100"], "batch_size=3"),
    (["network.norm=group"], "network.norm"),
    (["network.norm=layer", "learner=cbp"], "network.norm"),
])
def test_bad_new_options_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("+", r"\+")):
        _parse(*overrides)


def test_norm_selects_the_reference_backend_and_fashion_train_option():
    s = _parse("network.norm=batch", "batch_size=5")
    assert (s.backend, s.backend_used) == ("auto", "reference")
    assert _parse("network.norm=layer").backend_used == "reference"
    assert _parse("network.norm=layer", "backend=population").backend_used == "reference"
    assert _parse().backend_used == "kernel"
    d = _parse("dataset=permuted_fashion_mnist_train").dataset
    assert (d.name, d.source, d.split, d.subset, d.images_per_task) == \
        ("permuted_fashion_mnist", "fashion_mnist", "train", "fresh", 60_000)


# ----------------------------------------------------------------------------- engine vs reference
def _regression_backends(learner, *extra, seeds=(3,), engine="population"):
    """(``engine`` backend (population or kernel), reference backend, stream) for a small regression config."""
    overrides = ["dataset=slowly_changing_regression", "dataset.bin_size=400", "dataset.flip_after=100",
                 "network.width=5", "network.depth=2", "optimizer.step_size=0.01", "dtype=float64",
                 f"learner={learner}", *extra]
    out = {}
    for backend in (engine, "reference"):
        settings = [parse_config(compose_config(*overrides, f"seed={s}", f"backend={backend}")) for s in seeds]
        out[backend] = build_backend(settings, "cpu", torch.float64)
    stream, _, _ = build_stream(settings, "cpu", torch.float64)
    return out[engine], out["reference"], stream


@pytest.mark.parametrize("learner,extra,engine", [
    ("bp", [], "population"), ("l2", [], "population"),
    ("cbp", ["learner.replacement_rate=0.02", "learner.maturity_threshold=10"], "population"),
    ("adapted", [], "population"), ("redo", ["learner.reset_period=50"], "population"),
    ("shrink_perturb", [], "population"), ("bp", ["optimizer=adam", "optimizer.step_size=0.01"], "population"),
    ("bp", [], "kernel"), ("l2", [], "kernel"),
    ("cbp", ["learner.replacement_rate=0.02", "learner.maturity_threshold=10"], "kernel"),
    ("adapted", [], "kernel"), ("l2", ["optimizer.momentum=0.9"], "kernel"),
])
def test_engine_matches_reference_on_regression(learner, extra, engine):
    pop, ref, stream = _regression_backends(learner, *extra, engine=engine)
    for task in range(2):
        for x, y in stream.chunks(task):
            for s in range(x.shape[1]):
                pop.train(x[:, s : s + 1], y[:, s : s + 1])
                ref.train(x[:, s : s + 1], y[:, s : s + 1])
                (pe, _), (re, _) = pop.take_totals(), ref.take_totals()
                assert pe[0].item() == pytest.approx(re[0].item(), rel=1e-9, abs=1e-12)
    for (Wp, bp_), (Wr, br) in zip(pop.parameters_of(0), ref.parameters_of(0)):
        assert torch.allclose(Wp, Wr, atol=1e-10) and torch.allclose(bp_, br, atol=1e-10)
    init = build_backend([parse_config(compose_config("dataset=slowly_changing_regression", "network.width=5",
                                                      "network.depth=2", "seed=3"))], "cpu", torch.float64)
    assert max((a - b).abs().max() for (a, _), (b, _) in zip(pop.parameters_of(0), init.parameters_of(0))) > 1e-3


@pytest.mark.parametrize("engine", ["population", "kernel"])
def test_cbp_resets_units_on_regression_identically(engine):
    pop, ref, stream = _regression_backends("cbp", "learner.replacement_rate=0.05", "learner.maturity_threshold=5",
                                            engine=engine)
    total = 0
    for x, y in stream.chunks(0):
        pop.train(x, y)
        ref.train(x, y)
        pc, rc = pop.take_counts(), ref.take_counts()
        assert pc["units_reset"].tolist() == rc["units_reset"].tolist()
        total += int(pc["units_reset"].sum())
    assert total > 10
    for (Wp, _), (Wr, _) in zip(pop.parameters_of(0), ref.parameters_of(0)):
        assert torch.allclose(Wp, Wr, atol=1e-10)


def test_population_member_equals_the_same_config_alone_on_regression():
    pop, _, stream = _regression_backends("cbp", "learner.replacement_rate=0.02", "learner.maturity_threshold=10",
                                          seeds=(0, 1, 2))
    for x, y in stream.chunks(0):
        pop.train(x, y)
    totals = pop.take_totals()[0]
    for k, seed in enumerate((0, 1, 2)):
        alone, _, s1 = _regression_backends("cbp", "learner.replacement_rate=0.02", "learner.maturity_threshold=10",
                                            seeds=(seed,))
        for x, y in s1.chunks(0):
            alone.train(x, y)
        assert alone.take_totals()[0][0].item() == pytest.approx(totals[k].item(), rel=1e-12)
        for (Wa, _), (Wb, _) in zip(alone.parameters_of(0), pop.parameters_of(k)):
            assert torch.equal(Wa, Wb)


# ----------------------------------------------------------------------------- end to end
def _rows(folder):
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("learner", LEARNERS + ["adam"])
def test_every_learner_trains_on_bit_flipping_and_records_bins_and_periods(tmp_path, learner):
    extra = ["optimizer=adam", "optimizer.step_size=1e-3"] if learner == "adam" else [f"learner={learner}"]
    cfg = compose_config("dataset=bit_flipping", "debug=smoke", "dataset.flip_after=50", "network.width=5",
                         "network.depth=6", "probes=full",
                         *extra)
    (info,) = run_population([MemberJob(cfg, tmp_path / "run")])
    assert info["status"] == "completed" and info["mean_error"] > 0 and "mean_accuracy" not in info
    rows = _rows(tmp_path / "run")
    errors = [r for r in rows if r["metric"] == "error"]
    assert [(r["task"], r["step"]) for r in errors] == [("0", "200"), ("1", "400")]
    periods = [r for r in rows if r["metric"] == "period_error"]
    assert [int(r["task"]) for r in periods] == list(range(8))
    assert [int(r["step"]) for r in periods] == [50 * (p + 1) for p in range(8)]
    mean_period = sum(float(r["value"]) for r in periods[:4]) / 4
    assert float(errors[0]["value"]) == pytest.approx(mean_period, rel=1e-9)
    assert {"effective_rank", "dead_units", "weight_magnitude"} <= {r["metric"] for r in rows}
    assert not any(r["metric"] == "accuracy" for r in rows)


def test_regression_run_resumes_to_identical_metrics(tmp_path, monkeypatch):
    from plasticity_lab.kernel import KernelPopulation as Population  # the backend this config trains on

    def cfg():
        return compose_config("dataset=slowly_changing_regression", "debug=smoke", "num_tasks=4",
                              "dataset.bin_size=150", "dataset.flip_after=100", "checkpoint_seconds=0",
                              "learner=cbp", "learner.replacement_rate=0.01", "network.width=5", "network.depth=1")

    run_population([MemberJob(cfg(), tmp_path / "whole")])
    original, calls = Population.train, {"n": 0}

    def train(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # in bin 1 (steps 150..299): period 1 (100..199) is open at its checkpoint
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Population, "train", train)
    with pytest.raises(KeyboardInterrupt):
        run_population([MemberJob(cfg(), tmp_path / "cut")])
    monkeypatch.setattr(Population, "train", original)
    (info,) = run_population([MemberJob(cfg(), tmp_path / "cut")])
    assert info["status"] == "completed"
    assert _rows(tmp_path / "whole") == _rows(tmp_path / "cut")


@pytest.mark.data
@pytest.mark.parametrize("norm,batch", [("batch", 5), ("layer", 1), ("layer", 10)])
def test_norm_networks_train_on_the_reference_backend(tmp_path, mnist_root, monkeypatch, norm, batch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    cfg = compose_config("debug=smoke", f"network.norm={norm}", f"batch_size={batch}", "network.width=32",
                         "dataset.images_per_task=500", "optimizer.step_size=0.05")
    (info,) = run_population([MemberJob(cfg, tmp_path / "run")])
    assert info["status"] == "completed" and info["backend"] == "reference"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["backend"] == "reference"
    rows = _rows(tmp_path / "run")
    acc = [float(r["value"]) for r in rows if r["metric"] == "accuracy"]
    assert len(acc) == 2 and max(acc) > 0.2  # 10 classes: it learns
    assert {"effective_rank", "weight_norm"} <= {r["metric"] for r in rows}


@pytest.mark.data
def test_batchnorm_run_resumes_to_identical_metrics(tmp_path, mnist_root, monkeypatch):
    from plasticity_lab.reference import ReferencePopulation

    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))

    def cfg():
        return compose_config("debug=smoke", "num_tasks=3", "checkpoint_seconds=0", "network.norm=batch",
                              "batch_size=10", "network.width=16")

    run_population([MemberJob(cfg(), tmp_path / "whole")])
    original, calls = ReferencePopulation.train, {"n": 0}

    def train(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ReferencePopulation, "train", train)
    with pytest.raises(KeyboardInterrupt):
        run_population([MemberJob(cfg(), tmp_path / "cut")])
    monkeypatch.setattr(ReferencePopulation, "train", original)
    run_population([MemberJob(cfg(), tmp_path / "cut")])
    assert _rows(tmp_path / "whole") == _rows(tmp_path / "cut")


@pytest.mark.slow
@pytest.mark.data
def test_permuted_fashion_mnist_train_split_smoke_run(tmp_path, monkeypatch, debian_fashion):
    monkeypatch.delenv("PLASTICITY_LAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = compose_config("dataset=permuted_fashion_mnist_train", "debug=smoke", "dataset.download=false")
    s = parse_config(cfg)
    stream, images, _ = build_stream([s], "cpu", torch.float32)
    assert images.shape == (60_000, 784) and stream.pool == 60_000 and stream.examples_per_task == 200
    (info,) = run_population([MemberJob(cfg, tmp_path / "run")])
    assert info["status"] == "completed" and info["mean_accuracy"] > 0.1


# ----------------------------------------------------------------------------- presets
def test_new_presets_have_the_papers_settings():
    from test_experiments import _sweep_params as _strings

    def _sweep_params(name):
        return {k: [float(v) if k != "method" and k != "activation" else v for v in vs]
                for k, vs in _strings(name).items()}

    s = _parse("experiment=dohare/slowly_changing_regression")
    assert s.network.spec(s.dataset.num_inputs, s.dataset.num_outputs).sizes == (20, 5, 1)
    assert (s.num_tasks * s.dataset.bin_size, s.dataset.flip_after, s.dataset.target_units) == (1_000_000, 10_000, 100)
    assert _sweep_params("dohare/slowly_changing_regression")["optimizer.step_size"] == [0.01, 0.003, 0.001]
    c = _parse("experiment=dohare/slowly_changing_regression_cbp")
    assert (c.learner.name, c.optimizer.step_size) == ("cbp", 0.01)
    assert _sweep_params("dohare/slowly_changing_regression_cbp")["learner.replacement_rate"] == \
        [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    j = _parse("experiment=jucas/bit_flipping", "method=cbp_layer_6")
    assert j.network.spec(20, 1).sizes == (20, 5, 5, 5, 5, 5, 5, 1)
    assert (j.num_tasks * j.dataset.bin_size, j.dataset.flip_after, j.dataset.target_units) == (3_000_000, 2500, 500)
    assert j.learner.replacement_rate == (0, 0, 0, 0, 0, 1e-3)
    params = _sweep_params("jucas/bit_flipping")
    assert params["activation"] == ["relu", "tanh", "swish", "sigmoid"] and "cbp_layer_6" in params["method"]
    assert _sweep_params("jucas/bit_flipping_grid_cbp")["learner.replacement_rate"] == [1e-4, 1e-3, 1e-2]
    assert _sweep_params("jucas/bit_flipping_grid_l2")["learner.weight_decay"] == [1e-4, 1e-3, 1e-2]
    assert _sweep_params("jucas/bit_flipping_grid_bp")["optimizer.step_size"] == [5e-3, 1e-3, 5e-4, 1e-4]
    b = _parse("experiment=purice/batchnorm")
    assert (b.network.norm, b.backend_used, b.learner.name, b.network.depth, b.network.width) == \
        ("batch", "reference", "bp", 3, 100)
    assert _sweep_params("purice/batchnorm")["batch_size"] == [5, 10, 50, 100]
    with pytest.raises(ConfigError, match="batch_size=1"):
        _parse("experiment=purice/batchnorm", "batch_size=1")
