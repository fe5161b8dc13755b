"""The engine's learners, one module per learner, each declaring it once (plasticity_lab/learners.py).

=================  ======================  =========================================
learner (config)   class                   source
=================  ======================  =========================================
bp                 (the optimiser alone)   SPEC 3.1
l2                 (the optimiser alone)   SPEC 3.2
shrink_perturb     ShrinkPerturb           SPEC 3.3, Ash & Adams 2020, [D]
cbp                ContinualBackprop       SPEC 3.4, Dohare et al. 2024 [D], [J]
adapted            AdaptedRescaling        SPEC 3.5, Purice 2025 [P]
redo               ReDo                    SPEC 3.6, Sokar et al. 2023
=================  ======================  =========================================

A learner is handed to ``Population(..., learner=...)``, which calls ``learner.setup(pop)``
once, ``learner.transform_gradients(pop, grads)`` inside every update (learners that define
it) and ``learner.after_step(pop, fwd)`` after every optimiser step (base.py; learners.md).

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


def example_population(name: str = "cbp", K: int = 16, width: int = 100, depth: int = 3,
                       activation: str = "relu", step_size: float = 0.003, optimizer: str = "sgd",
                       device="cpu", dtype=torch.float32, backend: str = "population", **hyperparameters):
    """A K-member population with learner ``name`` (any declared learner) at its config defaults
    (conf/learner/<name>.yaml, adapted: the 'matched' strategy), with ``hyperparameters``
    overriding them, on the torch engine (``backend='population'``) or the compiled kernel
    (``'kernel'``: the learners it runs); for benchmarks and quick experiments."""
    from ...config import NetworkSettings
    from ...learners import declared
    from ..optim import OPTIMIZERS
    from ..population import Population

    spec = NetworkSpec.mlp(784, width, depth, 10, activation)
    declaration = declared()[name]
    settings = declaration.settings(name=name, **hyperparameters).resolve(
        NetworkSettings(width=width, depth=depth, activation=activation))
    cls = Population
    if backend == "kernel":
        from ...kernel import KernelPopulation

        cls = KernelPopulation
    learner = declaration.build("kernel" if backend == "kernel" else "engine", [settings] * K)
    return cls(spec, list(range(K)), OPTIMIZERS[optimizer](step_size=step_size), settings.weight_decay, device,
               dtype, learner=learner)


__all__ = ["AdaptedRescaling", "ContinualBackprop", "EngineLearner", "ReDo", "ShrinkPerturb", "UTIL_TYPES",
           "example_population"]
