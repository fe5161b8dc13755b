"""Every experiment preset (conf/experiment/**) composes, every value it sweeps validates, and a
smoke-size job of each one trains (the lightning-hydra-template `experiment=glob(*)` pattern)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import OmegaConf

from conftest import ROOT
from plasticity_lab.config import parse_config
from plasticity_lab.data.idx import DataError
from plasticity_lab.run import MemberJob, run_population

EXPERIMENTS = sorted(str(p.relative_to(ROOT / "conf" / "experiment").with_suffix(""))
                     for p in (ROOT / "conf" / "experiment").rglob("*.yaml"))
REGRESSION = {"dohare/slowly_changing_regression", "dohare/slowly_changing_regression_cbp", "jucas/bit_flipping",
              "jucas/bit_flipping_grid_bp", "jucas/bit_flipping_grid_cbp", "jucas/bit_flipping_grid_l2"}
# The image presets train on the 60,000 MNIST training images, which are not on these machines: tests
# run them with the one override the offline error names, dataset.split=test.
OFFLINE = ["dataset.split=test"]


def _compose(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


def _sweep_params(name) -> dict[str, list[str]]:
    params = _compose(f"experiment={name}", hydra=True).hydra.sweeper.params or {}
    parser = OverridesParser.create()
    out = {}
    for key, value in params.items():
        o = parser.parse_override(f"{key}={value}")
        if isinstance(o.value(), IntervalSweep):  # an Optuna search range (the tpe_* presets): both ends
            out[key] = [str(o.value().start), str(o.value().end)]
        else:
            out[key] = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
    return out


def _smoke(name):
    extra = [] if name in REGRESSION else OFFLINE
    if name == "dohare/permuted_mnist":  # subset all: every image per task, whatever debug=smoke says
        extra = [*extra, "dataset.subset=fixed"]
    return [f"experiment={name}", "debug=smoke", *extra]


def test_presets_cover_both_theses_and_dohare():
    assert {"purice/main_relu", "purice/main_tanh", "purice/grid_relu", "purice/grid_tanh",
            "purice/grid_relu_as_run", "purice/grid_tanh_as_run", "purice/cbp_grid_relu", "purice/l2_grid_relu",
            "purice/twisted", "purice/grad_covariance", "purice/runtime", "jucas/relu", "jucas/selu", "jucas/tanh",
            "jucas/width_20", "jucas/width_200", "jucas/depth_2", "jucas/depth_8", "jucas/eq_params_2",
            "jucas/eq_params_8", "dohare/permuted_mnist"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_swept_value_validates(name):
    """One value at a time (the others at their first value): catches a bad value or key anywhere.

    A config-group choice (method, activation, ...) needs a fresh composition; a plain value
    is set on one composed config (the same merge Hydra does, much faster)."""
    params = _sweep_params(name)
    assert params, f"{name} sweeps nothing"
    first = {k: v[0] for k, v in params.items()}
    base = _compose(*_smoke(name), *(f"{k}={v}" for k, v in first.items()))
    parse_config(base)
    for key, values in params.items():
        for value in values[1:]:
            if (ROOT / "conf" / key).is_dir():
                parse_config(_compose(*_smoke(name), *(f"{k}={v}" for k, v in {**first, key: value}.items())))
            else:
                cfg = base.copy()
                OmegaConf.update(cfg, key, OverridesParser.create().parse_override(f"{key}={value}").value())
                parse_config(cfg)


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_job_of_every_preset_trains(name, tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    first = {k: v[0] for k, v in _sweep_params(name).items()}
    cfg = _compose(*_smoke(name), *(f"{k}={v}" for k, v in first.items()))
    (info,) = run_population([MemberJob(cfg, tmp_path / "run")])
    assert info["status"] == "completed"


def test_jucas_rows_use_the_thesis_step_sizes():
    s = {m: parse_config(_compose("experiment=jucas/tanh", f"method={m}")) for m in ("cbp_layer_1", "bp", "l2")}
    assert s["cbp_layer_1"].optimizer.step_size == 0.0005 and s["cbp_layer_1"].learner.replacement_rate[0] == 1e-6
    assert s["bp"].optimizer.step_size == 0.0005 and s["bp"].learner.name == "bp"
    assert (s["l2"].optimizer.step_size, s["l2"].learner.weight_decay) == (0.005, 1e-2)
    assert parse_config(_compose("experiment=jucas/width_20", "method=bp")).network.width == 20
    assert _sweep_params("jucas/depth_8")["method"].count("cbp_layer_8") == 1


@pytest.mark.slow
@pytest.mark.data
def test_thesis_grid_at_smoke_size_packs_into_few_processes(tmp_path, mnist_root):
    """The issue's 'done when': a smoke-size thesis grid -> one folder per point, far fewer processes."""
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "experiment=purice/grid_relu_as_run",
                           "debug=smoke", *OFFLINE, "hydra/launcher=population", "learner.rho_low=1e-4",
                           "learner.rho_high=1e-5,1e-6", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sweep.glob("*/run.json")]
    assert len(runs) == 8 * 8 * 2 and all(r["status"] == "completed" for r in runs)
    assert len({r["population_id"] for r in runs}) == 8  # 128 points, 16 per process


