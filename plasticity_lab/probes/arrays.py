"""``arrays/<name>.npz`` in a run folder (DESIGN, "Results on disk"): matrices keyed by task.

Each write merges the new keys into the existing file and replaces it atomically (a
temporary file in the same folder, fsync, ``os.replace``), so a reader or a crash sees
the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def update_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Add (or overwrite) ``arrays`` in the .npz at ``path``, keeping its other keys."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    merged: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as old:
            merged = {k: old[k] for k in old.files}
    merged.update({k: np.asarray(v) for k, v in arrays.items()})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **merged)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(Path(path), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
