"""OmegaConf resolvers the config tree uses.

``${unique:}`` is a short random id, the same for the whole process: it goes into the
run and sweep folder names, so two runs or sweeps started in the same second never share
(or overwrite) a folder.
"""

from __future__ import annotations

import secrets

from omegaconf import OmegaConf

_PROCESS_ID = secrets.token_hex(3)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("unique"):
        OmegaConf.register_new_resolver("unique", lambda: _PROCESS_ID, use_cache=True)
