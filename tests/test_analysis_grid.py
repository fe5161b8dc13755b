"""best(): the known winner of a fabricated sweep and its Hydra override string."""

from __future__ import annotations

import numpy as np
import pytest

from multirun_analysis import best, load_runs, to_overrides
from multirun_analysis.grid import hydra_value
from multirun_analysis.synthetic import write_run

T = 20
C_LOW = (-1, -0.5, 0.0, 0.5)
C_HIGH = (0.5, 1.0, 2.0)
RHO = (1e-4, 1e-5)


def _score(c_low, c_high, rho):
    """Peak at c_low=-0.5, c_high=0.5, rho=1e-4 (mean_accuracy)."""
    return 0.8 - abs(c_low + 0.5) / 10 - abs(c_high - 0.5) / 20 - (0.02 if rho == 1e-5 else 0.0)


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    for c_low in C_LOW:
        for c_high in C_HIGH:
            for rho in RHO:
                for seed in range(2):
                    acc = np.full(T, _score(c_low, c_high, rho)) + seed / 1000
                    write_run(root / f"{c_low}_{c_high}_{rho}_{seed}",
                              {"seed": seed, "learner": {"name": "adapted", "c_low": c_low, "c_high": c_high,
                                                         "rho_low": rho, "rho_high": 1e-5}},
                              {"accuracy": acc}, choices={"learner": "adapted", "activation": "relu"})
    return load_runs(root)


def test_best_known_winner(grid_runs):
    b = best(grid_runs, by="mean_accuracy")
    assert b.values == {"learner.c_low": -0.5, "learner.c_high": 0.5, "learner.rho_low": 1e-4}
    assert b.overrides == "learner.c_low=-0.5 learner.c_high=0.5 learner.rho_low=0.0001"
    assert b.mean == pytest.approx(0.8 + 0.0005)
    assert b.n_seeds == 2
    assert b.ranking["condition"].iloc[0] == b.condition
    assert len(b.ranking) == len(C_LOW) * len(C_HIGH) * len(RHO)
    assert "learner.c_low=-0.5" in str(b)


def test_best_within_a_filtered_sweep(grid_runs):
    b = best(grid_runs[grid_runs["learner.c_low"] == -1], by="mean_accuracy")
    assert b.overrides == "learner.c_low=-1.0 learner.c_high=0.5 learner.rho_low=0.0001"
    worst = best(grid_runs, by="mean_accuracy", maximize=False)
    assert worst.values == {"learner.c_low": 0.5, "learner.c_high": 2.0, "learner.rho_low": 1e-5}


def test_best_keeps_integer_keys_integer(tmp_path):
    # width is an int key, missing in one run: the override must say 100, not 100.0
    for name, width, a in (("w50", 50, 0.6), ("w100", 100, 0.9), ("default", None, 0.7)):
        network = {"depth": 3} if width is None else {"depth": 3, "width": width}
        write_run(tmp_path / name, {"seed": 0, "network": network}, {"accuracy": np.full(T, a)})
    df = load_runs(tmp_path)
    assert str(df["network.width"].dtype) == "Int64"
    assert best(df).overrides == "network.width=100"


def test_best_by_last15_differs_from_all_task_mean(tmp_path):
    # A is good early and bad late; B the opposite: the two statistics disagree
    early = np.r_[np.full(17, 0.9), np.full(3, 0.2)]
    late = np.r_[np.full(17, 0.5), np.full(3, 0.8)]
    for name, acc, rate in (("a", early, 1e-3), ("b", late, 1e-5)):
        write_run(tmp_path / name, {"seed": 0, "learner": {"name": "cbp", "replacement_rate": rate}},
                  {"accuracy": acc}, choices={"learner": "cbp"})
    df = load_runs(tmp_path)
    assert best(df, by="mean_accuracy").overrides == "learner.replacement_rate=0.001"
    assert best(df, by="last15").overrides == "learner.replacement_rate=1e-05"


def test_best_across_learners_uses_group_choice(tmp_path):
    for learner, a in (("bp", 0.5), ("cbp", 0.9), ("l2", 0.7)):
        for seed in range(2):
            cfg = {"seed": seed, "learner": {"name": learner, **({"replacement_rate": 1e-4} if learner == "cbp" else {})}}
            write_run(tmp_path / f"{learner}{seed}", cfg, {"accuracy": np.full(T, a)}, choices={"learner": learner})
    b = best(load_runs(tmp_path), by="last15")
    assert b.overrides == "learner=cbp"
    assert b.label == "Continual Backprop"
    assert b.std == pytest.approx(0.0)
    explicit = best(load_runs(tmp_path), keys=["choice.learner", "learner.replacement_rate"])
    assert explicit.overrides == "learner=cbp learner.replacement_rate=0.0001"


def test_best_rejects_unknown_stat_and_keys(grid_runs):
    with pytest.raises(ValueError, match="unknown statistic"):
        best(grid_runs, by="median")
    with pytest.raises(KeyError, match="unknown keys"):
        best(grid_runs, keys=["learner.nope"])


@pytest.mark.parametrize("value, text", [
    (1e-4, "0.0001"), (1e-05, "1e-05"), (-0.5, "-0.5"), (2.0, "2.0"), (3, "3"), (True, "true"), (None, "null"),
    (("relu", "tanh"), "[relu,tanh]"), ((1e-4, 0), "[0.0001,0]"), ("relu", "relu"), ("3", "'3'"),
    ("two words", "'two words'"), ("true", "'true'"), ("it's", "'it\\'s'"),
])
def test_hydra_value(value, text):
    assert hydra_value(value) == text


def test_to_overrides_skips_missing():
    assert to_overrides({"choice.learner": "bp", "learner.replacement_rate": float("nan"),
                         "optimizer.step_size": 0.003}) == "learner=bp optimizer.step_size=0.003"
