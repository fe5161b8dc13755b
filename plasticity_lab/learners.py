"""Every learner, declared once: its settings, its display label and its implementations.

A learner is one module ``plasticity_lab/engine/learners/<name>.py`` that holds its settings
dataclass (a subclass of :class:`LearnerSettings` whose fields carry their check, role and label,
schema.py) and its engine class, and declares both in one module-level ``LEARNER =
Learner(...)``, which also names its readable reference class (in
``plasticity_lab/reference/learners/<name>.py``) and, where there is one, its compiled kernel class
(``plasticity_lab/kernel/learners/<name>.py``). :func:`declared` finds every such module; from the
declarations come the config validation (config.py), the keys that may vary within a population
(``VECTORISABLE``), the constructor arguments of every backend (:meth:`Learner.build`), which
learners the kernel runs (kernel/support.py) and the analysis labels (multirun_analysis/declared.py,
written by ``python -m plasticity_lab.learners``). How to add one: plasticity_lab/learners.md.

This module imports neither torch nor a learner until :func:`declared` is called.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import pkgutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from .schema import PER_LAYER, PER_MEMBER, PRESET, SHARED, config_key, label, layer_values, role

ENGINE_PACKAGE = "plasticity_lab.engine.learners"
BACKENDS = ("engine", "reference", "kernel")
_PACKAGES = {"engine": ENGINE_PACKAGE, "reference": "plasticity_lab.reference.learners",
             "kernel": "plasticity_lab.kernel.learners"}
#: fields every learner's settings may have that are not arguments of its implementations: the
#: config group's option and the optimiser's coupled weight decay (the population applies it)
NOT_ARGUMENTS = ("name", "weight_decay")


@dataclass(frozen=True)
class LearnerSettings:
    """Base of every learner's settings (one frozen dataclass per learner, the papers' names as
    fields). ``weight_decay`` is the optimiser's coupled weight decay: 0 unless the learner declares it."""

    name: str
    weight_decay = 0.0

    def resolve(self, network) -> "LearnerSettings":
        """These settings for ``network`` (config.NetworkSettings): every ``PER_LAYER`` value as one
        entry per hidden layer (a list's length checked against the depth). Learners with presets
        (cbp's ``layers``, adapted's ``reset_strategy``) extend this."""
        per_layer = {f.name: layer_values(getattr(self, f.name), network.depth, f"learner.{config_key(f.name)}")
                     for f in fields(self) if role(f) == PER_LAYER}
        return dataclasses.replace(self, **per_layer)


@dataclass(frozen=True)
class Learner:
    """One learner's declaration. ``settings``: its settings class (its ``name`` field's default is
    the learner's name, ``conf/learner/<name>.yaml`` its defaults); ``label``: its display name;
    ``order``: its place in legends and tables (baselines first); ``engine``: its engine class
    (engine/learners/base.py's interface) or None when the optimiser alone is the learner (bp, l2);
    ``reference`` / ``kernel``: the class names of its readable and its compiled implementation in
    the modules of the same name (None: the kernel does not run it, runs fall back to the engine)."""

    settings: type
    label: str
    order: int
    engine: type | None = None
    reference: str | None = None
    kernel: str | None = None

    @property
    def name(self) -> str:
        return self.settings.__dataclass_fields__["name"].default

    def implementation(self, backend: str) -> type | None:
        """The class that implements this learner on ``backend`` (engine, reference, kernel), or None."""
        if backend == "engine":
            return self.engine
        class_name = {"reference": self.reference, "kernel": self.kernel}[backend]
        if class_name is None:
            return None
        return getattr(importlib.import_module(f"{_PACKAGES[backend]}.{self.name}"), class_name)

    def arguments(self, members: list) -> dict:
        """The constructor arguments of the engine (and kernel) class for K members' resolved
        settings: every ``PER_LAYER`` / ``PER_MEMBER`` value as a list with one entry per member
        (each a number or one per hidden layer), every ``SHARED`` value once (the population key
        makes them equal)."""
        kwargs = {}
        for f in argument_fields(self.settings):
            values = [getattr(s, f.name) for s in members]
            if role(f) == SHARED:
                if any(v != values[0] for v in values):
                    raise ValueError(f"learner.{config_key(f.name)} must be equal in one population, got {values}")
                kwargs[f.name] = values[0]
            else:
                kwargs[f.name] = values
        return kwargs

    def build(self, backend: str, members: list):
        """The ``backend`` learner object for K members' resolved settings (reference: K = 1, each
        value as it is), or None when the optimiser alone is the learner."""
        cls = self.implementation(backend)
        if cls is None:
            if self.engine is not None:
                raise ValueError(f"learner={self.name} has no {backend} implementation")
            return None
        if backend == "reference":
            (member,) = members
            return cls(**{f.name: getattr(member, f.name) for f in argument_fields(self.settings)})
        return cls(**self.arguments(members))