# ----------------------------------------------------------------------------- fidelity (SPEC 5)
def _settings(name, *overrides):
    return parse_config(_compose(f"experiment={name}", *overrides))


def _methods(name) -> list[str]:
    params = _sweep_params(name)
    return params.get("method", [])


# [J]'s full-scale step sizes and rates (SPEC 5 table; its configs 3-full_scale_experiments/*):
# (cbp step, rho), bp step, (l2 step, weight decay)
JUCAS_TUNED = {
    "relu": ((0.005, 1e-4), 0.0005, (0.005, 1e-3)), "selu": ((0.0005, 1e-4), 0.0005, (0.001, 1e-2)),
    "tanh": ((0.0005, 1e-6), 0.0005, (0.005, 1e-2)), "width_20": ((0.001, 1e-3), 0.0005, (0.001, 1e-2)),
    "width_50": ((0.005, 1e-4), 0.0005, (0.001, 1e-2)), "width_150": ((0.005, 1e-4), 0.0005, (0.001, 1e-3)),
    "width_200": ((0.005, 1e-4), 0.001, (0.001, 1e-3)), "depth_2": ((0.005, 1e-4), 0.001, (0.005, 1e-3)),
    "depth_8": ((0.001, 1e-4), 0.0005, (0.001, 1e-3)), "eq_params_2": ((0.005, 1e-5), 0.001, (0.005, 1e-3)),
    "eq_params_8": ((0.001, 1e-4), 0.0005, (0.001, 1e-3)),
}


