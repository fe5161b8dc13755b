"""MNIST-format (IDX) datasets: find the files, verify their checksums, download them, decode them.

The one entry point is :func:`load_idx_dataset`. It needs numpy only.

Where the files are looked for, in order (the first folder holding both needed ``.gz`` files wins):

1. the ``root`` argument: the folder itself, or ``root/<subdir>``;
2. the environment variable ``PLASTICITY_LAB_DATA`` (if set and non-empty): itself, or ``<it>/<subdir>``;
3. system locations (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``);
4. the per-user cache ``${XDG_CACHE_HOME:-~/.cache}/plasticity_lab/<subdir>``.

``<subdir>`` is ``mnist`` or ``fashion-mnist`` (``fashion_mnist`` is accepted too).

Every file is MD5-checked before use. A file is valid if the MD5 of the ``.gz`` matches the published one
*or* the MD5 of its decompressed bytes matches: Debian recompresses Fashion-MNIST, which changes the
``.gz`` checksum but not the content. A file that fails both checks is never used nor replaced: the loader
raises :class:`DataError` and asks the user to delete or replace it.

Missing files are downloaded (unless ``download=False``) into ``root/<subdir>`` when ``root`` is given,
else into the cache folder. Both datasets use the same file names, so each gets its own sub-folder.
A download goes to a temporary file in the target folder, is verified, then atomically renamed; a failed
or corrupt download leaves nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["DataError", "DATASETS", "ENV_VAR", "load_idx_dataset"]

ENV_VAR = "PLASTICITY_LAB_DATA"
TIMEOUT_S = 20.0  # per network request

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # IDX: unsigned bytes, 3 and 1 dimensions
_ROWS = _COLS = 28

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or malformed, and cannot be (re)obtained automatically."""


class Checksum(NamedTuple):
    """MD5 of the published ``.gz`` file and of its decompressed bytes (None where unknown)."""

    gz: str
    raw: str | None


