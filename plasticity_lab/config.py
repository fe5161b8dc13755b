"""Typed, validated settings from a composed Hydra config.

``parse_config(cfg)`` turns the composed config into frozen dataclasses or raises
``ConfigError`` naming the offending key, before any data is loaded or any training
starts: unknown keys (typos), unknown options, wrong types, out-of-range values and
per-layer lists whose length does not match the network depth. Field names are the
papers' names (step_size, weight_decay, ...), the same as config keys and analysis columns.

``VECTORISABLE`` lists the keys that may differ between members of one population
(DESIGN, "The population engine"); everything else must be equal.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from .activations import ACTIVATIONS
from .data.permuted import SUBSETS
from .network import NetworkSpec


SPLIT_SIZES = {"train": 60_000, "test": 10_000}  # MNIST and Fashion-MNIST alike


class ConfigError(ValueError):
    """A config value is unusable; the message names the key."""


# --------------------------------------------------------------------------- checks
def _positive(v):
    return None if v > 0 else "must be > 0"


def _non_negative(v):
    return None if v >= 0 else "must be >= 0"


def _one_of(*options):
    def check(v):
        return None if v in options else f"must be one of {list(options)}"
    return check


def _finite(check=None):
    def wrapped(v):
        if isinstance(v, float) and not math.isfinite(v):
            return "must be finite"
        return check(v) if check else None
    return wrapped


def _check(fn):
    return field(metadata={"check": fn})


def _checked(default, fn):
    return field(default=default, metadata={"check": fn})


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DatasetSettings:
    """Online permuted-image classification (SPEC 1)."""

    name: str = _check(_one_of("permuted_mnist", "permuted_fashion_mnist"))
    split: str = _checked("test", _one_of("train", "test"))
    images_per_task: int = _checked(10_000, _positive)
    subset: str = _checked("fixed", _one_of(*SUBSETS))
    root: Union[str, None] = None  # folder with the IDX files; else $PLASTICITY_LAB_DATA, else the cache
    download: bool = True

    @property
    def source(self) -> str:
        """Which IDX files: ``mnist`` or ``fashion_mnist``."""
        return self.name.removeprefix("permuted_")


@dataclass(frozen=True)
class NetworkSettings:
    """784 -> width x depth -> 10 MLP; ``activation`` is one name or one per hidden layer."""

    width: Any = _check(lambda v: None)  # int, or one int per hidden layer
    depth: int = _check(_positive)
    activation: Any = _check(lambda v: None)  # str, or one str per hidden layer

    def per_layer(self, key: str) -> list:
        value = getattr(self, key)
        return list(value) if isinstance(value, (list, tuple)) else [value] * self.depth

    def spec(self, n_in: int, n_out: int) -> NetworkSpec:
        return NetworkSpec(tuple([n_in, *self.per_layer("width"), n_out]), tuple(self.per_layer("activation")))


@dataclass(frozen=True)
class OptimizerSettings:
    """Plain SGD (SPEC 3.8), no momentum; ``step_size`` is the papers' alpha."""

    name: str = _check(_one_of("sgd"))
    step_size: float = _check(_finite(_positive))


@dataclass(frozen=True)
class BPSettings:
    """Backprop (SPEC 3.1): plain SGD."""

    name: str = "bp"

    @property
    def weight_decay(self) -> float:
        return 0.0


@dataclass(frozen=True)
class L2Settings:
    """L2 regularisation (SPEC 3.2): SGD with coupled weight decay on all weights and biases."""

    name: str = "l2"
    weight_decay: float = _checked(1e-3, _finite(_non_negative))


LEARNERS: dict[str, type] = {"bp": BPSettings, "l2": L2Settings}


@dataclass(frozen=True)
class RunSettings:
    seed: int = _check(_non_negative)
    num_tasks: int = _check(_positive)
    batch_size: int = _check(_positive)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    dtype: str = _checked("float32", _one_of("float32", "float64"))
    num_threads: int = _checked(1, _non_negative)  # torch intra-op threads; 0 = torch's default
    backend: str = _checked("population", _one_of("population", "reference"))
    progress_bar: bool = True
    metrics_flush_seconds: float = _checked(10.0, _non_negative)
    checkpoint_seconds: float = _checked(60.0, _non_negative)  # checkpoint at a task start at most this often
    dataset: DatasetSettings = None
    network: NetworkSettings = None
    learner: Any = None
    optimizer: OptimizerSettings = None
    probes: Any = None  # probes.settings.ProbeSettings (SPEC 4); no `probes` section -> all probes off


