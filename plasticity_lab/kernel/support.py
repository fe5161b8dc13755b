"""Which runs the kernel backend trains, and which backend ``backend=auto`` picks (README, "Backends").

The kernel (kernel/) covers SGD (optional momentum, coupled weight decay: bp, l2), cbp (also
[P]'s two-pass CBP, either ``reinit``) and the adapted rescaling (both schedules), every
activation, depth, width, batch size, both losses and both dtypes, on the CPU. Shrink & Perturb,
ReDo and Adam train on the torch engine (``population``), normalisation layers on the reference.
This module never imports numba, so validating a config stays cheap.
"""

from __future__ import annotations

KERNEL_LEARNERS = ("bp", "l2", "cbp", "adapted")
KERNEL_OPTIMIZERS = ("sgd",)


def kernel_unsupported(settings) -> list[str]:
    """What in ``settings`` (config.RunSettings) the kernel backend does not run; empty if it runs them."""
    problems = []
    if settings.network.norm != "none":
        problems.append(f"network.norm={settings.network.norm} (normalisation layers train on the reference backend)")
    learner = settings.learner
    if learner.name not in KERNEL_LEARNERS:
        problems.append(f"learner={learner.name} (the kernel runs {', '.join(KERNEL_LEARNERS)})")
    if settings.optimizer.name not in KERNEL_OPTIMIZERS:
        problems.append(f"optimizer={settings.optimizer.name} (the kernel runs sgd, with or without momentum)")
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
