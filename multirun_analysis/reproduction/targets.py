"""The reproduction targets: which preset each ``make reproduce-<name>`` runs, at which scale.

The one table of them (``TARGETS``). ``plasticity_lab.reproduce`` runs a target (plan, projected
wall time, the Hydra multirun(s) with the population launcher, then ``multirun_analysis report``);
``multirun_analysis.reproduction.document`` writes ``docs/REPRODUCTION.md`` from what ran.

A target is one or more Hydra multiruns of the papers' presets (``conf/experiment/``), each into its
own stable sweep folder ``<root>/<name>/<scale>/<sweep label>/`` (``root`` = ``reproduction/``,
git-ignored), so re-running the same command resumes the runs instead of restarting them. Scales:

- ``full``: the preset as the paper ran it (tasks, images per task, seeds); the grids fix the
  rates at the thesis' best and run its 1 seed;
- ``reduced``: the same conditions and seeds with fewer tasks (a laptop's afternoon or night);
- ``smoke``: 2 tasks x 200 examples (``debug=smoke``): the code path of the targets, for the tests.

Every MNIST target trains on the 10,000-image TEST split (``dataset.split=test``): the papers
trained on the 60,000-image training split, which is not on the machines this project's runs
are made on. The document says so next to every number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SCALES = ("full", "reduced", "smoke")
#: The override every MNIST target adds: the presets train on the training split (SPEC 5), which is
#: not on these machines; the test split (10,000 images) stands in for it.
TEST_SPLIT = "dataset.split=test"
DEFAULT_ROOT = Path("reproduction")
PROVENANCE = "reproduction.json"  # written by plasticity_lab.reproduce in <root>/<name>/<scale>/
REPORT_DIR = "report"  # multirun_analysis report of a target's runs, in <root>/<name>/<scale>/


@dataclass(frozen=True)
class Sweep:
    """One Hydra multirun: ``python train.py -m experiment=<preset> <overrides> <scale overrides>``."""

    preset: str  # conf/experiment/<preset>.yaml
    overrides: tuple[str, ...] = ()  # added at every scale (e.g. the test split)

    @property
    def label(self) -> str:
        """Its sweep folder's name: the preset's, e.g. ``main_relu``."""
        return self.preset.split("/")[-1]


@dataclass(frozen=True)
class Target:
    """One ``make reproduce-<name>``: its sweeps, its overrides per scale and what it reproduces."""

    name: str
    paper: str  # "[P]", "[J]", "[D]"
    title: str  # the paper's experiment, in words
    sweeps: tuple[Sweep, ...]
    scales: dict[str, tuple[str, ...]]  # scale -> overrides added to every sweep
    statistic: str  # the paper's summary statistic: mean_accuracy [P], last15 [J], mean_error [D]
    paper_scale: str  # what the paper ran, in words
    metric: str = "accuracy"  # the per-task metric of the curves (regression: error)
    notes: dict[str, str] = field(default_factory=dict)  # scale -> what differs from the paper, in words
    differences: tuple[str, ...] = ()  # what the preset itself runs differently from the paper (its header says so)
    priority: int = 9  # run order when time is short (1 first)

    def overrides(self, sweep: Sweep, scale: str) -> list[str]:
        """The Hydra overrides of ``sweep`` at ``scale`` (after ``experiment=<preset>``)."""
        if scale not in self.scales:
            raise KeyError(f"scale {scale!r} of {self.name}: one of {', '.join(self.scales)}")
        return [*sweep.overrides, *self.scales[scale]]

    def sweep_dir(self, sweep: Sweep, scale: str, root: Path | str = DEFAULT_ROOT) -> Path:
        return self.scale_dir(scale, root) / sweep.label

    def scale_dir(self, scale: str, root: Path | str = DEFAULT_ROOT) -> Path:
        return Path(root) / self.name / scale

    def command(self, scale: str) -> str:
        return f"make reproduce-{self.name} SCALE={scale}"


#: The methods the paper compared, for presets whose sweep also has rows the paper did not run (L2 Init
#: and UPGD, the presets' headers say so): their targets run exactly these, in the preset's order (the
#: jobs keep the numbers and folders they had before those rows were added).
PAPER_METHODS = {
    "purice/main_relu": ("bp", "l2", "cbp", "adapted_relu", "adapted_tanh"),
    "purice/main_tanh": ("bp", "l2", "cbp", "adapted_relu", "adapted_tanh"),
    "jucas/relu": ("cbp", "cbp_layer_1", "cbp_layer_2", "cbp_layer_3", "cbp_layer_4", "cbp_layer_5",
                   "cbp_layers_2_to_L", "cbp_none", "bp", "l2"),
}


def _mnist(*presets: str) -> tuple[Sweep, ...]:
    return tuple(Sweep(p, (TEST_SPLIT, *([f"method={','.join(PAPER_METHODS[p])}"] if p in PAPER_METHODS else [])))
                 for p in presets)


SMOKE = ("debug=smoke",)
_P_SCALE = "500 tasks x 10,000 MNIST training images (the same every task), 3 seeds"
_J_SCALE = "1,100 tasks x a fresh 10,000 of the MNIST training images each, 3 seeds"
_GRID_SCALE = "500 tasks x 10,000 MNIST training images, 1 seed, every rate pair of the grid"
_P_MAIN = ("CBP's replacement rate is the preset's 1e-4: [P] used the best rate of its grid per activation "
           "(experiment=purice/cbp_grid_relu / cbp_grid_tanh, not a target here)",
           "the adapted rescaling runs [P]'s published code (schedule per_step); its main results came from "
           "unpublished code, nearest to tuned.adapted.schedule=per_pass")
_REDUCED_P = "100 of the thesis' 500 tasks"
_GRID = {"full": "1 seed (as the thesis' grid), rates fixed at the strategy's (the thesis' best)",
         "reduced": "50 of the thesis' 500 tasks, 1 seed, rates fixed at the strategy's (the thesis' best)"}

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("purice-main-relu", "[P]", "the thesis' main comparison on the 3 x 100 ReLU network",
           _mnist("purice/main_relu"), {"full": (), "reduced": ("num_tasks=100",), "smoke": SMOKE},
           "mean_accuracy", _P_SCALE, notes={"reduced": _REDUCED_P}, differences=_P_MAIN, priority=1),
    Target("purice-main-tanh", "[P]", "the thesis' main comparison on the 3 x 100 tanh network",
           _mnist("purice/main_tanh"), {"full": (), "reduced": ("num_tasks=100",), "smoke": SMOKE},
           "mean_accuracy", _P_SCALE, notes={"reduced": _REDUCED_P}, differences=_P_MAIN, priority=2),
    Target("jucas-relu", "[J]", "the poster's Table 1 row for the 5 x 100 ReLU network (per-layer CBP)",
           _mnist("jucas/relu"), {"full": (), "reduced": ("num_tasks=100",), "smoke": SMOKE},
           "last15", _J_SCALE, notes={"reduced": "100 of the poster's 1,100 tasks"}, priority=3),
    Target("purice-twisted", "[P]", "the twisted 5 x 100 network [relu, relu, tanh, tanh, relu]",
           _mnist("purice/twisted"), {"full": (), "reduced": ("num_tasks=100",), "smoke": SMOKE},
           "mean_accuracy", _P_SCALE, notes={"reduced": _REDUCED_P},
           differences=("'opposite' has no stored config in [P]: the preset gives its tanh-strategy layers the rates "
                        "of the other twisted tanh-strategy runs", _P_MAIN[1]), priority=4),
    Target("dohare-scr", "[D]", "slowly-changing regression: Backprop at three step sizes, Continual Backprop",
           tuple(Sweep(p) for p in ("dohare/slowly_changing_regression", "dohare/slowly_changing_regression_cbp")),
           {"full": (), "reduced": ("num_tasks=20",), "smoke": SMOKE}, "mean_error",
           "1e6 steps (50 bins of 20,000), 3 seeds in the presets",
           metric="error",
           notes={"reduced": "20 of the paper's 50 bins of 20,000 steps (4e5 of 1e6 steps)"}, priority=5),
    Target("purice-grid-relu", "[P]", "the c_low x c_high grid on the 3 x 100 ReLU network at the relu strategy's rates",
           _mnist("purice/grid_relu"),
           {s: ("learner.rho_low=1e-4", "learner.rho_high=1e-5", *extra)
            for s, extra in {"full": (), "reduced": ("num_tasks=50",), "smoke": SMOKE}.items()},
           "mean_accuracy", _GRID_SCALE, notes=_GRID, differences=_P_MAIN[1:], priority=6),
    Target("purice-grid-tanh", "[P]", "the c_low x c_high grid on the 3 x 100 tanh network at the tanh strategy's rates",
           _mnist("purice/grid_tanh"),
           {s: ("learner.rho_low=1e-5", "learner.rho_high=1e-6", *extra)
            for s, extra in {"full": (), "reduced": ("num_tasks=50",), "smoke": SMOKE}.items()},
           "mean_accuracy", _GRID_SCALE, notes=_GRID, differences=_P_MAIN[1:], priority=7),
    Target("bit-flipping", "[J]", "the poster's per-layer CBP on bit-flipping (ReLU, tanh, swish, sigmoid)",
           (Sweep("jucas/bit_flipping"),), {"full": (), "reduced": ("num_tasks=15",), "smoke": SMOKE},
           "last15_error",
           "75 bins of 40,000 steps (3e6 steps), 3 seeds in the preset (the poster's configs: 10 seeds)", metric="error",
           notes={"reduced": "15 of the poster's 75 bins of 40,000 steps (6e5 of 3e6 steps)"},
           differences=("the preset's tuned step sizes and rates are mid-grid placeholders, not [J]'s per-activation "
                        "values (see conf/experiment/jucas/bit_flipping.yaml)",), priority=8),
    Target("jucas-tanh-selu", "[J]", "the poster's Table 1 rows for the 5 x 100 tanh and SELU networks (per-layer CBP)",
           _mnist("jucas/tanh", "jucas/selu"), {"full": (), "reduced": ("num_tasks=100",), "smoke": SMOKE},
           "last15", _J_SCALE, notes={"reduced": "100 of the poster's 1,100 tasks"}, priority=9),
)}


def target(name: str) -> Target:
    """The target called ``name``; KeyError listing the names otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"no reproduction target {name!r}; targets: {', '.join(TARGETS)}") from None


def by_priority() -> list[Target]:
    return sorted(TARGETS.values(), key=lambda t: t.priority)
