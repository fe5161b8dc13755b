"""Settings schemas: a setting's check, its role in a population and its display label, in one field.

Every settings dataclass (config.py's sections, the learners' and optimisers' settings, the probes'
settings) declares its fields with :func:`setting`; :func:`read` builds the dataclass's values from a
config node and raises :class:`ConfigError` naming the key (``learner.weight_decay=-0.1: must be >= 0``)
before any data is loaded or any training starts. This module imports neither torch nor the rest of
the package, so every other settings module can build on it.

Roles (DESIGN, "The population engine": members may differ in every numeric hyperparameter):

- ``PER_LAYER``: a number, or a list with one number per hidden layer; may differ between members;
- ``PER_MEMBER``: one number (or pair, ...) per member; may differ between members;
- ``SHARED``: equal for every member of a population (structural options: util_type, mode, ...);
- ``PRESET``: sets other, per-layer values when the settings are resolved for the network
  (cbp's ``layers``, adapted's ``reset_strategy``); may differ between members.

A field named like a Python keyword plus ``_`` (``lambda_``, PEP 8) has the keyword as its config
key (``learner.lambda``): :func:`config_key`.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
from dataclasses import MISSING, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config value is unusable; the message names the key."""


PER_LAYER, PER_MEMBER, SHARED, PRESET = "per_layer", "per_member", "shared", "preset"
ROLES = (PER_LAYER, PER_MEMBER, SHARED, PRESET)
VECTORISABLE_ROLES = (PER_LAYER, PER_MEMBER, PRESET)  # may differ between the members of one population


# --------------------------------------------------------------------------- checks
# A check takes a value and returns None (fine) or the problem, worded after "key=value: ".
def positive(v):
    return None if v > 0 else "must be > 0"


def non_negative(v):
    return None if v >= 0 else "must be >= 0"


def one_of(*options):
    def check(v):
        return None if v in options else f"must be one of {list(options)}"
    return check


def finite(check=None):
    def wrapped(v):
        if isinstance(v, float) and not math.isfinite(v):
            return "must be finite"
        return check(v) if check else None
    return wrapped


def at_most(limit, inclusive=True):
    def check(v):
        ok = v <= limit if inclusive else v < limit
        return None if ok else f"must be {'<=' if inclusive else '<'} {limit}"
    return check


def all_of(*checks):
    def check(v):
        for c in checks:
            problem = c(v)
            if problem:
                return problem
        return None
    return check


UNIT_INTERVAL = all_of(non_negative, at_most(1))  # rates: fractions of eligible units per step
DECAY = all_of(non_negative, at_most(1, inclusive=False))  # decay rates of running averages


def per_layer(check=None, integer=False, allow_null=False):
    """A number, or a list with one number per hidden layer (its length is checked when the settings
    are resolved for the network, :func:`layer_values`); ``check`` applies to every number."""
    def wrapped(v):
        if isinstance(v, (list, tuple)) and not v:
            return "per-layer list is empty"
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            if item is None and allow_null:
                continue
            number = (int,) if integer else (int, float)
            if isinstance(item, bool) or not isinstance(item, number):
                what = "an integer" if integer else "a number"
                return f"expected {what} or a list with one per hidden layer, got {item!r}"
            if isinstance(item, float) and not math.isfinite(item):
                return "must be finite"
            problem = check(item) if check else None
            if problem:
                return problem if not isinstance(v, (list, tuple)) else f"entry {item!r} {problem}"
        return None
    return wrapped


def layer_values(value, depth: int, key: str) -> tuple:
    """``value`` resolved to one entry per hidden layer; ConfigError when a list has the wrong length."""
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise ConfigError(f"{key}: per-layer list has {len(value)} entries but network.depth={depth}")
        return tuple(value)
    return (value,) * depth


# --------------------------------------------------------------------------- fields
def setting(default=MISSING, check=None, *, role: str = SHARED, label: str | None = None, integer: bool = False,
            allow_null: bool = False):
    """A settings field: its ``default``, its ``check`` (value -> problem or None), its ``role`` in a
    population (module docstring) and its display ``label`` (analysis tables and figures; None: the key).
    A ``PER_LAYER`` field takes a number or one per hidden layer (``integer``: integers only;
    ``allow_null``: null entries, filled in when the settings are resolved)."""
    if role not in ROLES:
        raise ValueError(f"role={role!r}; known: {ROLES}")
    if role == PER_LAYER:
        check = per_layer(check, integer, allow_null)
    return field(default=default, metadata={"check": check, "role": role, "label": label})


def role(f: dataclasses.Field) -> str:
    return f.metadata.get("role", SHARED)


def label(f: dataclasses.Field) -> str | None:
    return f.metadata.get("label")


def config_key(name: str) -> str:
    """The config key of field ``name``: the name itself, or a keyword for ``keyword_`` (``lambda_`` -> ``lambda``)."""
    if name.endswith("_") and keyword.iskeyword(name[:-1]):
        return name[:-1]
    return name


# --------------------------------------------------------------------------- reading
def coerce(value, hint, path):
    """Check ``value`` against the annotation ``hint``; ints are accepted for floats."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Union:
        if value is None and type(None) in get_args(hint):
            return None
        hint = [a for a in get_args(hint) if a is not type(None)][0]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")
    return value


def read(cls, node: dict, path: str, nested=()) -> dict:
    """The values of dataclass ``cls`` given in ``node`` ({field name: checked value}), naming
    ``path.key`` in every error: an unknown key, a missing required value, a wrong type, a failed
    check. ``nested``: keys of sections read elsewhere (accepted, not read)."""
    hints = get_type_hints(cls)
    own = {config_key(f.name): f for f in fields(cls) if f.name not in nested}
    prefix = f"{path}." if path else ""
    unknown = sorted(set(node) - set(own) - set(nested))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; known keys: {sorted(own)}")
    values = {}
    for key, f in own.items():
        if key not in node:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{prefix}{key}: missing value")
            continue
        value = coerce(node[key], hints[f.name], prefix + key)
        check = f.metadata.get("check")
        problem = check(value) if (check and value is not None) else None
        if problem:
            raise ConfigError(f"{prefix}{key}={value!r}: {problem}")
        values[f.name] = value
    return values


def tuples(values: dict) -> dict:
    """``values`` with lists as tuples (frozen settings hold tuples: hashable, and equal however given)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def defaults(cls) -> dict:
    """{config key: default} of dataclass ``cls``'s fields that have one (a conf/*.yaml's content)."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[config_key(f.name)] = f.default
        elif f.default_factory is not MISSING:
            out[config_key(f.name)] = f.default_factory()
    return out
