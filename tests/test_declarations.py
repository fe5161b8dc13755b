"""Each learner and optimiser is declared once (plasticity_lab/learners.py, engine/optim.py); everything
else is derived from the declarations, and these tests keep the derived parts and the hand-written ones
(the config files, the implementations' constructors, the checkpointed state) in line with them."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT, compose_config, optimizer
from plasticity_lab import learners as registry
from plasticity_lab.config import VECTORISABLE, ConfigError, parse_config, population_key
from plasticity_lab.engine import Population
from plasticity_lab.engine.optim import OPTIMIZERS
from plasticity_lab.engine.state import undeclared
from plasticity_lab.kernel import KernelPopulation
from plasticity_lab.kernel.support import kernel_unsupported
from plasticity_lab.learners import argument_fields, declared
from plasticity_lab.network import NetworkSpec
from plasticity_lab.reference import ReferenceLearner, ReferencePopulation
from plasticity_lab.schema import PER_LAYER, PER_MEMBER, PRESET, config_key, defaults, role

LEARNERS = declared()


def _plain(value):
    """Tuples as lists (YAML has lists only)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("group,registry_of", [("learner", lambda: {n: d.settings for n, d in LEARNERS.items()}),
                                               ("optimizer", lambda: OPTIMIZERS)])
def test_every_config_option_is_its_settings_defaults(group, registry_of):
    """conf/<group>/<name>.yaml holds exactly the defaults of the settings class declared for <name>,
    and every declared option has its file."""
    settings = registry_of()
    files = {p.stem: p for p in (ROOT / "conf" / group).glob("*.yaml")}
    assert set(files) == set(settings)
    for name, path in files.items():
        assert yaml.safe_load(path.read_text()) == _plain(defaults(settings[name])), path


def test_every_declaration_names_implementations_whose_constructors_take_its_settings():
    """The engine, reference and kernel classes a learner declares exist, and each constructor takes
    exactly the settings' arguments (``argument_fields``): the one list of constructor arguments."""
    assert list(LEARNERS)[:6] == ["bp", "l2", "shrink_perturb", "cbp", "adapted", "redo"]  # display order
    for name, d in LEARNERS.items():
        assert d.settings.__dataclass_fields__["name"].default == name
        expected = {f.name for f in argument_fields(d.settings)}
        if d.engine is None:  # the optimiser alone is the learner
            assert d.reference is None and d.kernel is None and expected == set(), name
            continue
        for backend in registry.BACKENDS:
            cls = d.implementation(backend)
            if cls is None:
                assert backend == "kernel", (name, backend)
                continue
            parameters = set(inspect.signature(cls.__init__).parameters) - {"self"}
            assert parameters == expected, (name, backend, parameters ^ expected)


