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
import re
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


def _at_most(limit, inclusive=True):
    def check(v):
        ok = v <= limit if inclusive else v < limit
        return None if ok else f"must be {'<=' if inclusive else '<'} {limit}"
    return check


def _all(*checks):
    def check(v):
        for c in checks:
            problem = c(v)
            if problem:
                return problem
        return None
    return check


_UNIT_INTERVAL = _all(_non_negative, _at_most(1))  # rates: fractions of eligible units per step
_DECAY = _all(_non_negative, _at_most(1, inclusive=False))


def _per_layer(check=None, integer=False, allow_null=False):
    """A number, or a list with one number per hidden layer (length checked in ``resolve``)."""
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


def _layer_values(value, depth: int, key: str) -> tuple:
    """``value`` resolved to one entry per hidden layer; ConfigError when a list has the wrong length."""
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise ConfigError(f"{key}: per-layer list has {len(value)} entries but network.depth={depth}")
        return tuple(value)
    return (value,) * depth


def _check(fn):
    return field(metadata={"check": fn})


def _checked(default, fn):
    return field(default=default, metadata={"check": fn})


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

    name: str = _check(_one_of(*IMAGE_DATASETS, *REGRESSION_DATASETS))
    split: str = _checked("test", _one_of("train", "test"))
    images_per_task: int = _checked(10_000, _positive)
    subset: str = _checked("fixed", _one_of(*SUBSETS))
    shuffle_seed: Union[int, None] = _checked(None, _non_negative)  # shuffle the split once first (data/permuted.py)
    root: Union[str, None] = None  # folder with the IDX files; else $PLASTICITY_LAB_DATA, else the cache
    download: bool = True
    # regression (SPEC 2)
    bin_size: Union[int, None] = _checked(None, _positive)  # steps per bin = per recorded "task"
    flip_after: int = _checked(10_000, _positive)  # steps per period (the 15 flipping bits constant)
    flip_one: bool = False  # at a period boundary toggle one random flipping bit (else redraw all 15)
    target_units: int = _checked(100, _positive)  # M, the target network's LTUs
    beta: float = _checked(0.7, _finite())  # LTU threshold parameter

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

    @property
    def loss(self) -> str:
        return "squared_error" if self.is_regression else "cross_entropy"


@dataclass(frozen=True)
class NetworkSettings:
    """784 -> width x depth -> 10 MLP; ``activation`` is one name or one per hidden layer."""

    width: Any = _check(lambda v: None)  # int, or one int per hidden layer
    depth: int = _check(_positive)
    activation: Any = _check(lambda v: None)  # str, or one str per hidden layer
    norm: str = _checked("none", _one_of("none", "batch", "layer"))  # SPEC 3.7: reference backend only

    def per_layer(self, key: str) -> list:
        value = getattr(self, key)
        return list(value) if isinstance(value, (list, tuple)) else [value] * self.depth

    def spec(self, n_in: int, n_out: int) -> NetworkSpec:
        return NetworkSpec(tuple([n_in, *self.per_layer("width"), n_out]), tuple(self.per_layer("activation")))


@dataclass(frozen=True)
class SGDSettings:
    """SGD (SPEC 1, 3.8): ``step_size`` is the papers' alpha; ``momentum`` as torch.optim.SGD
    (dampening 0, no Nesterov); 0 = plain SGD (the engine's fused fast path)."""

    name: str = _check(_one_of("sgd"))
    step_size: float = _check(_finite(_positive))
    momentum: float = _checked(0.0, _finite(_DECAY))


@dataclass(frozen=True)
class AdamSettings:
    """Adam (SPEC 3.8) with torch.optim.Adam's semantics (bias correction, coupled weight decay);
    per-element step counts once a reset learner restarts units (SPEC 3.4 step 8)."""

    name: str = _check(_one_of("adam"))
    step_size: float = _check(_finite(_positive))
    betas: Any = _checked((0.9, 0.999), lambda v: None if (
        isinstance(v, (list, tuple)) and len(v) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v))
        else "must be a pair [beta1, beta2] with 0 <= beta < 1")
    eps: float = _checked(1e-8, _finite(_positive))


OptimizerSettings = SGDSettings  # the default optimiser's schema (older name)
OPTIMIZERS: dict[str, type] = {"sgd": SGDSettings, "adam": AdamSettings}


class _Resolvable:
    def resolve(self, network: "NetworkSettings"):
        """Per-layer values for ``network`` (lists checked against its depth, presets applied)."""
        return self


@dataclass(frozen=True)
class BPSettings(_Resolvable):
    """Backprop (SPEC 3.1): plain SGD."""

    name: str = "bp"

    @property
    def weight_decay(self) -> float:
        return 0.0


