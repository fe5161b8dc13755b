"""Config schemas of the population launchers, registered in Hydra's ``hydra/launcher`` group."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class PopulationLauncherConf:
    """Pack a sweep into populations and run each as one local process (one per core)."""

    _target_: str = "hydra_plugins.plasticity_lab_launcher.launcher.PopulationLauncher"
    max_members: int = 16  # members per population (DESIGN: K ~ 16 per process on CPU)
    n_jobs: int = 0  # processes at once; 0 = the number of CPU cores
    dry_run: bool = False  # print the packing plan and train nothing


@dataclass
class PopulationSlurmLauncherConf(SlurmQueueConf):
    """Pack a sweep into populations and submit each as one SLURM job through submitit."""

    _target_: str = "hydra_plugins.plasticity_lab_launcher.launcher.PopulationSlurmLauncher"
    max_members: int = 16
    dry_run: bool = False
    cpus_per_task: int = 1


ConfigStore.instance().store(group="hydra/launcher", name="population", node=PopulationLauncherConf,
                             provider="plasticity_lab")
ConfigStore.instance().store(group="hydra/launcher", name="population_slurm", node=PopulationSlurmLauncherConf,
                             provider="plasticity_lab")
