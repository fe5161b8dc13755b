"""The online permuted-image stream of SPEC 1."""

import pytest
import torch

from plasticity_lab.data.permuted import PermutedImageStream


def _stream(seeds, n_images=50, per_task=50, subset="fixed", chunk=16):
    images = torch.arange(n_images * 784, dtype=torch.float32).reshape(n_images, 784) % 256
    labels = torch.arange(n_images) % 10
    return PermutedImageStream(images.to(torch.uint8), labels, seeds, per_task, subset, chunk_examples=chunk)


def test_each_task_visits_every_example_once_under_one_permutation():
    s = _stream([0, 1])
    xs, ys = zip(*s.chunks(task=3))
    x, y = torch.cat(xs, 1), torch.cat(ys, 1)
    assert x.shape == (2, 50, 784) and y.shape == (2, 50)
    for k, seed in enumerate([0, 1]):
        perm, order = s.task_indices(seed, 3)
        assert sorted(order.tolist()) == list(range(50))
        expected = s.images[order][:, perm]  # permutation of the ORIGINAL images
        assert torch.equal(x[k], expected)
        assert torch.equal(y[k], s.labels[order])
    assert not torch.equal(x[0], x[1])  # members have their own streams


def test_same_seed_same_tasks_different_tasks_differ():
    a, b = _stream([7]), _stream([7, 8])
    for t in range(3):
        pa, oa = a.task_indices(7, t)
        pb, ob = b.task_indices(7, t)
        assert torch.equal(pa, pb) and torch.equal(oa, ob)
    assert not torch.equal(a.task_indices(7, 0)[0], a.task_indices(7, 1)[0])


def test_permutations_are_not_compounded():
    s = _stream([0])
    x1 = torch.cat([c[0] for c in s.chunks(1)], 1)[0]
    perm1, order1 = s.task_indices(0, 1)
    assert torch.equal(x1, s.images[order1][:, perm1])
    perm0, _ = s.task_indices(0, 0)
    assert not torch.equal(x1, s.images[order1][:, perm0][:, perm1])


def test_inputs_are_pixels_over_255():
    s = _stream([0])
    x = next(iter(s.chunks(0)))[0]
    assert x.min() >= 0 and x.max() <= 1 and x.max() == 255 / 255


def test_fresh_subset_draws_new_images_each_task_and_all_uses_every_image():
    s = _stream([0], n_images=200, per_task=20, subset="fresh")
    o0, o1 = s.task_indices(0, 0)[1], s.task_indices(0, 1)[1]
    assert len(o0) == 20 and len(set(o0.tolist())) == 20 and set(o0.tolist()) != set(o1.tolist())
    assert max(o0.tolist() + o1.tolist()) >= 20  # drawn from the whole split, not the first 20
    s = _stream([0], n_images=200, per_task=20, subset="all")
    assert s.examples_per_task == 200 and sorted(s.task_indices(0, 0)[1].tolist()) == list(range(200))
    fixed = _stream([0], n_images=200, per_task=20, subset="fixed")
    assert max(fixed.task_indices(0, 5)[1].tolist()) < 20


def test_chunks_are_whole_batches():
    s = _stream([0], chunk=16)
    sizes = [c[0].shape[1] for c in s.chunks(0, batch_size=5)]
    assert sum(sizes) == 50 and all(n % 5 == 0 for n in sizes)


def test_bad_subset_and_size():
    with pytest.raises(ValueError, match="subset"):
        _stream([0], subset="nope")
    with pytest.raises(ValueError, match="images_per_task"):
        _stream([0], n_images=10, per_task=20)