class DatasetSpec(NamedTuple):
    title: str
    subdirs: tuple[str, ...]  # the first one is where downloads go
    system_dirs: tuple[str, ...]
    mirrors: tuple[str, ...]
    md5: dict[str, Checksum]


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        title="MNIST",
        subdirs=("mnist",),
        system_dirs=(),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        md5={
            # .gz values: torchvision.datasets.MNIST.resources. Raw t10k values computed from the
            # shared copy; raw train values as published by several independent projects (not
            # checked here: the train split is not available offline).
            "train-images-idx3-ubyte.gz": Checksum("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            "train-labels-idx1-ubyte.gz": Checksum("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
            "t10k-images-idx3-ubyte.gz": Checksum("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            "t10k-labels-idx1-ubyte.gz": Checksum("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        },
    ),
    "fashion_mnist": DatasetSpec(
        title="Fashion-MNIST",
        subdirs=("fashion-mnist", "fashion_mnist"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            # .gz values: torchvision.datasets.FashionMNIST.resources. Raw values computed from
            # Debian's dataset-fashion-mnist (recompressed .gz, identical content).
            "train-images-idx3-ubyte.gz": Checksum("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            "train-labels-idx1-ubyte.gz": Checksum("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            "t10k-images-idx3-ubyte.gz": Checksum("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            "t10k-labels-idx1-ubyte.gz": Checksum("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        },
    ),
}


def load_idx_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    download: bool = True,
    mirrors: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of an MNIST-format dataset.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: folder holding the files (directly or in ``<root>/<subdir>``); searched first, and
            where downloads go (``<root>/<subdir>``) if given.
        download: fetch missing files from ``mirrors`` if no folder holds them.
        mirrors: base URLs to try in order (default: the dataset's public mirrors); ``file://`` works.

    Returns:
        ``(images, labels)``: images ``uint8`` of shape ``(N, 784)`` (each 28x28 image flattened
        row-major), labels ``int64`` of shape ``(N,)``. Both arrays are writable.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DataError: a file is corrupt or malformed, or the files are missing and could not be downloaded.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; allowed: {sorted(DATASETS)}")
    if split not in _SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; allowed: {sorted(_SPLIT_FILES)}")
    spec = DATASETS[name]
    files = _SPLIT_FILES[split]
    root = root or None  # an empty string (e.g. from a config) means "not given"

    candidates = _candidate_folders(spec, root)
    folder = next((f for f, _ in candidates if all((f / n).is_file() for n in files)), None)
    if folder is None:
        target = (_expand(root) if root is not None else _cache_dir()) / spec.subdirs[0]
        failures = _download_missing(files, target, spec, mirrors) if download else None
        if failures is None or failures:
            raise DataError(_not_found_message(spec, split, files, candidates, target, failures))
        folder = target

    images_path, labels_path = (folder / n for n in files)
    images = _parse_idx(_read_verified(images_path, spec.md5[files[0]]), images_path, _IMAGES_MAGIC)
    labels = _parse_idx(_read_verified(labels_path, spec.md5[files[1]]), labels_path, _LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "the two files must come from the same split."
        )
    return images, labels.astype(np.int64)  # both copies: writable, as torch.from_numpy wants


# --- locating files ---------------------------------------------------------------------------


def _expand(path: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(os.fspath(path)))


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return _expand(base) / "plasticity_lab"


def _candidate_folders(spec: DatasetSpec, root) -> list[tuple[Path, str]]:
    """Folders to search, in order, each with a short note on where it comes from."""
    out: list[tuple[Path, str]] = []

    def base_and_subdirs(base: Path, why: str) -> None:
        out.append((base, why))
        out.extend((base / s, why) for s in spec.subdirs)

    if root is not None:
        base_and_subdirs(_expand(root), "root argument")
    if os.environ.get(ENV_VAR):
        base_and_subdirs(_expand(os.environ[ENV_VAR]), f"${ENV_VAR}")
    out.extend((Path(d), "system location") for d in spec.system_dirs)
    cache = _cache_dir()
    out.extend((cache / s, "user cache") for s in spec.subdirs)
    return out


def _not_found_message(spec, split, files, candidates, target, failures) -> str:
    lines = [f"{spec.title} {split!r} split not found: need {' and '.join(files)} in one folder.", "Looked in:"]
    for folder, why in candidates:
        if not folder.is_dir():
            state = "no such folder"
        else:
            present = [n for n in files if (folder / n).is_file()]
            state = f"only {present[0]}" if present else "files absent"
        lines.append(f"  {folder}  ({why}; {state})")
    if failures is None:
        lines.append("Downloading is disabled (download=False).")
    else:
        lines.append(f"Downloading into {target} failed:")
        lines.extend(f"  {f}" for f in failures)
    lines.append(
        "To use a copy you already have, point at the folder holding the files (or its "
        f"'{spec.subdirs[0]}/' sub-folder): pass dataset.root=/path/to/folder (root=... in Python), "
        f"or export {ENV_VAR}=/path/to/folder."
    )
    if split == "train":
        lines.append(
            "Or run on the 10,000-image test split instead (the offline stand-in for the papers' training "
            "images): add the override dataset.split=test (split='test' in Python)."
        )
    return "\n".join(lines)


# --- checksums and downloads ------------------------------------------------------------------


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _check(data: bytes, expected: Checksum) -> tuple[bytes | None, str]:
    """Return ``(decompressed bytes, "")`` if either checksum of ``data`` matches, else ``(None, reason)``."""
    gz_md5 = _md5(data)
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        return None, f"expected md5 {expected.gz}, got {gz_md5} (and it is not a valid gzip file: {err})"
    if gz_md5 == expected.gz:
        return raw, ""
    raw_md5 = _md5(raw)
    if raw_md5 == expected.raw:
        return raw, ""
    raw_note = f"; decompressed: expected {expected.raw}, got {raw_md5}" if expected.raw else ""
    return None, f"expected md5 {expected.gz}, got {gz_md5}{raw_note}"


def _read_verified(path: Path, expected: Checksum) -> bytes:
    raw, reason = _check(path.read_bytes(), expected)
    if raw is None:
        raise DataError(
            f"checksum mismatch for {path}: {reason}. The file is corrupt or not the expected one: "
            "delete it (it will then be downloaded again) or replace it with a good copy."
        )
    return raw


def _download_missing(files, folder: Path, spec: DatasetSpec, mirrors) -> list[str]:
    """Download the files absent from ``folder``; return [] on success, else one line per failed attempt."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return [f"cannot create {folder}: {err}"]
    for name in files:
        if (folder / name).is_file():
            continue  # verified when loaded; never overwritten
        errors = []
        for base in spec.mirrors if mirrors is None else mirrors:
            error = _download_one(name, base, folder, spec.md5[name])
            if error is None:
                break
            errors.append(error)
        else:
            return errors or [f"{name}: no mirror to download from"]
    return []


def _download_one(name: str, base: str, folder: Path, expected: Checksum) -> str | None:
    """Fetch ``base + name`` into ``folder`` atomically; return None on success, else the reason."""
    url = base if base.endswith("/") else base + "/"
    url += name
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
        raw, reason = _check(Path(tmp).read_bytes(), expected)
        if raw is None:
            return f"{url}: corrupt download, {reason}"
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / name)
        return None
    except (OSError, ValueError) as err:  # URLError is an OSError
        return f"{url}: {err}"
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


# --- decoding ---------------------------------------------------------------------------------


def _parse_idx(raw: bytes, path: Path, magic: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes: images (magic 2051) -> (N, 784), labels (2049) -> (N,)."""
    ndim = 3 if magic == _IMAGES_MAGIC else 1
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise DataError(f"{path} is too short ({len(raw)} bytes) to be an IDX file")
    found, *dims = struct.unpack(f">{1 + ndim}I", raw[:header])
    if found != magic:
        raise DataError(f"{path}: IDX magic number {found}, expected {magic} ({'images' if ndim == 3 else 'labels'})")
    if ndim == 3 and dims[1:] != [_ROWS, _COLS]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected {_ROWS}x{_COLS}")
    size = math.prod(dims)
    if len(raw) != header + size:
        raise DataError(f"{path}: header announces {dims} ({header + size} bytes) but the file holds {len(raw)} bytes")
    array = np.frombuffer(raw, dtype=np.uint8, count=size, offset=header)  # read-only view of raw
    return array.reshape(dims[0], -1).copy() if ndim == 3 else array
