"""Shared fixtures: the repository root, the real MNIST folder, config composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from plasticity_lab.hydra_setup import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

register_resolvers()
# Subprocesses the tests start (train.py, launcher and submitit workers) import this checkout's
# plasticity_lab, not whichever copy the virtual environment has installed (e.g. another worktree).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
torch.set_num_threads(1)


def data_root() -> Path:
    """The folder holding mnist/ (PLASTICITY_LAB_DATA, else ../shared/data beside the repo)."""
    return Path(os.environ.get("PLASTICITY_LAB_DATA") or SHARED_DATA)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = data_root()
    if not (root / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the real MNIST files under {root}/mnist (../shared/data beside the repo)")
        pytest.skip(f"real MNIST not found under {root}/mnist; set PLASTICITY_LAB_DATA")
    return root


def compose_config(*overrides: str):
    """The composed training config for ``overrides``, as train.py would see it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))