def test_the_analysis_labels_are_generated_from_the_declarations():
    """multirun_analysis/declared.py (the analysis never imports torch) is what the declarations give."""
    assert registry.LABELS_MODULE.read_text() == registry.labels_module(), (
        "multirun_analysis/declared.py is out of date: run python -m plasticity_lab.learners")
    check = subprocess.run([sys.executable, "-m", "plasticity_lab.learners", "--check"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    from multirun_analysis import names

    assert names.LEARNERS == {n: d.label for n, d in LEARNERS.items()}
    assert names.key_label("learner.sigma") == "Perturbation σ"  # S&P's noise is `sigma` (it once was noise_std)
    with pytest.raises(ValueError, match="two labels"):
        registry.field_labels([_labelled("a"), _labelled("b")])


def _labelled(text):
    @dataclasses.dataclass(frozen=True)
    class Settings:
        sigma: float = dataclasses.field(default=0.0, metadata={"label": text})
    return Settings


def test_vectorisable_keys_and_the_population_key_come_from_the_roles():
    """A field whose role lets members differ is in VECTORISABLE and out of the population key; a
    SHARED field is in the key: changing it to anything else changes the key."""
    base = parse_config(compose_config("debug=smoke"))
    for name, d in LEARNERS.items():
        settings = d.settings().resolve(base.network)
        run = dataclasses.replace(base, learner=settings)
        for f in dataclasses.fields(settings):
            if f.name == "name":
                continue
            changed = dataclasses.replace(run, learner=dataclasses.replace(settings, **{f.name: "<another value>"}))
            vectorisable = role(f) in (PER_LAYER, PER_MEMBER, PRESET)
            assert (population_key(changed) == population_key(run)) == vectorisable, (name, f.name)
            assert (f"learner.{config_key(f.name)}" in VECTORISABLE) == vectorisable, (name, f.name)
    for cls in OPTIMIZERS.values():
        for f in dataclasses.fields(cls):
            assert (f"optimizer.{f.name}" in VECTORISABLE) == (role(f) == PER_MEMBER)
    assert "seed" in VECTORISABLE and "num_tasks" not in VECTORISABLE


def test_constructor_arguments_are_per_member_lists_and_shared_values_once():
    network = parse_config(compose_config("debug=smoke")).network
    cbp = LEARNERS["cbp"]
    a = cbp.settings(replacement_rate=1e-3).resolve(network)
    b = cbp.settings(replacement_rate=[1e-2, 0.0, 1e-4], maturity_threshold=7).resolve(network)
    kwargs = cbp.arguments([a, b])
    assert kwargs["replacement_rate"] == [(1e-3,) * 3, (1e-2, 0.0, 1e-4)]
    assert kwargs["maturity_threshold"] == [(100,) * 3, (7,) * 3]
    assert kwargs["util_type"] == "adaptable_contribution" and "layers" not in kwargs and "weight_decay" not in kwargs
    with pytest.raises(ValueError, match="learner.util_type must be equal"):
        cbp.arguments([a, dataclasses.replace(b, util_type="contribution")])


def test_the_kernel_runs_exactly_the_learners_declared_with_a_kernel_class():
    """kernel/support.py is derived: a learner without a kernel class falls back to the engine."""
    for name, d in LEARNERS.items():
        s = parse_config(compose_config("debug=smoke", f"learner={name}"))
        runs = not any(p.startswith(f"learner={name}") for p in kernel_unsupported(s))
        assert runs == (d.kernel is not None or d.engine is None), name
        assert s.backend_used == ("kernel" if runs else "population")
        if not runs:
            with pytest.raises(ConfigError, match=f"the compiled kernel does not run learner={name}"):
                parse_config(compose_config("debug=smoke", f"learner={name}", "backend=kernel"))
    for name, cls in OPTIMIZERS.items():
        s = parse_config(compose_config("debug=smoke", f"optimizer={name}"))
        assert (s.backend_used == "kernel") == cls.on_kernel


# --------------------------------------------------------------------------- checkpointed state
def _configurations():
    """(learner, hyperparameters, optimiser settings) that make every learner act within 60 steps and
    create every attribute it can have (each mode, each optimiser)."""
    fast = dict(maturity_threshold=5)
    cases = {
        "cbp": [dict(replacement_rate=0.05, **fast), dict(replacement_rate=0.05, high_replacement_rate=0.05,
                                                         util_type="random", accumulate=False, **fast)],
        "adapted": [dict(rho_low=0.05, rho_high=0.05, c_low=0.5, c_high=0.5, **fast),
                    dict(rho_low=0.05, rho_high=0.05, c_low=0.5, c_high=0.5, schedule="per_pass", **fast)],
        "shrink_perturb": [dict(sigma=1e-3), dict(mode="toward_init", shrink=0.99)],
        "redo": [dict(reset_period=7, tau=0.5)],
    }
    for name, d in LEARNERS.items():
        for hyper in cases.get(name, [{}]):
            for opt in (optimizer(step_size=0.01), optimizer(step_size=0.01, momentum=0.9),
                        optimizer("adam", step_size=1e-3)):
                yield name, d, hyper, opt


def _trained(backend: str, d, hyper, opt, spec, seeds=(0, 1)):
    network = parse_config(compose_config("debug=smoke")).network
    settings = d.settings(**hyper).resolve(network)
    cls = KernelPopulation if backend == "kernel" else Population
    pop = cls(spec, list(seeds), opt, settings.weight_decay, learner=d.build(backend, [settings] * len(seeds)))
    g = torch.Generator().manual_seed(0)
    pop.train(torch.rand(len(seeds), 60, spec.sizes[0], generator=g), torch.randint(0, 10, (len(seeds), 60), generator=g))
    return pop


def test_engine_and_kernel_components_declare_every_tensor_they_hold():
    """After setup and 60 steps in which the learner acted, every attribute of the population, its
    optimiser and its learner that holds a tensor, an array or a generator is declared, as checkpointed
    per-member state (STATE) or as rebuilt from the settings (REBUILT); and every declared name exists in
    some configuration (no stale or misspelt declaration)."""
    spec = NetworkSpec.mlp(784, 16, 3, 10, "relu")
    seen: dict[type, set] = {}
    for name, d, hyper, opt in _configurations():
        for backend in ("engine", "kernel"):
            kernel_runs = (d.kernel is not None or d.engine is None) and opt.on_kernel and not (
                hyper.get("high_replacement_rate") or hyper.get("schedule") == "per_pass")  # (one-pass CBP, per_step)
            if backend == "kernel" and not kernel_runs:
                continue
            pop = _trained(backend, d, hyper, opt, spec)
            for part in (pop, pop.optimizer, pop.learner):
                if part is None:
                    continue
                assert undeclared(part) == [], (name, backend, type(part).__name__, hyper)
                seen.setdefault(type(part), set()).update(vars(part))
    for cls in {base for seen_cls in seen for base in seen_cls.__mro__}:  # what a class declares itself, some
        names = set(vars(cls).get("STATE", {})) | set(vars(cls).get("REBUILT", ()))  # instance of it holds
        held = set().union(*(attributes for seen_cls, attributes in seen.items() if issubclass(seen_cls, cls)))
        assert names <= held, (cls.__name__, names - held)


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def test_reference_members_are_checkpointed_whole():
    """The reference checkpoints a member whole (network, optimiser, learner): every tensor its learner
    holds comes back equal, whatever it is called."""
    spec = NetworkSpec.mlp(784, 16, 3, 10, "relu")
    network = parse_config(compose_config("debug=smoke")).network
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 784, generator=g), torch.randint(0, 10, (60,), generator=g)
    checked = 0
    for name, d, hyper, opt in _configurations():
        if d.engine is None:
            continue
        settings = d.settings(**hyper).resolve(network)
        member = ReferenceLearner(spec, 0, opt, settings.weight_decay, learner=d.build("reference", [settings]))
        for s in range(60):
            member.step(x[s : s + 1], y[s : s + 1])
        state = ReferencePopulation([member]).member_state(0)
        restored = ReferencePopulation([ReferenceLearner(spec, 0, opt)])
        restored.load_member_states([state])
        for key, value in vars(member.learner).items():
            for a, b in zip(_tensors(value), _tensors(getattr(restored.members[0].learner, key)), strict=True):
                assert torch.equal(a, b), (name, key)
                checked += 1
    assert checked > 50


def test_a_task_kinds_state_restores_from_plain_numbers_exactly():
    """Regression's open-period error sum (tasks.py STATE) is a float64 per member; a checkpoint may hold
    it as a plain number (checkpoint format 1 wrote float(...)): restored at full precision."""
    from plasticity_lab.engine.state import load_member_states, member_state
    from plasticity_lab.tasks import Regression

    values = [10.089040224933823, 1 / 3]
    kind = Regression(2)
    load_member_states(kind, [{"period_sum": v} for v in values])
    assert kind.period_sum.dtype == torch.float64 and kind.period_sum.tolist() == values
    again = Regression(2)
    load_member_states(again, [member_state(kind, k, 2) for k in range(2)])
    assert again.period_sum.tolist() == values