def _expected_cbp(name):
    """(util_type, reinit) of every CBP run of a preset (SPEC 5, "Preset fidelity")."""
    if name.startswith("dohare/"):
        return "adaptable_contribution", "init"
    if name.startswith("purice/"):
        return "contribution", "no_gain"
    return "contribution", "init"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_preset_runs_what_its_paper_ran(name):
    """Header names the source; data, CBP's utility / passes / re-initialisation and the tuned values are the
    paper's (SPEC 5). Composed without the offline override: the preset's own values."""
    header = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text().split("defaults:")[0]
    paper = {"purice": "[P] Purice 2025", "jucas": "[J] Jucas 2025", "dohare": "[D] Dohare et al. 2024"}[name.split("/")[0]]
    assert f"# Source: {paper}" in header and "github.com/" in header, header
    params = _sweep_params(name)
    first = [f"{k}={v[0]}" for k, v in params.items() if k != "method"]
    s = _settings(name, *first)
    d = s.dataset
    if name in REGRESSION:
        assert d.is_regression
    elif name.startswith("purice/"):  # the first 10,000 of a once-shuffled copy of the training images, every task
        assert (d.name, d.split, d.subset, d.images_per_task, d.shuffle_seed) == ("permuted_mnist", "train", "fixed", 10_000, 0)
    elif name.startswith("jucas/"):  # a fresh 10,000 of the training images per task
        assert (d.name, d.split, d.subset, d.images_per_task, d.shuffle_seed) == ("permuted_mnist", "train", "fresh", 10_000, None)
    else:  # [D]: all 60,000 per task
        assert (d.name, d.split, d.subset) == ("permuted_mnist", "train", "all")
    cbp_runs = [_settings(name, *first, f"method={m}") for m in _methods(name) if m.startswith("cbp")]
    if s.learner.name == "cbp":
        cbp_runs.append(s)
    util, reinit = _expected_cbp(name)
    for run in cbp_runs:
        assert (run.learner.util_type, run.learner.reinit) == (util, reinit), name
        twisted = name == "purice/twisted"  # [P]'s two-pass CBP
        assert run.learner.high_replacement_rate == ((1e-5,) * 5 if twisted else (0.0,) * s.network.depth)
        if twisted:
            assert run.learner.replacement_rate == (1e-6,) * 5
    assert cbp_runs or not any("cbp" in str(v) for v in params.values())
    for m in _methods(name):
        if m.startswith("adapted"):  # the published code's schedule unless asked (tuned.adapted.schedule)
            assert _settings(name, *first, f"method={m}").learner.schedule == "per_step"
    if name.startswith("jucas/") and name.split("/")[1] in JUCAS_TUNED:
        (cbp_step, rho), bp_step, (l2_step, wd) = JUCAS_TUNED[name.split("/")[1]]
        for m in ("cbp", "cbp_layer_1"):
            run = _settings(name, f"method={m}")
            assert run.optimizer.step_size == cbp_step and max(run.learner.replacement_rate) == rho
        assert _settings(name, "method=bp").optimizer.step_size == bp_step
        l2 = _settings(name, "method=l2")
        assert (l2.optimizer.step_size, l2.learner.weight_decay) == (l2_step, wd)
        assert {"cbp", "cbp_layer_1", "cbp_layer_2", "cbp_layers_2_to_L", "cbp_none", "bp", "l2"} <= set(_methods(name))


def test_twisted_network_strategies_are_the_thesis_configs():
    """[P]'s activation_temp_cfg/activations/: relu strategy everywhere (1e-4, 1e-5), tanh strategy everywhere
    with rho_low 1e-6 and rho_high 1e-5 (note the order), matched: tanh layers the same; opposite (no stored
    config): its tanh-strategy layers the twisted tanh rates too."""
    def adapted(method):
        return _settings("purice/twisted", f"method={method}").learner

    relu, tanh, matched, opposite = (adapted(f"adapted_{m}") for m in ("relu", "tanh", "matched", "opposite"))
    assert (relu.c_low, relu.c_high, relu.rho_low, relu.rho_high) == ((-0.5,) * 5, (0.5,) * 5, (1e-4,) * 5, (1e-5,) * 5)
    assert (tanh.c_low, tanh.c_high, tanh.rho_low, tanh.rho_high) == ((0.5,) * 5, (0.2,) * 5, (1e-6,) * 5, (1e-5,) * 5)
    assert matched.c_low == (-0.5, -0.5, 0.5, 0.5, -0.5) and matched.c_high == (0.5, 0.5, 0.2, 0.2, 0.5)
    assert matched.rho_low == (1e-4, 1e-4, 1e-6, 1e-6, 1e-4) and matched.rho_high == (1e-5,) * 5
    assert opposite.c_low == (0.5, 0.5, -0.5, -0.5, 0.5)
    assert opposite.rho_low == (1e-6, 1e-6, 1e-4, 1e-4, 1e-6) and opposite.rho_high == (1e-5,) * 5
    assert _settings("purice/twisted", "method=bp").network.activation == ("relu", "relu", "tanh", "tanh", "relu")


