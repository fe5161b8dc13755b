"""What the probes cost: ``probe_overhead(...)`` for ``make bench`` (target: default probes <= 5%).

It trains a population (default K = 16, 784 -> 3 x 100 relu -> 10, batch 1, 10,000
examples per task, like the default protocol) for ``train_tasks`` tasks and times that,
then times each enabled probe once on the resulting network, and amortises the probe
costs over a run of ``num_tasks`` tasks with the preset's cadences:

    overhead = sum_p cost_p * (number of tasks at which p runs) / num_tasks / (training seconds per task)

Features (the forward pass over the probe examples) are shared by the ``rank`` and
``activity`` probes and counted once per task where either runs. Real MNIST is used when
it can be found without downloading (``PLASTICITY_LAB_DATA``, ``data_root``), else
random images of the same shape (the probe cost does not depend on the pixels).

    python -c "from plasticity_lab.probes.bench import probe_overhead; print(probe_overhead())"
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch

from ..data.permuted import PermutedImageStream
from ..engine import Population
from ..engine.optim import SGDSettings
from ..network import NetworkSpec
from .runner import ProbeRunner
from .settings import ProbeSettings, parse_probes

CONF = Path(__file__).resolve().parents[2] / "conf"


class _Rows:
    """A stand-in RunRecorder that keeps rows in memory."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.rows: list[tuple] = []

    def add(self, task, step, metric, value, layer=""):
        self.rows.append((task, step, metric, layer, value))


def load_preset(name: str) -> ProbeSettings:
    """The ProbeSettings of conf/probes/<name>.yaml, composed by Hydra (defaults lists resolved)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ..hydra_setup import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"probes={name}"])
    return parse_probes(OmegaConf.to_container(cfg.probes, resolve=True))


def _images(n: int, data_root):
    try:
        from ..data.idx import load_idx_dataset

        images, labels = load_idx_dataset("mnist", "test", data_root, download=False)
        if images.shape[0] >= n:
            return torch.from_numpy(images), torch.from_numpy(labels), "mnist"
    except Exception:  # no local copy: synthetic images cost the same
        pass
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (max(n, 10_000), 784), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (max(n, 10_000),), generator=g), "synthetic")


def _rate(probe, num_tasks: int, final: bool) -> float:
    runs = sum(1 for t in range(num_tasks) if probe.due(t)) + (1 if final and probe.enabled else 0)
    return runs / num_tasks


def probe_overhead(K: int = 16, examples_per_task: int = 10_000, probes: str | ProbeSettings = "default",
                   num_tasks: int = 500, train_tasks: int = 1, width: int = 100, depth: int = 3,
                   activation: str = "relu", batch_size: int = 1, device: str = "cpu",
                   num_threads: int | None = 1, data_root=None) -> dict:
    """Seconds of training per task, seconds per probe evaluation, and the amortised overhead fraction."""
    if num_threads:
        torch.set_num_threads(num_threads)
    settings = load_preset(probes) if isinstance(probes, str) else probes
    holdout = settings.forgetting.holdout if settings.forgetting.enabled else 0
    images, labels, source = _images(examples_per_task + holdout, data_root)
    seeds = list(range(K))
    stream = PermutedImageStream(images, labels, seeds, examples_per_task, "fixed", device)
    backend = Population(NetworkSpec.mlp(784, width, depth, 10, activation), seeds, SGDSettings(step_size=0.003),
                         0.0, device)
    steps = math.ceil(examples_per_task / batch_size)
    status = ["running"] * K

    start = time.perf_counter()
    for task in range(train_tasks):
        for x, y in stream.chunks(task, batch_size):
            backend.train(x, y, batch_size)
        backend.take_totals()
    if stream.device.type == "cuda":
        torch.cuda.synchronize(stream.device)
    train_seconds = (time.perf_counter() - start) / train_tasks

    with tempfile.TemporaryDirectory() as tmp:
        recorders = [_Rows(Path(tmp) / f"m{k}") for k in range(K)]
        heldout = (images[-holdout:], labels[-holdout:]) if holdout else None
        runner = ProbeRunner(settings, stream, backend, recorders, steps, heldout)
        task = train_tasks  # the next task, as in a run
        costs, rates = {}, {}
        t0 = time.perf_counter()
        runner._task_cache = {}
        if settings.rank.enabled or settings.activity.enabled:
            runner._features(task)
            costs["features"] = time.perf_counter() - t0
            rates["features"] = sum(1 for t in range(num_tasks) if settings.rank.due(t) or settings.activity.due(t)) \
                / num_tasks + (1 / num_tasks if settings.final else 0)
        for name, probe in settings.probes().items():
            if not probe.enabled:
                continue
            t0 = time.perf_counter()
            runner._guard(name, getattr(runner, f"_{name}"), task, status)
            costs[name] = time.perf_counter() - t0
            rates[name] = _rate(probe, num_tasks, settings.final and name != "timing")
        runner._task_cache = {}
        t0 = time.perf_counter()
        runner._run(0, status, final=False)  # everything due at task 0 (usually all cadences), features included
        first_task = time.perf_counter() - t0
    amortised = sum(costs[n] * rates[n] for n in costs)
    return {
        "K": K, "examples_per_task": examples_per_task, "batch_size": batch_size, "device": str(device),
        "network": f"784-{width}x{depth}-10 {activation}", "data": source, "num_tasks": num_tasks,
        "probes": probes if isinstance(probes, str) else "custom",
        "train_seconds_per_task": train_seconds,
        "probe_seconds": costs, "probe_runs_per_task": rates,
        "probe_seconds_at_task_0": first_task,
        "amortised_probe_seconds_per_task": amortised,
        "overhead_fraction": amortised / train_seconds,
    }


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(probe_overhead(probes=sys.argv[1] if len(sys.argv) > 1 else "default"), indent=2))
