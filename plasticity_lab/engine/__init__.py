"""The vectorised population engine: K networks trained in lockstep in one process."""

from .population import Population

__all__ = ["Population"]
