"""Train one config: ``python train.py learner=l2 activation=tanh`` (Hydra CLI; -m sweeps)."""

import hydra
from omegaconf import DictConfig

from plasticity_lab.hydra_setup import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from plasticity_lab.run import run

    return run(cfg)


if __name__ == "__main__":
    main()
