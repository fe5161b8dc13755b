"""Typed, validated settings from a composed Hydra config.

``parse_config(cfg)`` turns the composed config into frozen dataclasses or raises
``ConfigError`` naming the offending key, before any data is loaded or any training
starts: unknown keys (typos), unknown options, wrong types, out-of-range values and
per-layer lists whose length does not match the network depth. Field names are the
papers' names (step_size, weight_decay, ...), the same as config keys and analysis columns.
The fields' checks, roles and labels are declared with them (schema.py); the learners'
settings come from their declarations (plasticity_lab/learners.py, engine/learners/<name>.py),
the optimisers' from engine/optim.py.

``VECTORISABLE`` lists the keys that may differ between members of one population
(DESIGN, "The population engine"), derived from the fields' roles; everything else must be equal.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from .activations import ACTIVATIONS
from .data.permuted import SPLIT_SIZES, SUBSETS
from .engine.optim import OPTIMIZERS
from .learners import declared
from .loggers import parse_loggers
from .network import NORMS, NetworkSpec
from .probes.settings import parse_probes
from .schema import (PER_MEMBER, VECTORISABLE_ROLES, ConfigError, config_key, finite, non_negative, one_of,
                     positive, read, role, setting, tuples)

#: {learner name: its settings class}, from the learners' declarations
LEARNERS: dict[str, type] = {name: d.settings for name, d in declared().items()}


# --------------------------------------------------------------------------- sections
IMAGE_DATASETS = ("permuted_mnist", "permuted_fashion_mnist")
REGRESSION_DATASETS = ("bit_flipping", "slowly_changing_regression")
_IMAGE_ONLY = ("split", "subset", "shuffle_seed", "root", "download")
_REGRESSION_ONLY = ("flip_after", "flip_one", "target_units", "beta")


@dataclass(frozen=True)
class DatasetSettings:
    """Online permuted-image classification (SPEC 1), or bit-flipping / slowly-changing
    regression (SPEC 2; data/regression.py).

    The length of a "task" is ``images_per_task`` for image datasets and ``bin_size`` (steps
    per recorded bin) for regression; the other one of this pair is ignored (debug=smoke sets
    both). The remaining keys belong to one kind only and are refused on the other.
    """

    name: str = setting(check=one_of(*IMAGE_DATASETS, *REGRESSION_DATASETS))
    split: str = setting("test", one_of("train", "test"))
    images_per_task: int = setting(10_000, positive)
    subset: str = setting("fixed", one_of(*SUBSETS))
    shuffle_seed: Union[int, None] = setting(None, non_negative)  # shuffle the split once first (data/permuted.py)
    root: Union[str, None] = None  # folder with the IDX files; else $PLASTICITY_LAB_DATA, else the cache
    download: bool = True
    # regression (SPEC 2)
    bin_size: Union[int, None] = setting(None, positive)  # steps per bin = per recorded "task"
    flip_after: int = setting(10_000, positive)  # steps per period (the 15 flipping bits constant)
    flip_one: bool = False  # at a period boundary toggle one random flipping bit (else redraw all 15)
    target_units: int = setting(100, positive)  # M, the target network's LTUs
    beta: float = setting(0.7, finite())  # LTU threshold parameter

    @property
    def source(self) -> str:
        """Which IDX files: ``mnist`` or ``fashion_mnist``."""
        return self.name.removeprefix("permuted_")

    @property
    def is_regression(self) -> bool:
        return self.name in REGRESSION_DATASETS

    @property
    def num_inputs(self) -> int:
        return 20 if self.is_regression else 784

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_regression else 10


@dataclass(frozen=True)
class NetworkSettings:
    """784 -> width x depth -> 10 MLP; ``activation`` is one name or one per hidden layer."""

    width: Any = setting()  # int, or one int per hidden layer (checked in _network)
    depth: int = setting(check=positive)
    activation: Any = setting()  # str, or one str per hidden layer (checked in _network)
    norm: str = setting("none", one_of(*NORMS))  # SPEC 3.7: reference backend only

    def per_layer(self, key: str) -> list:
        value = getattr(self, key)
        return list(value) if isinstance(value, (list, tuple)) else [value] * self.depth

    def spec(self, n_in: int, n_out: int) -> NetworkSpec:
        return NetworkSpec(tuple([n_in, *self.per_layer("width"), n_out]), tuple(self.per_layer("activation")))


@dataclass(frozen=True)
class RunSettings:
    seed: int = setting(check=non_negative, role=PER_MEMBER)
    num_tasks: int = setting(check=positive)
    batch_size: int = setting(check=positive)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    dtype: str = setting("float32", one_of("float32", "float64"))
    num_threads: int = setting(1, non_negative)  # torch intra-op threads; 0 = torch's default
    backend: str = setting("auto", one_of("auto", "kernel", "population", "reference"))
    progress_bar: bool = True
    metrics_flush_seconds: float = setting(10.0, non_negative)
    checkpoint_seconds: float = setting(60.0, non_negative)  # checkpoint at a task start at most this often
    tuned: Any = None  # per-method values read by the `method` group through interpolation (conf/train.yaml)
    dataset: DatasetSettings = None
    network: NetworkSettings = None
    learner: Any = None  # the learner's settings (learners.LearnerSettings), resolved for the network
    optimizer: Any = None  # engine/optim.py OPTIMIZERS: SGDSettings | AdamSettings
    probes: Any = None  # probes.settings.ProbeSettings (SPEC 4); no `probes` section -> all probes off
    logger: Any = ()  # loggers.parse_loggers: ((name, settings), ...) of the `logger` group; () = none
    optimized_metric: Union[str, None] = None  # what the run returns to a sweeper (objective.py); null: its mean metric

    @property
    def backend_used(self) -> str:
        """The backend that trains (kernel/support.choose_backend): ``auto`` = the compiled kernel
        whenever it runs the config, else the population engine; a network with
        ``network.norm`` != none always runs on the reference backend."""
        from .kernel.support import choose_backend

        return choose_backend(self)


REQUIRED_SECTIONS = ("dataset", "network", "optimizer", "learner")
SECTIONS = (*REQUIRED_SECTIONS, "probes", "logger")  # read by their own parsers (probes, logger: optional)


def _vectorisable(prefix: str, cls) -> list[str]:
    return [f"{prefix}{config_key(f.name)}" for f in fields(cls) if role(f) in VECTORISABLE_ROLES]


# Keys whose values may differ between members of one population: every numeric hyperparameter
# (scalars or per-layer lists), and the presets that only set them (learner.layers,
# learner.reset_strategy, which resolve to per-layer rates/factors): the fields' roles (schema.py).
VECTORISABLE = tuple(dict.fromkeys(
    _vectorisable("", RunSettings)
    + [k for cls in OPTIMIZERS.values() for k in _vectorisable("optimizer.", cls)]
    + [k for cls in LEARNERS.values() for k in _vectorisable("learner.", cls)]))


# --------------------------------------------------------------------------- parsing
def _to_plain(cfg) -> dict:
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _network(node: dict) -> NetworkSettings:
    net = NetworkSettings(**read(NetworkSettings, node, "network"))
    for key, kind, valid in (("width", int, lambda v: v > 0), ("activation", str, lambda v: v in ACTIVATIONS)):
        value = getattr(net, key)
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(value) != net.depth:
            raise ConfigError(f"network.{key}: per-layer list has {len(value)} entries but network.depth={net.depth}")
        for item in items:
            if not isinstance(item, kind) or isinstance(item, bool) or not valid(item):
                allowed = f"; known: {sorted(ACTIVATIONS)}" if key == "activation" else " (positive integer)"
                raise ConfigError(f"network.{key}: invalid value {item!r}{allowed}")
    return NetworkSettings(**tuples(dataclasses.asdict(net)))


def parse_config(cfg) -> RunSettings:
    """Validate a composed config and return typed settings; raises ConfigError naming the key."""
    node = _to_plain(cfg)
    if not isinstance(node, dict):
        raise ConfigError("the config must be a mapping")
    for section in REQUIRED_SECTIONS:
        if not isinstance(node.get(section), dict):
            raise ConfigError(f"{section}: missing config section (choose an option of the '{section}' group)")
    top = read(RunSettings, node, "", nested=SECTIONS)
    network = _network(node["network"])
    for key, group, owner in (("layers", "cbp_layers", "cbp"), ("reset_strategy", "reset_strategy", "adapted")):
        if key in node["learner"] and node["learner"].get("name") != owner:
            raise ConfigError(f"learner.{key}: the {group} presets apply to learner={owner} only, "
                              f"not learner={node['learner'].get('name')}")
    learner = _registered(LEARNERS, node["learner"], "learner").resolve(network)
    optimizer = _registered(OPTIMIZERS, node["optimizer"], "optimizer")
    dataset = _dataset(node["dataset"])
    batch = top.get("batch_size", 1)
    if network.norm == "batch" and batch == 1:
        raise ConfigError("batch_size=1: network.norm=batch needs batch_size > 1 (BatchNorm normalises over "
                          "the batch; SPEC 3.7 uses 5, 10, 50, 100)")
    if network.norm == "batch" and not dataset.is_regression:
        n = SPLIT_SIZES[dataset.split] if dataset.subset == "all" else dataset.images_per_task
        if n % batch == 1:
            raise ConfigError(f"dataset.images_per_task={n}, batch_size={batch}: a task's last batch would hold "
                              f"one example, which network.norm=batch cannot normalise")
    if network.norm != "none" and learner.name not in ("bp", "l2"):
        raise ConfigError(f"network.norm={network.norm}: normalisation layers are offered with learner=bp or l2 "
                          f"only (the reset learners do not handle them), not learner={learner.name}")
    if dataset.is_regression:
        for key, value in (("dataset.bin_size", dataset.bin_size), ("dataset.flip_after", dataset.flip_after)):
            if value % batch:
                raise ConfigError(f"{key}={value}: must be a multiple of batch_size={batch} "
                                  f"(bins and periods end on a batch boundary)")
    elif dataset.subset != "all" and dataset.images_per_task > SPLIT_SIZES[dataset.split]:
        raise ConfigError(f"dataset.images_per_task={dataset.images_per_task}: the {dataset.split} split "
                          f"has only {SPLIT_SIZES[dataset.split]} images")
    if top.get("optimized_metric") is not None:
        from .objective import parse as parse_objective

        try:
            parse_objective(top["optimized_metric"], dataset.is_regression)
        except ValueError as err:
            raise ConfigError(f"optimized_metric={top['optimized_metric']}: {err}") from None
    settings = RunSettings(
        **top,
        dataset=dataset,
        network=network,
        learner=learner,
        optimizer=optimizer,
        probes=parse_probes(node.get("probes"), dataset),
        logger=parse_loggers(node.get("logger")),
    )
    if settings.backend == "kernel":
        from .kernel.support import kernel_unsupported

        problems = kernel_unsupported(settings)
        if problems:
            raise ConfigError(f"backend=kernel: the compiled kernel does not run {'; '.join(problems)}; "
                              f"use backend=auto (the kernel where it can, else the population engine) or "
                              f"backend=population")
    return settings


def _dataset(node: dict) -> DatasetSettings:
    dataset = DatasetSettings(**read(DatasetSettings, node, "dataset"))
    foreign = _IMAGE_ONLY if dataset.is_regression else _REGRESSION_ONLY
    kind = "image" if dataset.is_regression else "regression"
    for key in foreign:
        if key in node:
            raise ConfigError(f"dataset.{key}: a key of the {kind} datasets, not of dataset.name={dataset.name}")
    if dataset.is_regression and dataset.bin_size is None:
        raise ConfigError(f"dataset.bin_size: missing value (steps per recorded bin of {dataset.name})")
    return dataset


def _registered(registry: dict, node: dict, section: str):
    """The schema of ``registry`` named by ``node['name']``, read from ``node``.

    A key of another option (``learner.util_type`` with learner=bp: the section is open to any
    key so that sweeps over methods compose, see conf/train.yaml) is refused naming the options
    that have it."""
    name = node.get("name")
    if name not in registry:
        raise ConfigError(f"{section}.name={name!r}: unknown {section}; known: {sorted(registry)}")
    own = _keys(registry[name])
    for key in sorted(set(node) - own):
        owners = [option for option, cls in registry.items() if key in _keys(cls)]
        if owners:
            raise ConfigError(
                f"{section}.{key}: not a setting of {section}={name} (its settings: {', '.join(sorted(own))}); "
                f"{key} belongs to {' / '.join(f'{section}={o}' for o in owners)}. Choose such a {section} "
                f"(or a method that uses it), or leave {section}.{key} out; in a sweep over methods, sweep "
                f"only methods whose {section} has {key}")
    return registry[name](**tuples(read(registry[name], node, section)))


def _keys(cls) -> set[str]:
    return {config_key(f.name) for f in fields(cls)}


def population_key(settings: RunSettings) -> str:
    """``settings`` without the vectorisable values (its own learner's and optimiser's, by role), as
    a string: equal keys <=> may share a population."""
    tree = dataclasses.asdict(settings)
    tree.pop("tuned", None)  # only feeds interpolations: the values it sets are compared where they land
    for node, obj in ((tree, settings), (tree["optimizer"], settings.optimizer), (tree["learner"], settings.learner)):
        for f in fields(obj):
            if role(f) in VECTORISABLE_ROLES:
                node.pop(f.name, None)
    return json.dumps(tree, sort_keys=True, default=str)