def argument_fields(settings_cls) -> list:
    """The settings fields an implementation's constructor takes (not presets, not NOT_ARGUMENTS)."""
    return [f for f in fields(settings_cls) if f.name not in NOT_ARGUMENTS and role(f) != PRESET]


@functools.cache
def declared() -> dict[str, Learner]:
    """{name: declaration} of every module of engine/learners/ with a ``LEARNER``, in display order."""
    package = importlib.import_module(ENGINE_PACKAGE)
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        declaration = getattr(importlib.import_module(f"{ENGINE_PACKAGE}.{info.name}"), "LEARNER", None)
        if declaration is None:
            continue
        if declaration.name != info.name:
            raise ValueError(f"{ENGINE_PACKAGE}.{info.name} declares learner {declaration.name!r}: a learner's "
                             f"module is named after it")
        found[declaration.name] = declaration
    return dict(sorted(found.items(), key=lambda item: item[1].order))


def field_labels(settings_classes) -> dict[str, str]:
    """{config key: display label} of every labelled field of ``settings_classes``; ValueError when
    one key has two labels (the analysis labels a column by its key alone)."""
    labels: dict[str, str] = {}
    for cls in settings_classes:
        for f in fields(cls):
            text = label(f)
            key = config_key(f.name)
            if text is None:
                continue
            if labels.setdefault(key, text) != text:
                raise ValueError(f"key {key!r} has two labels: {labels[key]!r} and {text!r} ({cls.__name__})")
    return labels


# --------------------------------------------------------------------------- the analysis' table
LABELS_MODULE = Path(__file__).resolve().parents[1] / "multirun_analysis" / "declared.py"


def labels_module() -> str:
    """The text of multirun_analysis/declared.py: the learners' and optimisers' display labels, for
    the analysis, which never imports torch (tests/test_declarations.py checks it is up to date)."""
    from .engine.optim import OPTIMIZERS

    learners = declared()
    keys = field_labels([d.settings for d in learners.values()] + list(OPTIMIZERS.values()))
    lines = ['"""Display labels of the learners and of their and the optimisers\' settings, from their declarations.',
             "",
             "Generated by ``python -m plasticity_lab.learners`` (plasticity_lab/learners.py) from every learner's",
             "and optimiser's declaration; do not edit. tests/test_declarations.py fails when it is out of date.",
             '"""', "", "#: learner name -> display label, in display order (baselines first)", "LEARNERS = {"]
    lines += [f"    {_quoted(name)}: {_quoted(d.label)}," for name, d in learners.items()]
    lines += ["}", "", "#: setting (config key's last component) -> axis / header label", "SETTINGS = {"]
    lines += [f"    {_quoted(key)}: {_quoted(text)}," for key, text in sorted(keys.items())]
    lines += ["}", ""]
    return "\n".join(lines)


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def main(argv=None) -> int:
    """``python -m plasticity_lab.learners``: (re)write multirun_analysis/declared.py; ``--check``:
    exit status 1 if it is out of date."""
    argv = sys.argv[1:] if argv is None else argv
    text = labels_module()
    if "--check" in argv:
        current = LABELS_MODULE.read_text() if LABELS_MODULE.is_file() else ""
        if current != text:
            print(f"{LABELS_MODULE} is out of date: run python -m plasticity_lab.learners", file=sys.stderr)
            return 1
        return 0
    LABELS_MODULE.write_text(text)
    print(f"wrote {LABELS_MODULE}")
    return 0


__all__ = ["BACKENDS", "Learner", "LearnerSettings", "argument_fields", "declared", "field_labels", "PER_LAYER",
           "PER_MEMBER", "PRESET", "SHARED"]

if __name__ == "__main__":
    sys.exit(main())
