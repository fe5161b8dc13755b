"""``hydra/sweeper=plasticity_lab`` (train.yaml's default): Hydra's basic sweeper, same override
grammar, ``params`` and ``max_batch_size``, with what a sweep of plasticity_lab runs needs:

- every job of the sweep is composed and validated (``plasticity_lab.config.parse_config``)
  before anything is written or launched, whatever the launcher: a bad value in any job fails
  with a ConfigError naming the job and the key;
- a launcher dry run (``hydra.launcher.dry_run=true``) writes nothing, not even the sweep
  folder and its ``multirun.yaml``;
- at the end (also when jobs failed) one summary of the sweep: runs by status, the best
  condition and the command that writes its report (``plasticity_lab.summary.sweep_lines``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import configure_log, filter_overrides
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class JobConfigError(CompactHydraException, ValueError):
    """A sweep job's config is unusable (a ConfigError, named after the job); Hydra prints the
    message alone, without a traceback."""


def compose_job(config_loader, master_config: DictConfig, overrides: Sequence[str], num: int):
    """(the job's composed config with its ``hydra`` node, its validated settings), as the
    job's own process will compose it; JobConfigError naming job ``num``, its overrides and the key."""
    from plasticity_lab.config import ConfigError, parse_config
    from plasticity_lab.objective import check_direction

    sweep_config = config_loader.load_sweep_config(master_config, list(overrides))
    task_cfg = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
    try:
        settings = parse_config(task_cfg)
        check_direction(settings, sweep_config.hydra.get("sweeper"))  # an Optuna sweep's direction
        return sweep_config, settings
    except ConfigError as err:
        raise JobConfigError(f"job #{num} ({' '.join(filter_overrides(list(overrides)))}): {err}") from None


class PlasticityLabSweeper(BasicSweeper):
    """Hydra's basic sweeper that validates every job first, writes nothing on a dry run and
    ends with a summary (module docstring)."""

    def sweep(self, arguments: list[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        batches = self.split_arguments(parser.parse_overrides(self._parse_config() + list(arguments)),
                                       self.max_batch_size)
        jobs = [overrides for batch in batches for overrides in batch]
        for num, overrides in enumerate(jobs):  # nothing is written before every job has passed
            compose_job(self.hydra_context.config_loader, self.config, overrides, num)
        if getattr(self.launcher, "dry_run", False):
            start = 0
            for batch in batches:
                self.launcher.launch(batch, initial_job_idx=start)
                start += len(batch)
            return []
        from plasticity_lab.recording import atomic_write_text

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        atomic_write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        returns, start = [], 0
        try:
            for batch in batches:
                results = self.launcher.launch(batch, initial_job_idx=start)
                returns.append(results)
                start += len(batch)
                for r in results:  # a failed job raises here, as with Hydra's basic sweeper
                    _ = r.return_value
        finally:
            self._summarise(sweep_dir)
        return returns

    def _summarise(self, sweep_dir: Path) -> None:
        from plasticity_lab.summary import sweep_lines

        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # not the last job's log file
        try:
            lines = sweep_lines(sweep_dir)
        except Exception as err:  # noqa: BLE001 - a summary must not hide the sweep's own outcome
            lines = [f"sweep finished; no summary ({type(err).__name__}: {err}); "
                     f"python -m multirun_analysis report {sweep_dir}"]
        for line in lines:
            log.info(line)
