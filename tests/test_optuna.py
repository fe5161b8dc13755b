"""Optuna sweeps (hydra/sweeper=optuna, hydra-optuna-sweeper) that pack: each batch of trials the
sweeper asks for trains as one population of the population launcher, and each member returns its
objective (``optimized_metric``, plasticity_lab/objective.py) to the study."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, compose_config, optional_package
from multirun_analysis.synthetic import write_run
from plasticity_lab import objective
from plasticity_lab.config import ConfigError, parse_config


# --------------------------------------------------------------------------- the objective
ACC = [0.5, 0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4, 1.0, 0.55, 0.65, 0.75, 0.85, 0.95, 0.05, 0.15, 0.25, 0.35, 0.45]


@pytest.mark.parametrize("name, expected", [
    (None, sum(ACC) / 20),  # null: the mean accuracy over all tasks [P]
    ("mean_accuracy", sum(ACC) / 20),
    ("last15", (0.25 + 0.35 + 0.45) / 3),  # floor(0.15 * 20) = 3 last tasks [J]
    ("last50", sum(ACC[10:]) / 10),
    ("mean_loss", 2.0),
])
def test_objective_of_an_image_run_is_the_named_statistic(tmp_path, name, expected):
    run = write_run(tmp_path / "r", {"seed": 0, "num_tasks": 20}, {"accuracy": ACC, "loss": [2.0] * 20})
    assert objective.value(run, name, is_regression=False) == pytest.approx(expected, rel=1e-12)


def test_objective_of_a_regression_run_is_its_error(tmp_path):
    errors = [4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 32, 1 / 64]
    run = write_run(tmp_path / "r", {"seed": 0, "num_tasks": 10}, {"error": errors})
    assert objective.value(run, None, is_regression=True) == pytest.approx(sum(errors) / 10)
    assert objective.value(run, "last15_error", is_regression=True) == pytest.approx(1 / 64)  # floor(1.5) = 1 task


def test_a_diverged_run_is_worse_than_every_other(tmp_path):
    image = write_run(tmp_path / "i", {"seed": 0, "num_tasks": 20}, {"accuracy": ACC[:4], "loss": [1.0, 2.0, 3.0, np.inf]},
                      status="diverged", diverged_at_task=3)
    assert objective.value(image, "mean_accuracy", False) == -math.inf
    assert objective.value(image, "mean_loss", False) == math.inf
    regression = write_run(tmp_path / "r", {"seed": 0, "num_tasks": 5}, {"error": [1.0, np.inf]}, status="diverged",
                           diverged_at_task=1)
    assert objective.value(regression, None, True) == math.inf


@pytest.mark.parametrize("overrides, message", [
    (["optimized_metric=mean_error"], r"^optimized_metric=mean_error: not a statistic of the per-task metrics of an image"),
    (["optimized_metric=best"], r"^optimized_metric=best: unknown statistic"),
    (["dataset=bit_flipping", "network_depth=width_5_depth_6", "optimized_metric=mean_accuracy"],
     r"^optimized_metric=mean_accuracy: .*regression dataset's run; use one of mean_error, last15_error"),
])
def test_an_unknown_optimized_metric_is_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(compose_config(*overrides))


def test_the_sweeper_direction_must_be_the_metrics():
    accuracy, error = parse_config(compose_config()), parse_config(compose_config("optimized_metric=mean_loss"))
    objective.check_direction(accuracy, {"direction": "maximize"})
    objective.check_direction(error, {"direction": "minimize"})
    objective.check_direction(accuracy, {"max_batch_size": None})  # not an Optuna sweep: nothing to check
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.direction=minimize: optimized_metric=null "
                                          r"\(mean_accuracy\) is higher-is-better; use hydra\.sweeper\.direction=maximize"):
        objective.check_direction(accuracy, {"direction": "minimize"})
    with pytest.raises(ConfigError, match=r"use hydra\.sweeper\.direction=minimize"):
        objective.check_direction(error, {"direction": "maximize"})


def test_the_tpe_presets_search_the_grids_ranges_by_tpe():
    from hydra import compose, initialize_config_dir

    optional_package("optuna", "optuna")
    for act in ("relu", "tanh"):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"experiment=purice/tpe_{act}"], return_hydra_config=True)
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.endswith("OptunaSweeper") and "TPESampler" in sweeper.sampler._target_
        assert (sweeper.n_trials, sweeper.n_jobs, str(sweeper.direction)) == (64, 16, "maximize")
        assert dict(sweeper.params) == {"learner.c_low": "interval(-2, 2)", "learner.c_high": "interval(-2, 2)",
                                        "learner.rho_low": "tag(log, interval(1e-7, 1e-2))",
                                        "learner.rho_high": "tag(log, interval(1e-7, 1e-2))"}
        s = parse_config(compose_config(f"experiment=purice/tpe_{act}"))
        assert (s.learner.name, s.network.activation, s.optimized_metric, s.num_tasks) == ("adapted", act, "mean_accuracy", 500)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):  # the project's sweeper stays the default
        assert compose(config_name="train", return_hydra_config=True).hydra.sweeper._target_.endswith("PlasticityLabSweeper")


# --------------------------------------------------------------------------- end to end
def _accuracy_mean(folder: Path) -> float:
    with open(folder / "metrics.csv") as f:
        values = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "accuracy"]
    return sum(values) / len(values)


@pytest.mark.slow
@pytest.mark.data
def test_each_batch_trains_as_one_population_and_the_study_sees_each_trials_objective(tmp_path, mnist_root):
    optuna = optional_package("optuna", "optuna")
    sweep, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "experiment=purice/tpe_relu", "dataset.split=test", "debug=smoke",
         "hydra/launcher=population", "hydra.launcher.n_jobs=1", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
         f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env={**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = optuna.load_study(study_name="purice_adapted_relu", storage=storage)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    runs = {}
    for folder in sweep.iterdir():
        if (folder / "run.json").exists():
            cfg = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
            runs[folder.name] = (folder, json.loads((folder / "run.json").read_text()), cfg["learner"])
    assert sorted(runs) == ["0", "1", "2", "3"]
    for t in trials:  # trial n is job n: its folder holds the trial's parameters, its value is the run's objective
        folder, info, learner = runs[str(t.number)]
        assert info["status"] == "completed"
        for key in ("c_low", "c_high", "rho_low", "rho_high"):
            assert learner[key] == pytest.approx(t.params[f"learner.{key}"], rel=1e-12)
        assert t.value == pytest.approx(_accuracy_mean(folder), rel=1e-12) == info["mean_accuracy"]
    for batch in (("0", "1"), ("2", "3")):  # each batch: ONE population of both its trials
        infos = [runs[n][1] for n in batch]
        assert len({i["population_id"] for i in infos}) == 1 and all(i["population_size"] == 2 for i in infos)
    assert runs["0"][1]["population_id"] != runs["2"][1]["population_id"]
    assert min(t.datetime_start for t in trials[2:]) >= max(t.datetime_complete for t in trials[:2])  # asked after
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(t.value for t in trials))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["population", "basic"])
def test_a_direction_against_the_metric_fails_before_anything_trains(tmp_path, launcher):
    optional_package("optuna", "optuna")
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "experiment=purice/tpe_tanh", "dataset.split=test", "debug=smoke",
         f"hydra/launcher={launcher}", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
         "hydra.sweeper.direction=minimize", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: hydra.sweeper.direction=minimize: optimized_metric=mean_accuracy is "
                                   "higher-is-better; use hydra.sweeper.direction=maximize")
    assert not sweep.exists()
