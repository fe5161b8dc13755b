"""Config nodes plasticity_lab registers with Hydra (imported by Hydra's plugin discovery, so
they exist whenever Hydra composes ``conf/``): the population launchers (``hydra/launcher``),
the sweeper (``hydra/sweeper``) and ``open_sections`` (train.yaml's defaults list)."""

from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeperConf
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
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


@dataclass
class PlasticityLabSweeperConf(BasicSweeperConf):
    """Hydra's basic sweeper that validates every job first, writes nothing on a dry run and
    prints one summary at the end (sweeper.py)."""

    _target_: str = "hydra_plugins.plasticity_lab_launcher.sweeper.PlasticityLabSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="plasticity_lab", node=PlasticityLabSweeperConf,
                             provider="plasticity_lab")

# The sections whose keys depend on a group's choice (learner, optimizer, dataset) stay open to
# new keys, so `-m method=cbp,cbp_layer_1 learner.util_type=contribution` composes: Hydra
# composes a sweep once with the default learner (bp) before expanding `method`, and a closed
# (struct) node would refuse util_type there. Unknown keys are still refused, by
# plasticity_lab.config.parse_config, naming the key and the options that have it.
OPEN_SECTIONS = ("dataset", "learner", "optimizer")  # in the defaults list's order (config.yaml key order)
ConfigStore.instance().store(
    name="open_sections", provider="plasticity_lab",
    node=OmegaConf.create({k: OmegaConf.create({}, flags={"struct": False}) for k in OPEN_SECTIONS}))
