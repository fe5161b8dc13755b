"""plasticity_lab's Hydra launchers: ``hydra/launcher=population`` and ``population_slurm``."""