@dataclass(frozen=True)
class L2Settings(_Resolvable):
    """L2 regularisation (SPEC 3.2): SGD with coupled weight decay on all weights and biases."""

    name: str = "l2"
    weight_decay: float = _checked(1e-3, _finite(_non_negative))


@dataclass(frozen=True)
class ShrinkPerturbSettings(_Resolvable):
    """Shrink and Perturb (SPEC 3.3): weight decay plus N(0, sigma^2) noise on every weight and
    bias after every step (mode noise, [D]), or theta <- s theta + (1 - s) theta_init (mode toward_init)."""

    name: str = "shrink_perturb"
    mode: str = _checked("noise", _one_of("noise", "toward_init"))
    weight_decay: float = _checked(1e-4, _finite(_non_negative))
    sigma: float = _checked(1e-5, _finite(_non_negative))
    shrink: float = _checked(0.99999, _finite(_UNIT_INTERVAL))


CBP_UTIL_TYPES = ("contribution", "adaptable_contribution", "zero_contribution", "weight", "adaptation",
                  "feature_by_input", "random")


def _layers_rule(v):
    """``layers``: all | none | last | an int | a list of 1-based indices, 'last' or ranges 'a..b'."""
    if v in ("all", "none", "last") or (isinstance(v, int) and not isinstance(v, bool)):
        return None
    if isinstance(v, (list, tuple)):
        for item in v:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                return f"invalid entry {item!r}"
            if isinstance(item, str) and item != "last" and not _RANGE.fullmatch(item):
                return f"invalid entry {item!r} (use a 1-based index, 'last' or a range like '2..last')"
        return None
    return "must be all, none, last, or a list of 1-based hidden-layer indices / 'last' / ranges like '2..last'"


_RANGE = re.compile(r"(\d+|last)\.\.(\d+|last)")


def layers_mask(rule, depth: int, key: str = "learner.layers") -> tuple[bool, ...]:
    """Which hidden layers (0-based mask of length ``depth``) a per-layer preset rule selects."""
    if rule == "all":
        return (True,) * depth
    if rule == "none":
        return (False,) * depth
    items = [rule] if not isinstance(rule, (list, tuple)) else list(rule)
    chosen = set()

    def index(x):
        i = depth if x == "last" else int(x)
        if not 1 <= i <= depth:
            raise ConfigError(f"{key}={rule!r}: hidden layer {i} does not exist (network.depth={depth}; layers are 1..{depth})")
        return i

    for item in items:
        match = _RANGE.fullmatch(item) if isinstance(item, str) else None
        if match:
            lo, hi = index(match.group(1)), index(match.group(2))
            chosen.update(range(lo, hi + 1))
        else:
            chosen.add(index(item))
    return tuple(l + 1 in chosen for l in range(depth))


# reinit -> network.init_weight's gain: the layer's own (SPEC 1), or none ([P]'s CBP code, SPEC 5)
CBP_REINIT_GAIN = {"init": None, "no_gain": 1.0}
CBP_REINITS = tuple(CBP_REINIT_GAIN)


@dataclass(frozen=True)
class CBPSettings(_Resolvable):
    """Continual Backpropagation (SPEC 3.4) [D]; per-layer rates and presets [J]; [P]'s second,
    high-utility pass (``high_replacement_rate``) and its re-initialisation without the activation
    gain (``reinit: no_gain``) (SPEC 5, "Preset fidelity")."""

    name: str = "cbp"
    replacement_rate: Any = _checked(1e-4, _per_layer(_UNIT_INTERVAL))
    high_replacement_rate: Any = _checked(0.0, _per_layer(_UNIT_INTERVAL))
    decay_rate: Any = _checked(0.99, _per_layer(_DECAY))
    maturity_threshold: Any = _checked(100, _per_layer(_non_negative, integer=True))
    util_type: str = _checked("adaptable_contribution", _one_of(*CBP_UTIL_TYPES))
    reinit: str = _checked("init", _one_of(*CBP_REINITS))
    accumulate: bool = True
    bias_correction: bool = False
    layers: Any = _checked("all", _layers_rule)  # which hidden layers CBP acts on (cbp_layers presets)
    weight_decay: float = _checked(0.0, _finite(_non_negative))

    def resolve(self, network):
        depth = network.depth
        mask = layers_mask(self.layers, depth)
        rates = {}
        for key in ("replacement_rate", "high_replacement_rate"):  # 0 on the layers the preset leaves out
            given = _layer_values(getattr(self, key), depth, f"learner.{key}")
            rates[key] = tuple(r if on else 0.0 for r, on in zip(given, mask))
        return dataclasses.replace(
            self, **rates,
            decay_rate=_layer_values(self.decay_rate, depth, "learner.decay_rate"),
            maturity_threshold=_layer_values(self.maturity_threshold, depth, "learner.maturity_threshold"),
            layers=_tuple(self.layers))