SECTIONS = {"dataset": DatasetSettings, "network": NetworkSettings, "optimizer": OptimizerSettings}

# Keys whose values may differ between members of one population.
VECTORISABLE = ("seed", "optimizer.step_size", "learner.weight_decay")


# --------------------------------------------------------------------------- parsing
def _coerce(value, hint, path):
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


def _read(cls, node: dict, path: str):
    """Build dataclass ``cls`` from ``node``, naming ``path.key`` in every error."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name not in SECTIONS and f.name not in ("learner", "probes")}
    unknown = sorted(set(node) - known - (set(SECTIONS) | {"learner", "probes"} if cls is RunSettings else set()))
    if unknown:
        prefix = f"{path}." if path else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; known keys: {sorted(known)}")
    values = {}
    for f in fields(cls):
        if f.name not in known:
            continue
        key = f"{path}.{f.name}" if path else f.name
        if f.name not in node:
            if f.default is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing value")
            continue
        value = _coerce(node[f.name], hints[f.name], key)
        check = f.metadata.get("check")
        problem = check(value) if (check and value is not None) else None
        if problem:
            raise ConfigError(f"{key}={value!r}: {problem}")
        values[f.name] = value
    return values


def _to_plain(cfg) -> dict:
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _network(node: dict) -> NetworkSettings:
    net = NetworkSettings(**_read(NetworkSettings, node, "network"))
    for key, kind, valid in (("width", int, lambda v: v > 0), ("activation", str, lambda v: v in ACTIVATIONS)):
        value = getattr(net, key)
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(value) != net.depth:
            raise ConfigError(f"network.{key}: per-layer list has {len(value)} entries but network.depth={net.depth}")
        for item in items:
            if not isinstance(item, kind) or isinstance(item, bool) or not valid(item):
                allowed = f"; known: {sorted(ACTIVATIONS)}" if key == "activation" else " (positive integer)"
                raise ConfigError(f"network.{key}: invalid value {item!r}{allowed}")
    if isinstance(net.width, list) or isinstance(net.activation, list):
        net = dataclasses.replace(net, width=_tuple(net.width), activation=_tuple(net.activation))
    return net


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def parse_config(cfg) -> RunSettings:
    """Validate a composed config and return typed settings; raises ConfigError naming the key."""
    node = _to_plain(cfg)
    if not isinstance(node, dict):
        raise ConfigError("the config must be a mapping")
    for section in (*SECTIONS, "learner"):
        if not isinstance(node.get(section), dict):
            raise ConfigError(f"{section}: missing config section (choose an option of the '{section}' group)")
    top = _read(RunSettings, node, "")
    learner_node = node["learner"]
    name = learner_node.get("name")
    if name not in LEARNERS:
        raise ConfigError(f"learner.name={name!r}: unknown learner; known: {sorted(LEARNERS)}")
    learner = LEARNERS[name](**_read(LEARNERS[name], learner_node, "learner"))
    dataset = DatasetSettings(**_read(DatasetSettings, node["dataset"], "dataset"))
    if dataset.subset != "all" and dataset.images_per_task > SPLIT_SIZES[dataset.split]:
        raise ConfigError(f"dataset.images_per_task={dataset.images_per_task}: the {dataset.split} split "
                          f"has only {SPLIT_SIZES[dataset.split]} images")
    settings = RunSettings(
        **top,
        dataset=dataset,
        network=_network(node["network"]),
        learner=learner,
        optimizer=OptimizerSettings(**_read(OptimizerSettings, node["optimizer"], "optimizer")),
        probes=_probes(node.get("probes"), dataset),
    )
    return settings


def _probes(node, dataset):
    from .probes.settings import parse_probes  # imported here: probes.settings builds on this module

    return parse_probes(node, dataset)


def population_key(settings: RunSettings) -> str:
    """``settings`` without the vectorisable values, as a string: equal keys <=> may share a population."""
    tree = dataclasses.asdict(settings)
    for path in VECTORISABLE:
        *parents, leaf = path.split(".")
        node = tree
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    return json.dumps(tree, sort_keys=True, default=str)
