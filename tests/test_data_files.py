"""Tests for plasticity_lab.data.idx: locating, verifying, downloading and decoding IDX files.

Uses the real MNIST test split in ``../shared/data/mnist`` (beside the repository) and Debian's
Fashion-MNIST in ``/usr/share/datasets/fashion-mnist`` (fixture ``debian_fashion``, conftest.py). Missing
data skips the tests that need it, except under ``CI=true``, where it is a failure. No test touches the network (downloads use file://
mirrors) or the real user cache (XDG_CACHE_HOME points into tmp_path).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA, missing_data
from plasticity_lab.data import idx
from plasticity_lab.data.idx import DataError, load_idx_dataset

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Class counts of the official MNIST test split.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No data folder from the environment, and a throw-away per-user cache."""
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "plasticity_lab"


@pytest.fixture
def shared_mnist() -> Path:
    folder = SHARED_DATA / "mnist"
    if not all((folder / name).is_file() for name in TEST_FILES):
        missing_data(f"shared MNIST test split not found in {folder}")
    return folder


@pytest.fixture
def mnist_copy(tmp_path, shared_mnist) -> Path:
    """A private, writable copy of the MNIST test files."""
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in TEST_FILES:
        shutil.copyfile(shared_mnist / name, folder / name)
    return folder


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _rewrite(path: Path, edit) -> None:
    """Replace path's decompressed content by edit(content), recompressed."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    path.write_bytes(gzip.compress(bytes(edit(raw)), compresslevel=1, mtime=0))


def _check_mnist_test(images, labels):
    assert images.shape == (10000, 784) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist() == MNIST_TEST_COUNTS
    assert images.min() == 0 and images.max() == 255
    assert labels[0] == 7  # the first test digit is a 7
    assert images.flags.writeable and labels.flags.writeable


# --- real data ---------------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.parametrize("sub", ["", "mnist"], ids=["root-parent", "root-itself"])
def test_mnist_test_split_via_root(shared_mnist, sub):
    root = shared_mnist.parent / sub if sub else shared_mnist.parent
    _check_mnist_test(*load_idx_dataset("mnist", "test", root=root, download=False))


@pytest.mark.data
def test_mnist_test_split_via_env_var(shared_mnist, monkeypatch):
    monkeypatch.setenv(idx.ENV_VAR, str(shared_mnist.parent))
    images, labels = load_idx_dataset("mnist", "test", download=False)
    _check_mnist_test(images, labels)
    ref_images, ref_labels = load_idx_dataset("mnist", "test", root=shared_mnist, download=False)
    np.testing.assert_array_equal(images, ref_images)
    np.testing.assert_array_equal(labels, ref_labels)
    _check_mnist_test(*load_idx_dataset("mnist", "test", root="", download=False))  # "" = not given


@pytest.mark.data
def test_images_are_row_major_28x28(shared_mnist):
    """Image i, pixel (row r, col c) sits at byte 16 + 784*i + 28*r + c of the IDX file."""
    raw = gzip.decompress((shared_mnist / TEST_FILES[0]).read_bytes())
    images, _ = load_idx_dataset("mnist", "test", root=shared_mnist, download=False)
    for i in (0, 1, 9999):
        expected = [[raw[16 + 784 * i + 28 * r + c] for c in range(28)] for r in range(28)]
        assert sum(map(sum, expected)) > 0
        assert images[i].reshape(28, 28).tolist() == expected


@pytest.mark.data
def test_loading_test_split_is_fast(shared_mnist):
    start = time.perf_counter()
    load_idx_dataset("mnist", "test", root=shared_mnist, download=False)
    assert time.perf_counter() - start < 1.0


@pytest.mark.data
def test_fashion_train_from_debian_folder(debian_fashion):
    images, labels = load_idx_dataset("fashion_mnist", "train", download=False)  # system location
    assert images.shape == (60000, 784) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [6000] * 10
    # Debian recompressed the files: they pass through the raw-content checksum, not the .gz one.
    assert _md5(debian_fashion / "train-images-idx3-ubyte.gz") != idx.DATASETS["fashion_mnist"].md5[
        "train-images-idx3-ubyte.gz"
    ].gz


@pytest.mark.data
def test_fashion_accepts_underscore_subdir(tmp_path, debian_fashion):
    (tmp_path / "root" / "fashion_mnist").mkdir(parents=True)
    for name in TEST_FILES:
        shutil.copyfile(debian_fashion / name, tmp_path / "root" / "fashion_mnist" / name)
    images, labels = load_idx_dataset("fashion_mnist", "test", root=tmp_path / "root", download=False)
    assert images.shape == (10000, 784)
    assert np.bincount(labels).tolist() == [1000] * 10


# --- search order --------------------------------------------------------------------------------


@pytest.mark.data
def test_recompressed_copy_is_accepted(mnist_copy, shared_mnist):
    for name in TEST_FILES:
        _rewrite(mnist_copy / name, lambda raw: raw)
        assert _md5(mnist_copy / name) != _md5(shared_mnist / name)
    images, labels = load_idx_dataset("mnist", "test", root=mnist_copy, download=False)
    _check_mnist_test(images, labels)


@pytest.mark.data
def test_root_wins_over_env_var_which_wins_over_cache(tmp_path, mnist_copy, shared_mnist, isolated_env, monkeypatch):
    bad = tmp_path / "bad"
    shutil.copytree(mnist_copy, bad)
    _rewrite(bad / TEST_FILES[1], lambda raw: raw[:-1] + bytes([(raw[-1] + 1) % 10]))
    monkeypatch.setenv(idx.ENV_VAR, str(bad))
    load_idx_dataset("mnist", "test", root=shared_mnist, download=False)  # root first: env not read
    shutil.copytree(mnist_copy, isolated_env / "mnist")
    with pytest.raises(DataError, match="checksum mismatch"):  # env var before the (good) cache
        load_idx_dataset("mnist", "test", download=False)
    monkeypatch.delenv(idx.ENV_VAR)
    _check_mnist_test(*load_idx_dataset("mnist", "test", download=False))  # the cache


# --- checksums and IDX validation ----------------------------------------------------------------


@pytest.mark.data
@pytest.mark.parametrize("damage", ["label-changed", "gzip-byte-flipped", "truncated"])
def test_checksum_mismatch_names_the_file(mnist_copy, shared_mnist, damage):
    path = mnist_copy / TEST_FILES[1]
    if damage == "label-changed":
        _rewrite(path, lambda raw: raw[:8] + bytes([(raw[8] + 1) % 10]) + raw[9:])
    elif damage == "gzip-byte-flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(path.read_bytes()[:1000])
    damaged = path.read_bytes()
    with pytest.raises(DataError) as info:
        # a good mirror is offered: the user's file must still not be replaced
        load_idx_dataset("mnist", "test", root=mnist_copy, mirrors=[shared_mnist.as_uri()])
    message = str(info.value)
    assert str(path) in message
    assert idx.DATASETS["mnist"].md5[TEST_FILES[1]].gz in message
    assert hashlib.md5(damaged).hexdigest() in message
    assert "delete" in message
    assert path.read_bytes() == damaged


def _idx_gz(magic: int, dims: list[int], payload: bytes) -> bytes:
    return gzip.compress(struct.pack(f">{1 + len(dims)}I", magic, *dims) + payload, mtime=0)


@pytest.mark.parametrize(
    "images_gz, labels_gz, fragment",
    [
        (_idx_gz(2051, [3, 28, 28], bytes(3 * 784)), _idx_gz(2049, [2], bytes(2)), "3 images but"),
        (_idx_gz(2049, [3, 28, 28], bytes(3 * 784)), _idx_gz(2049, [3], bytes(3)), "magic number 2049, expected 2051"),
        (_idx_gz(2051, [3, 28, 28], bytes(3 * 784)), _idx_gz(2051, [3], bytes(3)), "magic number 2051, expected 2049"),
        (_idx_gz(2051, [3, 32, 32], bytes(3 * 1024)), _idx_gz(2049, [3], bytes(3)), "32x32, expected 28x28"),
        (_idx_gz(2051, [3, 28, 28], bytes(2 * 784)), _idx_gz(2049, [3], bytes(3)), "header announces"),
        (gzip.compress(b"\0\0\x08", mtime=0), _idx_gz(2049, [3], bytes(3)), "too short"),
    ],
    ids=["count-mismatch", "images-magic", "labels-magic", "image-size", "truncated-body", "no-header"],
)
def test_malformed_idx_files_are_rejected(tmp_path, monkeypatch, images_gz, labels_gz, fragment):
    """Files that pass their checksum (patched here) but are not valid MNIST IDX content."""
    for name, data in zip(TEST_FILES, (images_gz, labels_gz)):
        (tmp_path / name).write_bytes(data)
        monkeypatch.setitem(idx.DATASETS["mnist"].md5, name, idx.Checksum(hashlib.md5(data).hexdigest(), None))
    with pytest.raises(DataError, match=fragment):
        load_idx_dataset("mnist", "test", root=tmp_path, download=False)


def test_unknown_name_or_split_raises_value_error():
    with pytest.raises(ValueError, match=r"'cifar10'.*'fashion_mnist'.*'mnist'"):
        load_idx_dataset("cifar10", "test", download=False)
    with pytest.raises(ValueError, match=r"'validation'.*'test'.*'train'"):
        load_idx_dataset("mnist", "validation", download=False)


# --- missing files and downloads -----------------------------------------------------------------


def _assert_not_found_message(message: str, folders: list[Path]) -> None:
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    for folder in folders:
        assert f"  {folder}  (" in message
    assert "dataset.root=" in message and f"export {idx.ENV_VAR}=" in message


def test_missing_files_without_download(tmp_path, isolated_env, monkeypatch):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv(idx.ENV_VAR, str(env_dir))
    with pytest.raises(DataError) as info:
        load_idx_dataset("mnist", "train", root=tmp_path / "root", download=False)
    message = str(info.value)
    folders = [tmp_path / "root", tmp_path / "root" / "mnist", env_dir, env_dir / "mnist", isolated_env / "mnist"]
    _assert_not_found_message(message, folders)
    assert "download=False" in message
    assert f"  {tmp_path / 'root'}  (root argument; no such folder)" in message
    assert f"  {env_dir}  (${idx.ENV_VAR}; files absent)" in message
    assert not (tmp_path / "root").exists()  # nothing created when not downloading


def test_missing_files_with_unreachable_mirror(isolated_env):
    with pytest.raises(DataError) as info:
        load_idx_dataset("mnist", "train", mirrors=["file:///nonexistent/"])
    message = str(info.value)
    _assert_not_found_message(message, [isolated_env / "mnist"])
    assert "file:///nonexistent/train-images-idx3-ubyte.gz" in message
    assert os.listdir(isolated_env / "mnist") == []  # no partial file left behind


@pytest.fixture
def mirror(tmp_path, shared_mnist) -> Path:
    folder = tmp_path / "mirror"
    shutil.copytree(shared_mnist, folder, ignore=shutil.ignore_patterns("*.md", "MD5SUMS"))
    return folder


@pytest.mark.data
def test_download_into_cache_from_file_mirror(mirror, shared_mnist, isolated_env, monkeypatch):
    renames, real_replace = [], os.replace

    def spy_replace(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(idx.os, "replace", spy_replace)
    images, labels = load_idx_dataset("mnist", "test", mirrors=["file:///nonexistent/", mirror.as_uri()])
    _check_mnist_test(images, labels)
    target = isolated_env / "mnist"
    # each file arrived by an atomic rename of a temporary file in the same folder
    assert sorted(dst for _, dst in renames) == sorted(target / name for name in TEST_FILES)
    assert all(src.parent == target and src.name != dst.name for src, dst in renames)
    assert sorted(os.listdir(target)) == sorted(TEST_FILES)  # no temporary files left
    for name in TEST_FILES:
        assert _md5(target / name) == _md5(shared_mnist / name)
    shutil.rmtree(mirror)
    _check_mnist_test(*load_idx_dataset("mnist", "test", download=False))  # now found in the cache


@pytest.mark.data
def test_download_into_root_subfolder(mirror, tmp_path, isolated_env):
    root = tmp_path / "root"
    _check_mnist_test(*load_idx_dataset("mnist", "test", root=root, mirrors=[mirror.as_uri()]))
    assert sorted(os.listdir(root / "mnist")) == sorted(TEST_FILES)
    assert not isolated_env.exists()


@pytest.mark.data
def test_download_fetches_only_missing_files(mirror, tmp_path, shared_mnist):
    root = tmp_path / "root" / "mnist"
    root.mkdir(parents=True)
    shutil.copyfile(shared_mnist / TEST_FILES[0], root / TEST_FILES[0])
    (mirror / TEST_FILES[0]).unlink()  # the mirror could not serve it
    _check_mnist_test(*load_idx_dataset("mnist", "test", root=root.parent, mirrors=[mirror.as_uri()]))


@pytest.mark.data
def test_corrupt_download_leaves_nothing_and_raises(mirror, isolated_env):
    _rewrite(mirror / TEST_FILES[1], lambda raw: raw[:8] + bytes([(raw[8] + 1) % 10]) + raw[9:])
    with pytest.raises(DataError) as info:
        load_idx_dataset("mnist", "test", mirrors=[mirror.as_uri()])
    assert f"{mirror.as_uri()}/{TEST_FILES[1]}: corrupt download" in str(info.value)
    # the good images file landed (verified); the corrupt labels file left no trace
    assert os.listdir(isolated_env / "mnist") == [TEST_FILES[0]]
