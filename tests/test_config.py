"""Every config option composes and parses; bad values fail naming the key, before training."""

import pytest
from hydra.errors import ConfigCompositionException

from conftest import ROOT, compose_config
from plasticity_lab.config import ConfigError, parse_config, population_key

GROUPS = ["dataset", "activation", "network_depth", "learner", "optimizer", "debug", "cbp_layers", "reset_strategy"]
CONTEXT = {"cbp_layers": ["learner=cbp", "network_depth=depth_5"], "reset_strategy": ["learner=adapted"]}


def _options(group):
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_validates(group, option):
    settings = parse_config(compose_config(*CONTEXT.get(group, []), f"{group}={option}"))
    net = settings.network
    assert len(net.per_layer("activation")) == net.depth == len(net.per_layer("width"))
    for key in ("replacement_rate", "c_low", "c_high", "rho_low", "rho_high", "tau"):
        if hasattr(settings.learner, key):  # per-layer values are resolved for the network's depth
            assert len(getattr(settings.learner, key)) == net.depth


def test_learner_defaults_are_the_spec_defaults():
    cbp = parse_config(compose_config("learner=cbp")).learner
    assert cbp.replacement_rate == (1e-4,) * 3 and cbp.decay_rate == (0.99,) * 3
    assert cbp.maturity_threshold == (100,) * 3 and cbp.util_type == "adaptable_contribution"
    assert cbp.accumulate is True and cbp.bias_correction is False and cbp.weight_decay == 0.0
    assert cbp.high_replacement_rate == (0.0,) * 3 and cbp.reinit == "init"
    relu = parse_config(compose_config("learner=adapted", "reset_strategy=relu")).learner
    assert (relu.c_low, relu.c_high, relu.rho_low, relu.rho_high) == ((-0.5,) * 3, (0.5,) * 3, (1e-4,) * 3, (1e-5,) * 3)
    tanh = parse_config(compose_config("learner=adapted", "reset_strategy=tanh")).learner
    assert (tanh.c_low, tanh.c_high, tanh.rho_low, tanh.rho_high) == ((0.5,) * 3, (0.2,) * 3, (1e-5,) * 3, (1e-6,) * 3)
    assert tanh.clip == 10.0 and tanh.decay_rate == (0.99,) * 3 and tanh.maturity_threshold == (100,) * 3
    assert tanh.schedule == "per_step"
    # python train.py learner=adapted activation=tanh: the matched strategy gives tanh layers the tanh strategy
    assert parse_config(compose_config("learner=adapted", "activation=tanh")).learner.c_low == (0.5,) * 3
    sp = parse_config(compose_config("learner=shrink_perturb")).learner
    assert (sp.mode, sp.weight_decay, sp.sigma) == ("noise", 1e-4, 1e-5)
    redo = parse_config(compose_config("learner=redo")).learner
    assert (redo.reset_period, redo.tau) == (100, (0.1,) * 3)
    adam = parse_config(compose_config("optimizer=adam")).optimizer
    assert (adam.step_size, adam.betas, adam.eps) == (1e-4, (0.9, 0.999), 1e-8)
    assert parse_config(compose_config()).optimizer.momentum == 0.0


@pytest.mark.parametrize("preset,depth,rates", [
    ("all", 3, (1, 1, 1)), ("layer_1", 5, (1, 0, 0, 0, 0)), ("layer_2", 2, (0, 1)), ("layer_3", 8, (0, 0, 1, 0, 0, 0, 0, 0)),
    ("last", 5, (0, 0, 0, 0, 1)), ("last", 2, (0, 1)), ("layers_2_to_L", 8, (0, 1, 1, 1, 1, 1, 1, 1)), ("none", 3, (0, 0, 0)),
])
def test_cbp_layer_presets_resolve_for_any_depth(preset, depth, rates):
    s = parse_config(compose_config("learner=cbp", f"network_depth=depth_{depth}", f"cbp_layers={preset}",
                                    "learner.replacement_rate=1e-3"))
    assert s.learner.replacement_rate == tuple(1e-3 * r for r in rates)


def test_cbp_per_layer_rates_and_preset_combine():
    s = parse_config(compose_config("learner=cbp", "learner.replacement_rate=[1e-2,1e-3,1e-4]", "cbp_layers=layers_2_to_L",
                                    "learner.high_replacement_rate=1e-5"))
    assert s.learner.replacement_rate == (0.0, 1e-3, 1e-4)
    assert s.learner.high_replacement_rate == (0.0, 1e-5, 1e-5)  # the layer preset switches both passes off