# [P]'s strategies (SPEC 3.5): per hidden layer c_low, c_high, rho_low, rho_high
ADAPTED_STRATEGIES = {
    "relu": dict(c_low=-0.5, c_high=0.5, rho_low=1e-4, rho_high=1e-5),
    "tanh": dict(c_low=0.5, c_high=0.2, rho_low=1e-5, rho_high=1e-6),
    "none": dict(c_low=1.0, c_high=1.0, rho_low=0.0, rho_high=0.0),
}
OPPOSITE_FAMILY = {"relu": "tanh", "tanh": "relu"}
ADAPTED_SCHEDULES = ("per_step", "per_pass")
# schedule per_pass ([P]'s "modified cfg" code, SPEC 5): after each pass, a layer in which a unit was
# rescaled has its weights clamped to [-5, 5] and its biases to [-10, 10]
PER_PASS_CLIP = {"weights": 5.0, "biases": 10.0}


def strategy_per_layer(strategy: str, activations) -> list[str]:
    """The fixed strategy of each hidden layer: matched = the layer's activation family
    (activations.py: relu-family -> relu, tanh/sigmoid-family -> tanh), opposite = the other one."""
    families = [ACTIVATIONS[a].family for a in activations]
    if strategy == "matched":
        return families
    if strategy == "opposite":
        return [OPPOSITE_FAMILY[f] for f in families]
    return [strategy] * len(families)


@dataclass(frozen=True)
class AdaptedSettings(_Resolvable):
    """Activation-adapted low/high utility rescaling (SPEC 3.5) [P]. c_low, c_high, rho_low,
    rho_high: null = from ``reset_strategy``; a number or a per-layer list (null entries =
    from the strategy) overrides it.

    ``schedule``: ``per_step`` (the published code, SPEC 3.5): one age / utility update per
    step, then the two passes, then every hidden layer clamped to [-clip, clip]; ``per_pass``
    ([P]'s "modified cfg" code, SPEC 5): each pass (low, then high) ages the units and updates
    the utility again before choosing, and a layer in which it rescaled a unit is clamped to
    ``PER_PASS_CLIP`` (weights 5, biases 10); there ``clip`` is on (10, the default) or off (null).
    """

    name: str = "adapted"
    reset_strategy: str = _checked("matched", _one_of("relu", "tanh", "matched", "opposite", "none"))
    c_low: Any = _checked(None, _per_layer(allow_null=True))
    c_high: Any = _checked(None, _per_layer(allow_null=True))
    rho_low: Any = _checked(None, _per_layer(_UNIT_INTERVAL, allow_null=True))
    rho_high: Any = _checked(None, _per_layer(_UNIT_INTERVAL, allow_null=True))
    decay_rate: Any = _checked(0.99, _per_layer(_DECAY))
    maturity_threshold: Any = _checked(100, _per_layer(_non_negative, integer=True))
    schedule: str = _checked("per_step", _one_of(*ADAPTED_SCHEDULES))
    clip: Union[float, None] = _checked(10.0, _finite(_positive))
    weight_decay: float = _checked(0.0, _finite(_non_negative))

    def resolve(self, network):
        if self.schedule == "per_pass" and self.clip not in (None, 10.0):
            raise ConfigError(f"learner.clip={self.clip}: learner.schedule=per_pass clamps a rescaled layer to "
                              f"[P]'s bounds (weights {PER_PASS_CLIP['weights']:g}, biases "
                              f"{PER_PASS_CLIP['biases']:g}); there clip is 10 (on) or null (off). "
                              "A clip bound of your own goes with learner.schedule=per_step")
        depth = network.depth
        strategies = strategy_per_layer(self.reset_strategy, network.per_layer("activation"))
        values = {}
        for key in ("c_low", "c_high", "rho_low", "rho_high"):
            given = _layer_values(getattr(self, key), depth, f"learner.{key}")
            values[key] = tuple(float(ADAPTED_STRATEGIES[st][key] if g is None else g)
                                for g, st in zip(given, strategies))
        return dataclasses.replace(
            self, **values, decay_rate=_layer_values(self.decay_rate, depth, "learner.decay_rate"),
            maturity_threshold=_layer_values(self.maturity_threshold, depth, "learner.maturity_threshold"))


@dataclass(frozen=True)
class ReDoSettings(_Resolvable):
    """ReDo (SPEC 3.6, Sokar et al. 2023): every reset_period steps recycle units with score <= tau."""

    name: str = "redo"
    reset_period: int = _checked(100, _positive)
    tau: Any = _checked(0.1, _per_layer(_non_negative))
    weight_decay: float = _checked(0.0, _finite(_non_negative))

    def resolve(self, network):
        return dataclasses.replace(self, tau=_layer_values(self.tau, network.depth, "learner.tau"))


