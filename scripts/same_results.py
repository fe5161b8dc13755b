"""Do two versions of the code give byte-identical metrics.csv? For refactors that must not change results.

    python scripts/same_results.py main            # this working tree against the commit `main`
    python scripts/same_results.py main --keep out # keep the runs in out/{base,here}/

Exports the commit with ``git archive`` into a temporary folder (no worktree is touched), then
trains the same short runs (``debug=smoke``: 2 tasks x 200 examples, with high rates so that
every learner acts, on every backend that runs the config, a regression dataset, Adam and
momentum, a population packed by the population launcher, and the probes every task) with each
version's own ``train.py`` and the same Python, and compares every ``metrics.csv`` (and the
``arrays/*.npz`` the probes write) byte for byte. Prints one line per run; exit status 1 if any
differs. A run that fails in both versions with the same status counts as equal (its log tail is
shown). Numba caches the kernel next to each version's sources, so the first call compiles twice.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAST_CBP = ("learner.replacement_rate=1e-2", "learner.maturity_threshold=20")
FAST_ADAPTED = ("learner.rho_low=1e-2", "learner.rho_high=1e-2", "learner.maturity_threshold=20")
PROBES = ("probes.rank.every=1", "probes.activity.every=1", "probes.grad_rank.every=1",
          "probes.grad_rank.examples=50", "probes.grad_covariance.every=1", "probes.forgetting.every=1")
REGRESSION = ("dataset=bit_flipping", "network_depth=width_5_depth_6")
ALL, ENGINES = ("kernel", "population", "reference"), ("population", "reference")

# name -> (backends, overrides); every run adds debug=smoke
RUNS = {
    "bp": (ALL, ("learner=bp", *PROBES)),
    "l2": (ALL, ("learner=l2",)),
    "cbp": (ALL, ("learner=cbp", *FAST_CBP, *PROBES)),
    "cbp_contribution_coins": (ALL, ("learner=cbp", "learner.util_type=contribution", "learner.accumulate=false",
                                     "learner.replacement_rate=2e-3", "learner.maturity_threshold=20",
                                     "learner.reinit=no_gain")),
    "cbp_two_pass": (ENGINES, ("learner=cbp", *FAST_CBP, "learner.high_replacement_rate=5e-3",
                               "learner.util_type=contribution")),
    "adapted": (ALL, ("learner=adapted", *FAST_ADAPTED, "activation=tanh")),
    "adapted_per_pass": (ENGINES, ("learner=adapted", *FAST_ADAPTED, "learner.schedule=per_pass")),
    "shrink_perturb": (ENGINES, ("learner=shrink_perturb", "learner.sigma=1e-3")),
    "shrink_perturb_toward_init": (ENGINES, ("learner=shrink_perturb", "learner.mode=toward_init",
                                             "learner.shrink=0.99")),
    "redo": (ENGINES, ("learner=redo", "learner.reset_period=50", "learner.tau=0.5", *PROBES)),
    "adam_cbp": (ENGINES, ("optimizer=adam", "learner=cbp", *FAST_CBP)),
    "momentum_l2": (ALL, ("optimizer.momentum=0.9", "learner=l2")),
    "regression_cbp": (ALL, (*REGRESSION, "learner=cbp", *FAST_CBP, "optimizer.step_size=0.01")),
    "regression_bp": (ALL, ("dataset=slowly_changing_regression", "network_depth=width_5_depth_1", "learner=bp",
                            "optimizer.step_size=0.01")),
    "float64_adapted": (ALL, ("learner=adapted", *FAST_ADAPTED, "dtype=float64", "learner.clip=0.5")),
}
# a sweep packed into populations by the population launcher (members on one process)
SWEEPS = {
    "population_cbp": (("population", "kernel"), ("hydra/launcher=population", "hydra.launcher.n_jobs=1",
                                                  "learner=cbp", *FAST_CBP, "seed=0,1,2",
                                                  "learner.replacement_rate=1e-2,5e-3")),
}


def export(ref: str, dest: Path) -> Path:
    """The tree of commit ``ref`` in ``dest`` (git archive: no worktree or index is touched)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def train(tree: Path, out: Path, overrides: tuple[str, ...], multirun: bool) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("PLASTICITY_LAB_DATA", str((ROOT / ".." / "shared" / "data").resolve()))
    folder = f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}"
    cmd = [sys.executable, str(tree / "train.py"), *(["-m"] if multirun else []), "debug=smoke", *overrides, folder]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    return proc.returncode, (proc.stdout + proc.stderr)[-1500:]


def results(folder: Path) -> dict[str, bytes]:
    """Every metrics.csv and probe array under ``folder``, by relative path."""
    files = [*folder.rglob("metrics.csv"), *folder.rglob("arrays/*.npz")]
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(files)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", help="the commit to compare this working tree with, e.g. main")
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    parser.add_argument("-k", dest="select", default="", help="only runs whose name contains this")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="same-results-") as tmp:
        work = args.keep or Path(tmp)
        trees = {"base": export(args.ref, Path(tmp) / "base-tree"), "here": ROOT}
        jobs = [(f"{name}-{b}", (*over, f"backend={b}"), False) for name, (backends, over) in RUNS.items()
                for b in backends]
        jobs += [(f"{name}-{b}", (*over, f"backend={b}"), True) for name, (backends, over) in SWEEPS.items()
                 for b in backends]
        jobs = [j for j in jobs if args.select in j[0]]
        different = 0
        for name, overrides, multirun in jobs:
            outcome = {}
            for side, tree in trees.items():
                status, tail = train(tree, work / side / name, overrides, multirun)
                outcome[side] = (status, tail, results(work / side / name))
            (s0, tail0, r0), (s1, tail1, r1) = outcome["base"], outcome["here"]
            if s0 == s1 and r0 == r1 and (r0 or s0 != 0):
                word = "identical" if s0 == 0 else f"both exit {s0}"
                print(f"{name:<36} {word} ({len(r0)} file(s), {sum(map(len, r0.values())):,} bytes)", flush=True)
                if s0 != 0:
                    print("    " + tail1.strip().replace("\n", "\n    "))
            else:
                different += 1
                differ = sorted(k for k in set(r0) | set(r1) if r0.get(k) != r1.get(k))
                print(f"{name:<36} DIFFERENT (exit {s0} / {s1}; files that differ: {differ or 'none'})", flush=True)
                for side, tail in (("base", tail0), ("here", tail1)):
                    if outcome[side][0] != 0:
                        print(f"  {side}:\n    " + tail.strip().replace("\n", "\n    "))
        print(f"\n{len(jobs) - different} of {len(jobs)} runs byte-identical to {args.ref}")
        return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
