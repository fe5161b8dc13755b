"""What the project adds to Hydra: the ``${unique:}`` resolver, a check of the config before
Hydra creates the run folder, and the one-line failures of ``train.py``.

``${unique:}`` is a short random id, the same for the whole process: it goes into the
run and sweep folder names, so two runs or sweeps started in the same second never share
(or overwrite) a folder.

A bad value, a refused folder or a bad launcher setting ends ``train.py`` with one line,
``error: <what, naming the key or file, and what to do>``, and exit status 2 (``fail``).
"""

from __future__ import annotations

import secrets
import sys
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

_PROCESS_ID = secrets.token_hex(3)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("unique"):
        OmegaConf.register_new_resolver("unique", lambda: _PROCESS_ID, use_cache=True)


def fail(message: str) -> NoReturn:
    """End the command with ``error: <message>`` on stderr (each line of it) and exit status 2."""
    print("\n".join(f"error: {line}" for line in message.splitlines()), file=sys.stderr, flush=True)
    raise SystemExit(2)


class ValidateBeforeStart(Callback):
    """``hydra.callbacks``: validate a single run's config before Hydra creates its folder, so a
    bad value leaves nothing behind (a sweep's jobs are all validated first by the sweeper), and
    an Optuna sweep's direction before it starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .config import ConfigError
        from .run import validate

        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            validate(task)
        except ConfigError as err:
            fail(str(err))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """An Optuna sweep whose ``hydra.sweeper.direction`` contradicts ``optimized_metric`` fails
        before the sweeper starts, whatever the launcher (objective.check_direction). A sweep's jobs
        are validated one by one later: a config that is valid only with its sweep's values is left to that."""
        from .config import ConfigError, parse_config
        from .objective import check_direction

        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            settings = parse_config(task)
        except ConfigError:
            return
        try:
            check_direction(settings, config.hydra.get("sweeper"))
        except ConfigError as err:
            fail(str(err))