LEARNERS: dict[str, type] = {"bp": BPSettings, "l2": L2Settings, "shrink_perturb": ShrinkPerturbSettings,
                             "cbp": CBPSettings, "adapted": AdaptedSettings, "redo": ReDoSettings}


@dataclass(frozen=True)
class RunSettings:
    seed: int = _check(_non_negative)
    num_tasks: int = _check(_positive)
    batch_size: int = _check(_positive)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    dtype: str = _checked("float32", _one_of("float32", "float64"))
    num_threads: int = _checked(1, _non_negative)  # torch intra-op threads; 0 = torch's default
    backend: str = _checked("auto", _one_of("auto", "kernel", "population", "reference"))
    progress_bar: bool = True
    metrics_flush_seconds: float = _checked(10.0, _non_negative)
    checkpoint_seconds: float = _checked(60.0, _non_negative)
    tuned: Any = None  # per-method values read by the `method` group through interpolation (conf/train.yaml)  # checkpoint at a task start at most this often
    dataset: DatasetSettings = None
    network: NetworkSettings = None
    learner: Any = None
    optimizer: Any = None  # SGDSettings | AdamSettings
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


SECTIONS = {"dataset": DatasetSettings, "network": NetworkSettings, "optimizer": OptimizerSettings}

# Keys whose values may differ between members of one population: every numeric
# hyperparameter (scalars or per-layer lists), and the presets that only set them
# (learner.layers, learner.reset_strategy, which resolve to per-layer rates/factors).
VECTORISABLE = (
    "seed", "optimizer.step_size", "optimizer.momentum", "optimizer.betas", "optimizer.eps",
    "learner.weight_decay", "learner.replacement_rate", "learner.high_replacement_rate", "learner.decay_rate",
    "learner.maturity_threshold", "learner.layers", "learner.reset_strategy", "learner.c_low", "learner.c_high", "learner.rho_low",
    "learner.rho_high", "learner.clip", "learner.sigma", "learner.shrink", "learner.tau", "learner.reset_period",
)


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
    own = ("learner", "probes", "logger") if cls is RunSettings else ()  # sections parsed on their own
    known = {f.name for f in fields(cls) if f.name not in SECTIONS and f.name not in own}
    unknown = sorted(set(node) - known - (set(SECTIONS) | set(own) if cls is RunSettings else set()))
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
    from .loggers import parse_loggers  # imported here: loggers builds on this module

    settings = RunSettings(
        **top,
        dataset=dataset,
        network=network,
        learner=learner,
        optimizer=optimizer,
        probes=_probes(node.get("probes"), dataset),
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
    dataset = DatasetSettings(**_read(DatasetSettings, node, "dataset"))
    foreign = _IMAGE_ONLY if dataset.is_regression else _REGRESSION_ONLY
    kind = "image" if dataset.is_regression else "regression"
    for key in foreign:
        if key in node:
            raise ConfigError(f"dataset.{key}: a key of the {kind} datasets, not of dataset.name={dataset.name}")
    if dataset.is_regression and dataset.bin_size is None:
        raise ConfigError(f"dataset.bin_size: missing value (steps per recorded bin of {dataset.name})")
    return dataset


def _probes(node, dataset):
    from .probes.settings import parse_probes  # imported here: probes.settings builds on this module

    return parse_probes(node, dataset)


def _registered(registry: dict, node: dict, section: str):
    """The schema of ``registry`` named by ``node['name']``, read from ``node``.

    A key of another option (``learner.util_type`` with learner=bp: the section is open to any
    key so that sweeps over methods compose, see conf/train.yaml) is refused naming the options
    that have it."""
    name = node.get("name")
    if name not in registry:
        raise ConfigError(f"{section}.name={name!r}: unknown {section}; known: {sorted(registry)}")
    own = {f.name for f in fields(registry[name])}
    for key in sorted(set(node) - own):
        owners = [option for option, cls in registry.items() if key in {f.name for f in fields(cls)}]
        if owners:
            raise ConfigError(
                f"{section}.{key}: not a setting of {section}={name} (its settings: {', '.join(sorted(own))}); "
                f"{key} belongs to {' / '.join(f'{section}={o}' for o in owners)}. Choose such a {section} "
                f"(or a method that uses it), or leave {section}.{key} out; in a sweep over methods, sweep "
                f"only methods whose {section} has {key}")
    return registry[name](**{k: _tuple(v) for k, v in _read(registry[name], node, section).items()})


def population_key(settings: RunSettings) -> str:
    """``settings`` without the vectorisable values, as a string: equal keys <=> may share a population."""
    tree = dataclasses.asdict(settings)
    tree.pop("tuned", None)  # only feeds interpolations: the values it sets are compared where they land
    for path in VECTORISABLE:
        *parents, leaf = path.split(".")
        node = tree
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    return json.dumps(tree, sort_keys=True, default=str)
