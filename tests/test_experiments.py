"""Every experiment preset (conf/experiment/**) composes, every value it sweeps validates, and a
smoke-size job of each one trains (the lightning-hydra-template `experiment=glob(*)` pattern)."""

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import ROOT
from plasticity_lab.config import parse_config
from plasticity_lab.run import MemberJob, run_population

EXPERIMENTS = sorted(str(p.relative_to(ROOT / "conf" / "experiment").with_suffix(""))
                     for p in (ROOT / "conf" / "experiment").rglob("*.yaml"))
NEEDS_TRAIN_SPLIT = {"dohare/permuted_mnist"}  # the 60,000 training images are not on these machines


def _compose(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


def _sweep_params(name) -> dict[str, list[str]]:
    params = _compose(f"experiment={name}", hydra=True).hydra.sweeper.params or {}
    parser = OverridesParser.create()
    out = {}
    for key, value in params.items():
        o = parser.parse_override(f"{key}={value}")
        out[key] = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
    return out


def _smoke(name):
    extra = ["dataset.split=test", "dataset.subset=fixed"] if name in NEEDS_TRAIN_SPLIT else []
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
                           "debug=smoke", "hydra/launcher=population", "learner.rho_low=1e-4",
                           "learner.rho_high=1e-5,1e-6", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sweep.glob("*/run.json")]
    assert len(runs) == 8 * 8 * 2 and all(r["status"] == "completed" for r in runs)
    assert len({r["population_id"] for r in runs}) == 8  # 128 points, 16 per process
