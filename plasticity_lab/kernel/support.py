"""Which runs the kernel backend trains, and which backend ``backend=auto`` picks (README, "Backends").

The kernel (kernel/) covers SGD (optional momentum, coupled weight decay: bp, l2), cbp (also
[P]'s two-pass CBP, either ``reinit``) and the adapted rescaling (both schedules), every
activation, depth, width, batch size, both losses and both dtypes, on the CPU. Shrink & Perturb,
ReDo and Adam train on the torch engine (``population``), normalisation layers on the reference.
This module never imports numba, so validating a config stays cheap.
"""

from __future__ import annotations

from ..engine.optim import OPTIMIZERS
from ..learners import declared


def kernel_learners() -> list[str]:
    """The learners the kernel runs, from their declarations (plasticity_lab/learners.py): those with a
    kernel implementation, and those that are the optimiser alone (bp, l2)."""
    return [name for name, d in declared().items() if d.kernel is not None or d.engine is None]


def kernel_optimizers() -> list[str]:
    """The optimisers the kernel runs (their settings' ``on_kernel``, engine/optim.py)."""
    return [name for name, cls in OPTIMIZERS.items() if cls.on_kernel]


def kernel_unsupported(settings) -> list[str]:
    """What in ``settings`` (config.RunSettings) the kernel backend does not run; empty if it runs them."""
    problems = []
    if settings.network.norm != "none":
        problems.append(f"network.norm={settings.network.norm} (normalisation layers train on the reference backend)")
    learner = settings.learner
    if learner.name not in kernel_learners():
        problems.append(f"learner={learner.name} (the kernel runs {', '.join(kernel_learners())})")
    if settings.optimizer.name not in kernel_optimizers():
        problems.append(f"optimizer={settings.optimizer.name} (the kernel runs {', '.join(kernel_optimizers())}; "
                        f"sgd with or without momentum)")
    device = settings.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        problems.append(f"device={settings.device} (the kernel runs on the CPU)")
    return problems


def choose_backend(settings) -> str:
    """The backend that trains ``settings``: ``backend`` itself, except that a normalised network
    always trains on the reference, and ``auto`` means the kernel when it runs the config, else
    the population engine."""
    if settings.network.norm != "none" and settings.backend != "kernel":
        return "reference"
    if settings.backend == "auto":
        return "population" if kernel_unsupported(settings) else "kernel"
    return settings.backend
