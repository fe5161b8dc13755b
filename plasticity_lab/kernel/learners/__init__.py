"""Reset learners of the kernel backend, one module per learner (SPEC 3.4, 3.5).

=================  ==========================  ==============================  ====================
learner (config)   class                       compiled per-step parts          engine class it is
=================  ==========================  ==============================  ====================
cbp                KernelContinualBackprop     cbp_decide, cbp_statistics      ContinualBackprop
adapted            KernelAdaptedRescaling      adapted_decide,                 AdaptedRescaling
                                               adapted_statistics
=================  ==========================  ==============================  ====================

Each kernel learner subclasses the engine's learner (same constructor, hyperparameters,
checkpointed state, probes' interface) and adds what the kernel needs: its per-unit state
in flat arrays (``units``), ``kernel_state(k)`` / ``kernel_flags(k, ...)`` (what the compiled
step receives for member k), and ``handle_event(pop, k, n_due)`` (the replacement / rescaling
in Python, with the member's generators). Shrink & Perturb and ReDo have no kernel form: such
runs train on the torch engine (kernel/support.py).
"""

from __future__ import annotations

from ...learners import declared
from .adapted import KernelAdaptedRescaling
from .cbp import KernelContinualBackprop

#: {learner name: kernel class}, from the learners' declarations (plasticity_lab/learners.py)
KERNEL_LEARNER_CLASSES = {name: d.implementation("kernel") for name, d in declared().items() if d.kernel}

__all__ = ["KERNEL_LEARNER_CLASSES", "KernelAdaptedRescaling", "KernelContinualBackprop"]