def test_adapted_per_pass_clip_is_on_or_off():
    on = parse_config(compose_config("learner=adapted", "learner.schedule=per_pass")).learner
    off = parse_config(compose_config("learner=adapted", "learner.schedule=per_pass", "learner.clip=null")).learner
    assert (on.schedule, on.clip, off.clip) == ("per_pass", 10.0, None)


def test_adapted_strategies_resolve_per_layer_from_the_activation_family():
    twisted = ["network_depth=twisted", "learner=adapted"]  # [relu, relu, tanh, tanh, relu]
    matched = parse_config(compose_config(*twisted, "reset_strategy=matched")).learner
    assert matched.c_low == (-0.5, -0.5, 0.5, 0.5, -0.5) and matched.rho_high == (1e-5, 1e-5, 1e-6, 1e-6, 1e-5)
    opposite = parse_config(compose_config(*twisted, "reset_strategy=opposite")).learner
    assert opposite.c_low == (0.5, 0.5, -0.5, -0.5, 0.5) and opposite.rho_low == (1e-5, 1e-5, 1e-4, 1e-4, 1e-5)
    none = parse_config(compose_config(*twisted, "reset_strategy=none")).learner
    assert none.rho_low == none.rho_high == (0.0,) * 5
    sigmoid = parse_config(compose_config("learner=adapted", "activation=sigmoid")).learner  # sigmoid: tanh family
    assert sigmoid.c_high == (0.2,) * 3
    override = parse_config(compose_config(*twisted, "learner.c_low=[null,1,null,2,null]", "learner.rho_high=0")).learner
    assert override.c_low == (-0.5, 1.0, 0.5, 2.0, -0.5) and override.rho_high == (0.0,) * 5


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
    (["learner.replacment_rate=0.1"], "learner.replacment_rate"),
    (["learner=cbp", "learner.replacment_rate=0.1"], "learner.replacment_rate"),
    (["dataset.imags_per_task=9000"], "dataset.imags_per_task"),
    (["+typo_key=1"], "typo_key"),
    (["learner=cbp", "learner.replacement_rate=-1e-4"], "learner.replacement_rate"),
    (["learner=cbp", "learner.replacement_rate=[1e-4,1e-4]"], "learner.replacement_rate"),
    (["learner=cbp", "learner.replacement_rate=[1e-4,2,0]"], "learner.replacement_rate"),
    (["learner=cbp", "learner.util_type=utility"], "learner.util_type"),
    (["learner=cbp", "learner.decay_rate=1"], "learner.decay_rate"),
    (["learner=cbp", "learner.maturity_threshold=-1"], "learner.maturity_threshold"),
    (["learner=cbp", "learner.maturity_threshold=2.5"], "learner.maturity_threshold"),
    (["learner=cbp", "learner.accumulate=maybe"], "learner.accumulate"),
    (["learner=cbp", "cbp_layers=layer_3", "network_depth=depth_2"], "learner.layers"),
    (["learner=cbp", "learner.layers=[first]"], "learner.layers"),
    (["learner=bp", "cbp_layers=layer_1"], "learner.layers"),
    (["learner=l2", "reset_strategy=relu"], "learner.reset_strategy"),
    (["learner=adapted", "learner.reset_strategy=sigmoid"], "learner.reset_strategy"),
    (["learner=adapted", "learner.rho_low=[1e-4,1e-5]"], "learner.rho_low"),
    (["learner=adapted", "learner.rho_high=-1"], "learner.rho_high"),
    (["learner=adapted", "learner.c_low=abc"], "learner.c_low"),
    (["learner=adapted", "learner.clip=-1"], "learner.clip"),
    (["learner=adapted", "learner.schedule=per_layer"], "learner.schedule"),
    (["learner=adapted", "learner.schedule=per_pass", "learner.clip=3"], "learner.clip"),
    (["learner=cbp", "learner.high_replacement_rate=-1e-5"], "learner.high_replacement_rate"),
    (["learner=cbp", "learner.high_replacement_rate=[1e-5,1e-5]"], "learner.high_replacement_rate"),
    (["learner=cbp", "learner.reinit=kaiming"], "learner.reinit"),
    (["learner=adapted", "+learner.reinit=no_gain"], "learner.reinit"),
    (["learner=shrink_perturb", "learner.sigma=-1e-5"], "learner.sigma"),
    (["learner=shrink_perturb", "learner.mode=reset"], "learner.mode"),
    (["learner=shrink_perturb", "learner.shrink=1.5"], "learner.shrink"),
    (["learner=redo", "learner.reset_period=0"], "learner.reset_period"),
    (["learner=redo", "learner.tau=[0.1,-0.1,0.1]"], "learner.tau"),
    (["optimizer.momentum=-0.5"], "optimizer.momentum"),
    (["optimizer=adam", "optimizer.betas=[0.9,1.0]"], "optimizer.betas"),
    (["optimizer=adam", "optimizer.eps=0"], "optimizer.eps"),
    (["optimizer=adam", "optimizer.momentum=0.9"], "optimizer.momentum"),
    (["optimizer.step_sise=0.1"], "optimizer.step_sise"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        parse_config(compose_config(*overrides))
    assert str(err.value).startswith(key), str(err.value)


def test_unknown_option_and_unknown_top_level_key_fail_at_composition():
    with pytest.raises(ConfigCompositionException, match="learner"):
        compose_config("learner=nonexistent")
    with pytest.raises(ConfigCompositionException, match="num_taks"):
        compose_config("num_taks=3")


def test_a_key_of_another_learner_composes_and_is_refused_naming_its_owner():
    """learner/optimizer/dataset are open to any key at composition (so method sweeps with a
    learner-specific override compose, README "Sweeps"); parse_config refuses the key, naming
    the options that have it and what to do."""
    for overrides in (["learner.util_type=contribution"], ["method=l2", "learner.util_type=contribution"]):
        with pytest.raises(ConfigError) as err:
            parse_config(compose_config(*overrides))
        message = str(err.value)
        assert message.startswith("learner.util_type: not a setting of learner=")
        assert "belongs to learner=cbp" in message and "sweep only methods" in message
    with pytest.raises(ConfigError, match=r"optimizer.momentum: not a setting of optimizer=adam.*optimizer=sgd"):
        parse_config(compose_config("optimizer=adam", "optimizer.momentum=0.9"))
    settings = parse_config(compose_config("method=cbp_layer_1", "learner.util_type=contribution"))
    assert settings.learner.util_type == "contribution" and settings.learner.replacement_rate == (1e-4, 0.0, 0.0)


def test_population_key_ignores_only_vectorisable_values():
    base = parse_config(compose_config("learner=l2"))
    same = parse_config(compose_config("learner=l2", "seed=4", "optimizer.step_size=0.1", "learner.weight_decay=0.5"))
    assert population_key(base) == population_key(same)
    for other in (["learner=l2", "activation=tanh"], ["learner=l2", "num_tasks=3"], ["learner=bp"]):
        assert population_key(parse_config(compose_config(*other))) != population_key(base)


@pytest.mark.parametrize("learner,a,b,different", [
    ("cbp", ["cbp_layers=layer_1", "learner.decay_rate=0.9"],
     ["learner.replacement_rate=[1e-3,1e-4,1e-5]", "learner.maturity_threshold=[10,20,30]", "optimizer.momentum=0.9",
      "learner.high_replacement_rate=[0,1e-5,1e-4]"],
     ["learner.util_type=contribution"]),
    ("cbp", ["learner.high_replacement_rate=1e-5"], ["learner.high_replacement_rate=0"], ["learner.reinit=no_gain"]),
    ("adapted", ["reset_strategy=relu", "learner.clip=null"], ["reset_strategy=tanh", "learner.c_low=[1,2,3]", "learner.rho_high=0"],
     ["learner.schedule=per_pass"]),
    ("shrink_perturb", ["learner.sigma=1e-4"], ["learner.sigma=1e-6", "learner.weight_decay=0"], ["learner.mode=toward_init"]),
    ("redo", ["learner.tau=0"], ["learner.tau=[0.1,0.2,0.3]", "learner.reset_period=10"], ["network_depth=depth_2"]),
])
def test_population_key_for_reset_learners(learner, a, b, different):
    """Numeric hyperparameters (and presets that only set them) may differ within a population."""
    key = population_key(parse_config(compose_config(f"learner={learner}", *a)))
    assert population_key(parse_config(compose_config(f"learner={learner}", *b))) == key
    assert population_key(parse_config(compose_config(f"learner={learner}", *a, *different))) != key
    assert population_key(parse_config(compose_config(f"learner={learner}", *a, "optimizer=adam"))) != key
