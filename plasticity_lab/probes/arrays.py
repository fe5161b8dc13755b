"""``arrays/<name>.npz`` in a run folder (DESIGN, "Results on disk"): matrices keyed by task.

Each write merges the new keys into the existing file and replaces it atomically (a
temporary file in the same folder, fsync, ``os.replace``), so a reader or a crash sees
the old or the new file, never half of one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..recording import atomic_write


def update_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Add (or overwrite) ``arrays`` in the .npz at ``path``, keeping its other keys."""
    path = Path(path)
    merged: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as old:
            merged = {k: old[k] for k in old.files}
    merged.update({k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, lambda f: np.savez(f, **merged), binary=True)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(Path(path), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
