"""Every config option composes and parses; bad values fail naming the key, before training."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from conftest import ROOT, compose_config
from plasticity_lab.config import ConfigError, parse_config, population_key

GROUPS = ["dataset", "activation", "network_depth", "learner", "optimizer", "debug"]


def _options(group):
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_validates(group, option):
    settings = parse_config(compose_config(f"{group}={option}"))
    net = settings.network
    assert len(net.per_layer("activation")) == net.depth == len(net.per_layer("width"))


def test_defaults_are_the_spec_defaults():
    s = parse_config(compose_config())
    assert (s.network.depth, s.network.width, s.network.activation) == (3, 100, "relu")
    assert s.optimizer.step_size == 0.003 and s.batch_size == 1 and s.num_tasks == 500
    assert (s.dataset.images_per_task, s.dataset.subset, s.dataset.split) == (10_000, "fixed", "test")
    assert s.learner.name == "bp" and s.learner.weight_decay == 0.0


def test_network_presets():
    twisted = parse_config(compose_config("network_depth=twisted")).network
    assert twisted.activation == ("relu", "relu", "tanh", "tanh", "relu") and twisted.depth == 5
    assert parse_config(compose_config("network_depth=eq_params_2")).network.width == 129
    eq8 = parse_config(compose_config("network_depth=eq_params_8")).network
    assert (eq8.depth, eq8.width) == (8, 86)
    # equal-parameter nets have (close to) the parameter count of 5 x 100
    counts = [parse_config(compose_config(f"network_depth={d}")).network.spec(784, 10).num_parameters()
              for d in ("depth_5", "eq_params_2", "eq_params_8")]
    assert max(abs(c - counts[0]) / counts[0] for c in counts) < 0.03


@pytest.mark.parametrize("overrides,key", [
    (["learner=l2", "learner.weight_decay=-1"], "learner.weight_decay"),
    (["optimizer.step_size=0"], "optimizer.step_size"),
    (["optimizer.step_size=abc"], "optimizer.step_size"),
    (["batch_size=0"], "batch_size"),
    (["num_tasks=-3"], "num_tasks"),
    (["seed=-1"], "seed"),
    (["network.depth=3", "network.activation=[relu,tanh]"], "network.activation"),
    (["network.width=[100,100]"], "network.width"),
    (["network.activation=relux"], "network.activation"),
    (["dataset.subset=sometimes"], "dataset.subset"),
    (["dataset.images_per_task=20000"], "dataset.images_per_task"),
    (["backend=jax"], "backend"),
    (["+learner.replacment_rate=0.1"], "learner.replacment_rate"),
    (["+typo_key=1"], "typo_key"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        parse_config(compose_config(*overrides))
    assert str(err.value).startswith(key), str(err.value)


def test_unknown_option_and_unknown_key_fail_at_composition():
    with pytest.raises(ConfigCompositionException, match="learner"):
        compose_config("learner=nonexistent")
    with pytest.raises(ConfigCompositionException, match="step_sise"):
        compose_config("optimizer.step_sise=0.1")


def test_population_key_ignores_only_vectorisable_values():
    base = parse_config(compose_config("learner=l2"))
    same = parse_config(compose_config("learner=l2", "seed=4", "optimizer.step_size=0.1", "learner.weight_decay=0.5"))
    assert population_key(base) == population_key(same)
    for other in (["learner=l2", "activation=tanh"], ["learner=l2", "num_tasks=3"], ["learner=bp"]):
        assert population_key(parse_config(compose_config(*other))) != population_key(base)
