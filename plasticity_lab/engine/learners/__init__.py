"""Reset learners of the population engine (SPEC 3.3-3.6), one class per learner.

=================  ======================  =========================================
learner (config)   class                   source
=================  ======================  =========================================
cbp                ContinualBackprop       SPEC 3.4, Dohare et al. 2024 [D], [J]
adapted            AdaptedRescaling        SPEC 3.5, Purice 2025 [P]
shrink_perturb     ShrinkPerturb           SPEC 3.3, Ash & Adams 2020, [D]
redo               ReDo                    SPEC 3.6, Sokar et al. 2023
=================  ======================  =========================================

bp and l2 need no learner (plain optimiser). A learner is handed to
``Population(..., learner=...)``, which calls ``learner.setup(pop)`` once and
``learner.after_step(pop, fwd)`` after every optimiser step.

For benchmarks (``make bench``): ``example_population(name, K=16)`` builds a population of
K members of the default 784 -> 3 x 100 -> 10 network with the learner at its SPEC defaults
(seeds 0..K-1, SGD step 0.003); train it with ``pop.train(x, y)`` on x (K, n, 784), y (K, n).
"""

from __future__ import annotations

import torch

from ...network import NetworkSpec
from .adapted import AdaptedRescaling
from .base import EngineLearner
from .cbp import UTIL_TYPES, ContinualBackprop
from .redo import ReDo
from .shrink_perturb import ShrinkPerturb

LEARNER_CLASSES = {"cbp": ContinualBackprop, "adapted": AdaptedRescaling,
                   "shrink_perturb": ShrinkPerturb, "redo": ReDo}

# constructor argument <- config key, per learner (the same names: the papers' names)
_ARGS = {
    "cbp": ("replacement_rate", "high_replacement_rate", "decay_rate", "maturity_threshold", "util_type", "reinit",
            "accumulate", "bias_correction"),
    "adapted": ("c_low", "c_high", "rho_low", "rho_high", "decay_rate", "maturity_threshold", "schedule", "clip"),
    "shrink_perturb": ("sigma", "mode", "shrink"),
    "redo": ("reset_period", "tau"),
}
_SHARED = {"util_type", "reinit", "accumulate", "bias_correction", "schedule", "mode"}  # equal within a population


def learner_from_settings(learners: list, classes: dict = LEARNER_CLASSES) -> EngineLearner | None:
    """The engine learner for K members' parsed learner settings (config.LEARNERS), or None (bp, l2);
    ``classes`` maps learner names to the classes to build (the kernel backend passes its own).

    Numeric values become per-member lists (each a scalar or the resolved per-layer tuple);
    structural options (util_type, accumulate, ...) must be equal, which the population key
    guarantees.
    """
    name = learners[0].name
    if name not in ("bp", "l2") and name not in classes:
        raise ValueError(f"learner={name} has no implementation here (known: {sorted(classes)})")
    if name not in classes:
        return None
    kwargs = {}
    for key in _ARGS[name]:
        values = [getattr(s, key) for s in learners]
        kwargs[key] = values[0] if key in _SHARED else values
    return classes[name](**kwargs)


def example_population(name: str = "cbp", K: int = 16, width: int = 100, depth: int = 3,
                       activation: str = "relu", step_size: float = 0.003, optimizer: str = "sgd",
                       device="cpu", dtype=torch.float32, backend: str = "population", **hyperparameters):
    """A K-member population with learner ``name`` (bp, l2, cbp, adapted, shrink_perturb, redo)
    at its config defaults (conf/learner/<name>.yaml, adapted: the 'matched' strategy), with
    ``hyperparameters`` overriding them, on the torch engine (``backend='population'``) or the
    compiled kernel (``'kernel'``: bp, l2, cbp, adapted); for benchmarks and quick experiments."""
    from ...config import LEARNERS, NetworkSettings
    from ..population import Population

    spec = NetworkSpec.mlp(784, width, depth, 10, activation)
    settings = LEARNERS[name](name=name, **hyperparameters).resolve(
        NetworkSettings(width=width, depth=depth, activation=activation))
    cls, classes = Population, LEARNER_CLASSES
    if backend == "kernel":
        from ...kernel import KERNEL_LEARNER_CLASSES, KernelPopulation

        cls, classes = KernelPopulation, KERNEL_LEARNER_CLASSES
    learner = learner_from_settings([settings] * K, classes)
    return cls(spec, list(range(K)), step_size, settings.weight_decay, device, dtype,
               optimizer=optimizer, learner=learner)


__all__ = ["AdaptedRescaling", "ContinualBackprop", "EngineLearner", "LEARNER_CLASSES", "ReDo",
           "ShrinkPerturb", "UTIL_TYPES", "example_population", "learner_from_settings"]
