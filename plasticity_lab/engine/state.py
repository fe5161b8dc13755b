"""Per-member state of engine components, for checkpoints that survive re-packing.

Every stateful component of the engine and the kernel (the population, its optimiser, its
learner) declares, next to where it creates them, the attributes that hold per-member state,
in ``STATE`` {attribute: kind}, and the tensors and arrays it rebuilds from its settings (or
overwrites every step) in ``REBUILT``; both are collected over the class hierarchy. Kinds:

- ``MEMBERS``: the value is per member: a tensor or array with the members on its leading axis,
  or a list with one entry per member (a torch.Generator or a random stream, saved through
  ``get_state`` / ``set_state``; a number);
- ``PARTS``: a list, tuple or dict (nested ones too: e.g. one entry per layer) whose leaves are
  ``MEMBERS`` tensors or arrays, or None (not created yet: restored as zeros if another member
  has one).

``member_state(obj, k, K)`` cuts out member k; ``load_member_states(obj, states)`` puts K
cut-outs back in place, so a member's checkpoint can be resumed in any population of the same
settings. ``undeclared(obj)`` names the attributes holding tensors, arrays or generators that
are in neither list: tests/test_declarations.py requires it to be empty for every component, so
no state can be left out of a checkpoint silently.
"""

from __future__ import annotations

import numpy as np
import torch

MEMBERS, PARTS = "members", "parts"


def declared(obj, name: str):
    """``STATE`` (a dict, merged) or ``REBUILT`` (a tuple, joined) over the class hierarchy of ``obj``."""
    merged: dict = {}
    for cls in reversed(type(obj).__mro__):
        merged.update(dict.fromkeys(vars(cls).get(name, ())) if name == "REBUILT" else vars(cls).get(name, {}))
    return merged if name == "STATE" else tuple(merged)


def _has_state(v) -> bool:
    """Generators and host-side random streams: saved through get_state / set_state."""
    return hasattr(v, "get_state") and hasattr(v, "set_state")


def _cut_member(value, k: int):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[k].detach().to("cpu", copy=True)
    if isinstance(value, np.ndarray):
        return value[k].copy()
    if isinstance(value, (list, tuple)):
        v = value[k]
        return v.get_state() if _has_state(v) else v
    raise TypeError(f"cannot cut per-member state from {type(value).__name__}")


def _cut_parts(value, k: int):
    if isinstance(value, (list, tuple)):
        return [_cut_parts(v, k) for v in value]
    if isinstance(value, dict):
        return {key: _cut_parts(v, k) for key, v in value.items()}
    return _cut_member(value, k)


def _paste_member(current, cuts: list):
    """Write the K cut-outs ``cuts`` into the per-member value ``current`` in place where possible."""
    if all(c is None for c in cuts):
        return None
    if current is None:  # not created yet (e.g. Adam's reset steps before a first reset): zeros elsewhere
        like = next(c for c in cuts if c is not None)
        return torch.stack([torch.zeros_like(like) if c is None else c for c in cuts])
    if isinstance(current, torch.Tensor):  # (a cut-out may be a plain number: a 0-d member value)
        current.copy_(torch.stack([torch.as_tensor(c, dtype=current.dtype) for c in cuts]).to(current.device))
        return current
    if isinstance(current, np.ndarray):
        current[...] = np.stack(cuts)
        return current
    if isinstance(current, (list, tuple)):
        if all(_has_state(v) for v in current):
            for g, state in zip(current, cuts):
                g.set_state(state)
            return current
        if isinstance(current, list):  # in place: other components may hold the same list
            current[:] = cuts
            return current
        return type(current)(cuts)
    raise TypeError(f"cannot restore per-member state into {type(current).__name__}")


def _paste_parts(current, cuts: list):
    if isinstance(current, list):
        current[:] = [_paste_parts(c, [cut[i] for cut in cuts]) for i, c in enumerate(current)]
        return current
    if isinstance(current, tuple):
        return tuple(_paste_parts(c, [cut[i] for cut in cuts]) for i, c in enumerate(current))
    if isinstance(current, dict):
        return {key: _paste_parts(v, [cut[key] for cut in cuts]) for key, v in current.items()}
    return _paste_member(current, cuts)


_CUT = {MEMBERS: _cut_member, PARTS: _cut_parts}
_PASTE = {MEMBERS: _paste_member, PARTS: _paste_parts}


def member_state(obj, k: int, K: int) -> dict:
    """Member k's share of every attribute ``obj`` declares in ``STATE`` (absent ones: None)."""
    return {name: _CUT[kind](getattr(obj, name, None), k) for name, kind in declared(obj, "STATE").items()}


def load_member_states(obj, states: list[dict]) -> None:
    """Restore ``obj``'s declared per-member attributes from one ``member_state`` per member, then
    let it rebuild what it derives from them (``obj.after_load()``, if it has one)."""
    for name, kind in declared(obj, "STATE").items():
        setattr(obj, name, _PASTE[kind](getattr(obj, name, None), [s[name] for s in states]))
    if hasattr(obj, "after_load"):
        obj.after_load()


def _holds_state(value) -> bool:
    """A tensor, an array or a generator, possibly inside lists, tuples or dicts."""
    if isinstance(value, (torch.Tensor, np.ndarray)) or _has_state(value):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_state(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_state(v) for v in value.values())
    return False


def undeclared(obj) -> list[str]:
    """Attributes of ``obj`` that hold tensors, arrays or generators but are neither in its ``STATE``
    (checkpointed) nor in its ``REBUILT`` (rebuilt from the settings, or scratch)."""
    known = set(declared(obj, "STATE")) | set(declared(obj, "REBUILT"))
    return sorted(name for name, value in vars(obj).items() if name not in known and _holds_state(value))
