"""Shared fixtures: the repository root, the real data folders, config composition, spies.

Data rule: a test that reads real data files uses one of the DATA_FIXTURES and carries the
``data`` marker (enforced below: without it the test fails). Missing data skips such a test
with the reason, except under ``CI=true``, where it fails (CI must have every file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from plasticity_lab import seeding
from plasticity_lab.engine.optim import OPTIMIZERS
from plasticity_lab.hydra_setup import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

register_resolvers()
# Subprocesses the tests start (train.py, launcher and submitit workers) import this checkout's
# plasticity_lab, not whichever copy the virtual environment has installed (e.g. another worktree).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
torch.set_num_threads(1)


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
DATA_FIXTURES = ("mnist_root", "shared_mnist", "debian_fashion")  # fixtures that hand a test real data files


def data_root() -> Path:
    """The folder holding mnist/ (PLASTICITY_LAB_DATA, else ../shared/data beside the repo)."""
    return Path(os.environ.get("PLASTICITY_LAB_DATA") or SHARED_DATA)


def missing_data(reason: str):
    """A test's data files are absent: fail under CI=true, skip (with the reason) elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def pytest_runtest_setup(item):
    used = [name for name in DATA_FIXTURES if name in item.fixturenames]
    if used and item.get_closest_marker("data") is None:
        pytest.fail(f"{item.nodeid} reads real data ({', '.join(used)}) but is not marked @pytest.mark.data")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding the real MNIST test split (mnist/t10k-*)."""
    root = data_root()
    if not (root / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        missing_data(f"real MNIST not found under {root}/mnist; set PLASTICITY_LAB_DATA (../shared/data beside the repo)")
    return root


@pytest.fixture(scope="session")
def debian_fashion() -> Path:
    """Debian's Fashion-MNIST folder, all four IDX files (train and test splits)."""
    if not all((DEBIAN_FASHION / name).is_file() for name in IDX_FILES):
        missing_data(f"Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist) not found in {DEBIAN_FASHION}")
    return DEBIAN_FASHION


@pytest.fixture
def coin_draws(monkeypatch):
    """The values of every coin flip (``seeding.UniformStream.next``, CBP's ``accumulate: false``) made
    while the test runs, by any implementation: proof that the coin branch ran."""
    calls = []
    original, original_skip = seeding.UniformStream.next, seeding.UniformStream.skip

    def counted(self):
        value = original(self)
        calls.append(value)
        return value

    def counted_skip(self, n):  # the kernel reads coins ahead (peek) and consumes the used ones (skip)
        calls.extend(self.peek(n).tolist())
        original_skip(self, n)

    monkeypatch.setattr(seeding.UniformStream, "next", counted)
    monkeypatch.setattr(seeding.UniformStream, "skip", counted_skip)
    return calls


@pytest.fixture(scope="session")
def slurm():
    """A SLURM cluster that answers (scripts/slurm_cluster.sh start); skip outside CI, fail in CI."""
    ok = shutil.which("sinfo") and subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                                  timeout=30).stdout.strip() in ("idle", "mixed", "allocated")
    if not ok:
        missing_data("no SLURM cluster answers (run: sudo scripts/slurm_cluster.sh start; .ci/run starts one)")


def compose_config(*overrides: str):
    """The composed training config for ``overrides``, as train.py would see it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def optional_package(module: str, extra: str):
    """Import an optional extra's package (``pip install '.[extra]'``; ``make install`` installs every
    extra): skip without it outside CI, fail under CI=true."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        missing_data(f"{module} is not installed (pip install '.[{extra}]'; make install installs it)")


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2):
    """``predicate()``'s first true value, asked every ``poll`` seconds; AssertionError naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def optimizer(name: str = "sgd", **values):
    """Optimiser settings (engine/optim.py OPTIMIZERS) for a backend's constructor: one settings object,
    or one per member where a value is a list (one entry per member; a tuple is one value, e.g. betas)."""
    cls = OPTIMIZERS[name]
    K = max((len(v) for v in values.values() if isinstance(v, list)), default=None)
    if K is None:
        return cls(**values)
    return [cls(**{key: (v[k] if isinstance(v, list) else v) for key, v in values.items()}) for k in range(K)]
