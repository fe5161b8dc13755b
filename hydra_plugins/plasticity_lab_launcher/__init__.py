"""plasticity_lab's Hydra plugins: the launchers ``hydra/launcher=population`` and
``population_slurm``, and the sweeper ``hydra/sweeper=plasticity_lab`` (train.yaml's default)."""