def test_main_comparison_runs_both_ways_and_uses_the_3x100_strategies():
    """[P]'s main comparison: the 3 x 100 strategies (relu -0.5, 0.5, 1e-4, 1e-5; tanh 0.5, 0.2, 1e-5, 1e-6);
    tuned.adapted.schedule=per_pass runs every adapted method with the thesis' unpublished code's schedule."""
    for name in ("purice/main_relu", "purice/main_tanh"):
        relu = _settings(name, "method=adapted_relu").learner
        tanh = _settings(name, "method=adapted_tanh").learner
        assert (relu.c_low, relu.c_high, relu.rho_low, relu.rho_high) == ((-0.5,) * 3, (0.5,) * 3, (1e-4,) * 3, (1e-5,) * 3)
        assert (tanh.c_low, tanh.c_high, tanh.rho_low, tanh.rho_high) == ((0.5,) * 3, (0.2,) * 3, (1e-5,) * 3, (1e-6,) * 3)
        per_pass = _settings(name, "method=adapted_tanh", "tuned.adapted.schedule=per_pass").learner
        assert (per_pass.schedule, per_pass.clip) == ("per_pass", 10.0)
        assert set(_methods(name)) == {"bp", "l2", "cbp", "adapted_relu", "adapted_tanh", "l2_init", "upgd"}
        assert _settings(name, "method=l2").learner.weight_decay == 1e-3


@pytest.mark.parametrize("name,step", [("purice/main_relu", 0.003), ("purice/main_tanh", 0.003), ("jucas/relu", 0.005)])
def test_the_main_presets_add_l2_init_and_upgd_rows_with_their_stated_values(name, step):
    """Rows the papers did not run (their headers say so): L2 Init (lambda 1e-3) and UPGD (the authors' published
    defaults) at the preset's step size ([P]'s 0.003; [J]'s CBP / L2 step 0.005), on the engine (no kernel form)."""
    header = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text().split("defaults:")[0]
    assert "NOT from" in header and "L2 Init" in header and "UPGD" in header
    assert {"l2_init", "upgd"} <= set(_methods(name))
    l2_init, upgd = _settings(name, "method=l2_init"), _settings(name, "method=upgd")
    assert (l2_init.learner.name, l2_init.optimizer.step_size, l2_init.learner.lambda_) == ("l2_init", step, 1e-3)
    assert (upgd.learner.name, upgd.optimizer.step_size) == ("upgd", step)
    assert (upgd.learner.beta_utility, upgd.learner.sigma, upgd.learner.weight_decay) == (0.999, 1e-3, 1e-3)
    assert l2_init.backend_used == upgd.backend_used == "population"


@pytest.mark.parametrize("name", ["purice/main_relu", "jucas/relu", "dohare/permuted_mnist"])
def test_offline_the_error_names_the_test_split_override(name, tmp_path, monkeypatch):
    """Without the training files and without a network, a preset stops before training with a message
    naming the one override that runs it on the 10,000 test images instead (run.json records it)."""
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = _compose(f"experiment={name}", "debug=smoke", "dataset.download=false", "method=bp")
    with pytest.raises(DataError) as err:
        run_population([MemberJob(cfg, tmp_path / "run")])
    assert "'train' split not found" in str(err.value) and "add the override dataset.split=test" in str(err.value)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and "dataset.split=test" in info["error"] and info["tasks_completed"] == 0


@pytest.mark.data
def test_thesis_data_is_the_first_images_of_one_shuffle_shared_by_every_seed(mnist_root, monkeypatch):
    """[P]: the same 10,000 images (the first of ONE shuffled copy) for every task and every run; [J]: fresh."""
    from plasticity_lab.run import build_stream

    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    pools = []
    for seed in (0, 1):
        s = _settings("purice/main_relu", "method=bp", f"seed={seed}", *OFFLINE, "dataset.images_per_task=500")
        stream, images, labels = build_stream([s], "cpu", torch.float32)
        pools.append(stream.images)
        assert stream.pool == 500 and images.shape[0] == 10_000
    assert torch.equal(pools[0], pools[1])  # the shuffle does not depend on the run's seed
    plain = _settings("purice/main_relu", "method=bp", *OFFLINE, "dataset.images_per_task=500", "dataset.shuffle_seed=null")
    in_file_order, _, _ = build_stream([plain], "cpu", torch.float32)
    assert not torch.equal(pools[0], in_file_order.images)  # a shuffled copy, not the first 500 of the file
    assert (torch.bincount(labels[:500], minlength=10) > 20).all()  # a uniform draw holds every digit
