"""The kinds of task a run trains on: what classification and regression each bring to the run loop.

A task kind names its loss (the backends' ``loss``: cross-entropy or squared error), builds the
members' data stream (``stream``), trains one
task of the stream (``train``: returns the task's per-member loss sums and correct counts), turns
a task's totals into its per-task metrics (``rows``; the first one is the value the run summarises
and a member's divergence is judged by ``loss``), and names the summary run.json gets
(``summary_key``: the mean of that first metric over the tasks, ``last_key``: its latest value).

- ``Classification`` (online permuted images, SPEC 1): a task is ``images_per_task`` examples;
  metrics ``accuracy`` (online, test-then-train) and ``loss``; summary ``mean_accuracy``.
- ``Regression`` (bit-flipping / slowly-changing regression, SPEC 2): a task is a bin of
  ``bin_size`` steps; metric ``error`` (the bin's mean squared online error), and, whenever a
  period of ``flip_after`` steps ends, ``period_error`` (row task = the period's index, step = its
  last step); summary ``mean_error``. A period's running error sum is per-member state that
  checkpoints carry (``STATE``).
"""

from __future__ import annotations

import torch

from . import faults
from .data.idx import load_idx_dataset
from .data.permuted import PermutedImageStream, shuffled_split
from .data.regression import RegressionStream
from .engine.state import MEMBERS


class Classification:
    """Online classification of permuted images (SPEC 1)."""

    loss = "cross_entropy"
    unit = "tasks"  # what the log calls a task
    metrics = ("accuracy", "loss")  # the keys of ``rows``: per-task metrics (objective.py's statistics)
    summary_key, last_key = "mean_accuracy", "last_accuracy"
    STATE: dict = {}

    @staticmethod
    def progress(mean: float) -> dict:
        """The progress bar's postfix for the live members' mean summarised metric."""
        return {"acc": f"{mean:.3f}"}

    def __init__(self, K: int):
        self.K = K

    @staticmethod
    def stream(settings: list, device, dtype):
        """(the members' permuted-image stream, the split's images, labels) (``settings``: RunSettings)."""
        d = settings[0].dataset
        images, labels = load_idx_dataset(d.source, d.split, d.root, d.download)
        images, labels = torch.from_numpy(images), torch.from_numpy(labels)
        if d.shuffle_seed is not None:  # [P]: the split shuffled once, the same for every run (data/permuted.py)
            images, labels = shuffled_split(images, labels, d.shuffle_seed)
        return (PermutedImageStream(images, labels, [s.seed for s in settings], d.images_per_task, d.subset, device,
                                    dtype), images, labels)

    def train(self, task: int, stream, backend, batch_size: int, add_rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Train every member on task ``task``; its (loss sums, correct counts) per member."""
        for x, y in stream.chunks(task, batch_size):
            backend.train(x, y, batch_size)
            faults.point("chunk")
        return backend.take_totals()

    @staticmethod
    def rows(loss_sum: float, correct: int, n: int) -> dict[str, float]:
        """One member's per-task metrics from its totals over the task's ``n`` examples."""
        return {"accuracy": correct / n, "loss": loss_sum / n}


class Regression:
    """Online regression on bit-flipping / slowly-changing targets (SPEC 2)."""

    loss = "squared_error"
    unit = "bins"
    metrics = ("error",)
    summary_key, last_key = "mean_error", "last_error"
    STATE = {"period_sum": MEMBERS}  # the squared errors of the period still open (engine/state.py)

    @staticmethod
    def progress(mean: float) -> dict:
        return {"error": f"{mean:.4g}"}

    def __init__(self, K: int):
        self.K = K
        self.period_sum = torch.zeros(K, dtype=torch.float64)

    @staticmethod
    def stream(settings: list, device, dtype):
        """(the members' regression stream, None, None): no image split."""
        d = settings[0].dataset
        return (RegressionStream([s.seed for s in settings], d.bin_size, d.flip_after, d.target_units, d.flip_one,
                                 d.beta, device, dtype), None, None)

    def train(self, task: int, stream, backend, batch_size: int, add_rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Train every member on bin ``task``, cutting its chunks at period boundaries, and
        ``add_rows(period, step, "period_error", per-member values)`` whenever a period ends;
        returns the bin's (squared error sums, zeros) per member."""
        n, P = stream.examples_per_task, stream.flip_after
        done = task * n  # steps before this bin (batch 1: steps = examples)
        bin_sum = torch.zeros(self.K, dtype=torch.float64)
        for x, y in stream.chunks(task, batch_size):
            start = 0
            while start < x.shape[1]:  # cut the chunk at period boundaries
                end = min(x.shape[1], start + P - (done % P))
                backend.train(x[:, start:end], y[:, start:end], batch_size)
                faults.point("chunk")
                loss, _ = backend.take_totals()
                bin_sum += loss
                self.period_sum += loss
                done += end - start
                start = end
                if done % P == 0:
                    add_rows(done // P - 1, done // batch_size, "period_error", (self.period_sum / P).tolist())
                    self.period_sum.zero_()
        return bin_sum, torch.zeros(self.K, dtype=torch.long)

    @staticmethod
    def rows(loss_sum: float, correct: int, n: int) -> dict[str, float]:
        """One member's per-bin metric: the mean squared online error."""
        return {"error": loss_sum / n}


#: the task kind of a dataset, by ``DatasetSettings.is_regression``
KINDS = {False: Classification, True: Regression}


def task_kind(dataset):
    """The task kind of ``dataset`` (config.DatasetSettings)."""
    return KINDS[dataset.is_regression]
