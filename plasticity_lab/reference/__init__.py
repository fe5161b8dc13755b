"""The readable reference: one network, nn.Module + autograd + torch.optim, straight from SPEC.md.

It is the ground truth the population engine is tested against, and the backend for
networks the engine does not cover.
"""

from .learner import ReferenceLearner, build_mlp
from .population import ReferencePopulation

__all__ = ["ReferenceLearner", "ReferencePopulation", "build_mlp"]
