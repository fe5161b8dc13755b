"""How the kernel backend's code is compiled (numba), shared by every compiled function of kernel/.

- ``cache=True``: compiled once per machine, kept next to the sources (later runs load it in ~1 s),
  and dropped whenever any kernel source changes (``refresh_cache``);
- ``error_model="numpy"``: IEEE division (x / 0 is inf or NaN, no exception), as torch;
- ``_nrt=False``: no reference counting. Numba counts the references to an array's memory for
  every view it makes (a slice, a reshape), each count an atomic operation behind a function
  call; in the training loop these were ~20% of a step's time (sampled with ``perf``). Without
  it, compiled code cannot allocate: every work array comes from the caller
  (``KernelPopulation._scratch``), and views must not outlive the arrays they view (they never
  leave a call).

- ``fastmath=False`` unless a function asks for ``FAST``: numba compiles a function that does not
  set an option with its caller's, so without it the learners' decisions, compiled as callees of
  the training loop, would take the loop's liberties (a fused multiply-add in the accumulator
  c += rho * #eligible changed which step replaces a unit).

``FAST``: the floating-point liberties the training loop (kernel/step.py, and the row loops
inlined into it) takes so that reductions (dot products, |w| sums) vectorise: reassociation and
fused multiply-add only; NaN and inf keep their IEEE meaning, so a diverging member shows. The
results differ from a sequential sum within rounding (tests compare the kernel with the
reference learner at float32 rounding, float64 at ~1e-10) and are the same in every run on one
machine (the same compiled code). The learners' statistics, decisions and events do without.
"""

import hashlib
import os
from pathlib import Path

FAST = {"reassoc", "contract"}
JIT = dict(cache=True, error_model="numpy", _nrt=False, fastmath=False)
JIT_FAST = dict(JIT, fastmath=FAST)
INLINE = dict(JIT, inline="always")  # (compiled into the caller, with the caller's options)


FINGERPRINT = "kernel-sources.sha256"


def refresh_cache() -> None:
    """Empty numba's cache of the kernel's compiled functions if any source file of plasticity_lab/kernel/
    changed since it was written.

    numba keys a cached function on its own source file only, while the functions it calls are
    compiled into it: after an edit of, say, learners/cbp.py the cached ``train_member`` (step.py)
    would still load, with the old cbp code inside. So a fingerprint of every kernel source is kept
    next to each cache folder, and the folder's numba files (*.nbi, *.nbc) go when it differs; the
    next use compiles afresh (~30 s). Called once, when the kernel package is imported (before
    anything compiled is loaded)."""
    import sys

    from numba.core.dispatcher import Dispatcher

    folders = {obj._cache.cache_path for name, module in list(sys.modules.items())
               if name.startswith(__package__) for obj in vars(module).values()
               if isinstance(obj, Dispatcher) and getattr(obj._cache, "cache_path", None)}
    drop_stale(folders, fingerprint(Path(__file__).resolve().parent))


def fingerprint(root: Path) -> str:
    """sha256 of every .py file under ``root`` (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def drop_stale(folders, current: str) -> None:
    """In each folder whose fingerprint file is not ``current``: delete numba's cache files, then
    write ``current`` (atomically). A folder that cannot be written is left alone."""
    for folder in map(Path, folders):
        stamp = folder / FINGERPRINT
        try:
            if stamp.read_text() == current:
                continue
        except OSError:
            pass
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for cached in folder.glob("*.nb[ic]"):
                cached.unlink(missing_ok=True)
            tmp = folder / f"{FINGERPRINT}.{os.getpid()}"
            tmp.write_text(current)
            os.replace(tmp, stamp)
        except OSError:  # a read-only install: numba then caches elsewhere or not at all
            pass
