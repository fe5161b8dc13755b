"""Per-member state of engine components, for checkpoints that survive re-packing.

Every stateful engine component (the population, its optimiser, its learner) lists the
attributes that hold per-member state in ``_member_state``. Each such attribute is a
tensor with the members on its leading axis, a list of such tensors (one per layer), or a
list with one entry per member (a torch.Generator, a Python number). ``member_state(obj, k)``
cuts out member k; ``load_member_states(obj, states)`` puts K cut-outs back in place, so
a member's checkpoint can be resumed in any population of the same settings.
"""

from __future__ import annotations

import numpy as np
import torch


def _has_state(v) -> bool:
    """Generators and host-side random streams: saved through get_state / set_state."""
    return hasattr(v, "get_state") and hasattr(v, "set_state")


def _is_member_list(value, K: int) -> bool:
    """A flat list with one plain entry (number, generator, ...) per member."""
    return (isinstance(value, (list, tuple)) and len(value) == K
            and not any(isinstance(v, (torch.Tensor, list, tuple, dict)) for v in value))


def _cut(value, k: int, K: int):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[k].detach().to("cpu", copy=True)
    if isinstance(value, np.ndarray):
        return value[k].copy()
    if _is_member_list(value, K):
        v = value[k]
        return v.get_state() if _has_state(v) else v
    if isinstance(value, (list, tuple)):
        return [_cut(v, k, K) for v in value]
    if isinstance(value, dict):
        return {key: _cut(v, k, K) for key, v in value.items()}
    raise TypeError(f"cannot cut per-member state from {type(value).__name__}")


def _paste(current, cuts: list):
    """Write the K cut-outs ``cuts`` into ``current`` in place where possible; returns the new value."""
    K = len(cuts)
    if all(c is None for c in cuts):
        return None
    if current is None:  # not built yet (e.g. a probe's first reading): rebuild from the cut-outs
        if all(isinstance(c, torch.Tensor) or c is None for c in cuts):  # None: never set = zeros
            like = next(c for c in cuts if c is not None)
            return torch.stack([torch.zeros_like(like) if c is None else c for c in cuts])
        if all(isinstance(c, dict) for c in cuts):
            return {key: _paste(None, [c[key] for c in cuts]) for key in cuts[0]}
    if isinstance(current, torch.Tensor):
        current.copy_(torch.stack(cuts).to(current.device, current.dtype))
        return current
    if isinstance(current, np.ndarray):
        current[...] = np.stack(cuts)
        return current
    if _is_member_list(current, K):
        if all(_has_state(v) for v in current):
            for g, state in zip(current, cuts):
                g.set_state(state)
            return current
        if isinstance(current, list):  # in place: other components may hold the same list
            current[:] = cuts
            return current
        return type(current)(cuts)
    if isinstance(current, list):
        current[:] = [_paste(c, [cut[i] for cut in cuts]) for i, c in enumerate(current)]
        return current
    if isinstance(current, tuple):
        return tuple(_paste(c, [cut[i] for cut in cuts]) for i, c in enumerate(current))
    if isinstance(current, dict):
        return {key: _paste(v, [cut[key] for cut in cuts]) for key, v in current.items()}
    raise TypeError(f"cannot restore per-member state into {type(current).__name__}")


def member_state(obj, k: int, K: int) -> dict:
    """Member k's share of every attribute named in ``obj._member_state`` (absent ones: None)."""
    return {name: _cut(getattr(obj, name, None), k, K) for name in obj._member_state}


def load_member_states(obj, states: list[dict]) -> None:
    """Restore ``obj``'s per-member attributes from one ``member_state`` per member, then let it
    rebuild what it derives from them (``obj.after_load()``, if it has one)."""
    for name in obj._member_state:
        setattr(obj, name, _paste(getattr(obj, name, None), [s[name] for s in states]))
    if hasattr(obj, "after_load"):
        obj.after_load()
