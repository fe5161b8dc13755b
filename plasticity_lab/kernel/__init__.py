"""The compiled CPU kernel backend (``backend=kernel``; the default ``auto`` on CPU where it applies).

One member at a time through a whole chunk of steps in numba-compiled code (step.py), first
layers input-major and sparse, the reset learners' statistics fused into the passes
(learners/), control back in Python only at events. Which configs it runs: support.py.
"""

from .jit import refresh_cache
from .learners import KERNEL_LEARNER_CLASSES
from .population import KernelPopulation

refresh_cache()  # before anything compiled is loaded

__all__ = ["KERNEL_LEARNER_CLASSES", "KernelPopulation"]
