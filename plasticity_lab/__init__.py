"""plasticity_lab: loss of plasticity in continual learning, on a vectorised population engine.

See README.md for the commands and ../shared/SPEC.md (mirrored in the docstrings) for what
every algorithm computes.
"""

__version__ = "0.1.0"
