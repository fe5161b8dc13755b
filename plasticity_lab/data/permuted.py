"""Online permuted-image tasks for a population (SPEC 1).

Task t of member k: a uniformly random pixel permutation pi_t (applied to the ORIGINAL
images, never compounded) and a fresh random visiting order of the task's examples, both
drawn from the member's data stream for task t (``seeding.generator(seed, DATA, t)``).
Which images a task uses (``subset``):

- ``fixed``:  the first ``images_per_task`` images of the split, the same set every task [P];
- ``fresh``:  a fresh random ``images_per_task`` of the split every task [J];
- ``all``:    every image of the split every task [D] (``images_per_task`` is ignored).

"The split" is in file order, or, with ``dataset.shuffle_seed`` set, in the order of ONE
shuffle drawn from that seed (``shuffled_split``) before anything else, the same for every run
and member whatever their seeds: [P] trained every run on the first 10,000 images of a once
shuffled copy of the 60,000 training images (``subset: fixed``, ``shuffle_seed: 0``; SPEC 5).
The forgetting probe's held-out images (the last of the split) come from the same order.

Inputs are pixel / 255 in [0, 1], no normalisation. Examples are delivered in chunks of
shape (K, n, 784) so the engine's per-step slices are views, and only a chunk is
materialised at a time (memory O(K * chunk), not O(K * N)).
"""

from __future__ import annotations

import torch

from ..seeding import DATA, SHUFFLE, generator

SUBSETS = ("fixed", "fresh", "all")
SPLIT_SIZES = {"train": 60_000, "test": 10_000}  # images per split, MNIST and Fashion-MNIST alike


def shuffled_split(images: torch.Tensor, labels: torch.Tensor, shuffle_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split reordered by one uniformly random permutation drawn from ``shuffle_seed``
    (``seeding.generator(shuffle_seed, SHUFFLE)``): [P]'s once-shuffled copy."""
    order = torch.randperm(images.shape[0], generator=generator(shuffle_seed, SHUFFLE))
    return images[order], labels[order]


class PermutedImageStream:
    """The task sequence of K members, each from its own seed."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, seeds: list[int],
                 images_per_task: int, subset: str = "fixed", device="cpu",
                 dtype=torch.float32, chunk_examples: int = 1000):
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        n_pool = images.shape[0]
        if subset == "all":
            images_per_task = n_pool
        if not 1 <= images_per_task <= n_pool:
            raise ValueError(f"images_per_task={images_per_task} but the split has {n_pool} images")
        self.pool = images_per_task if subset == "fixed" else n_pool
        self.images = (images[: self.pool].to(device=device, dtype=dtype) / 255.0).contiguous()
        self.labels = labels[: self.pool].to(device=device, dtype=torch.long)
        self.seeds = list(seeds)
        self.examples_per_task = images_per_task
        self.num_features = images.shape[1]
        self.num_classes = 10
        self.device = torch.device(device)
        self.chunk_examples = chunk_examples

    def task_indices(self, seed: int, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(permutation of the pixels, indices of the task's examples in visiting order)."""
        g = generator(seed, DATA, task)
        perm = torch.randperm(self.num_features, generator=g)
        order = torch.randperm(self.pool, generator=g)[: self.examples_per_task]
        return perm, order

    def task_tensors(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (K, 784) permutations and (K, N) example orders, on the device."""
        pairs = [self.task_indices(s, task) for s in self.seeds]
        perms = torch.stack([p for p, _ in pairs]).to(self.device)
        orders = torch.stack([o for _, o in pairs]).to(self.device)
        return perms, orders

    def gather(self, perms: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (K, n, 784) and labels (K, n) of examples ``idx`` (K, n) under ``perms``."""
        rows = self.images[idx]  # (K, n, 784)
        x = torch.gather(rows, 2, perms.unsqueeze(1).expand_as(rows))
        return x, self.labels[idx]

    def chunks(self, task: int, batch_size: int = 1):
        """Yield (x, y) chunks covering the task once, in order; chunk length is a multiple of B."""
        perms, orders = self.task_tensors(task)
        step = max(batch_size, self.chunk_examples // batch_size * batch_size)
        for start in range(0, self.examples_per_task, step):
            yield self.gather(perms, orders[:, start : start + step])
