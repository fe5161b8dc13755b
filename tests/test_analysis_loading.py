"""load_runs / load_arrays on fabricated run folders with known contents."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from multirun_analysis import NoRunsError, load_arrays, load_runs, runs_of
from multirun_analysis.synthetic import write_run

T = 12


def _cfg(seed, learner="cbp", rate=1e-4, width=100, **extra):
    learner_cfg = {"name": learner, "weight_decay": 0.0}
    if rate is not None:
        learner_cfg["replacement_rate"] = rate
    return {"seed": seed, "num_tasks": T, "learner": learner_cfg,
            "network": {"width": width, "depth": 3, "activation": ["relu", "relu", "tanh"]},
            "optimizer": {"name": "sgd", "step_size": 0.003}, **extra}


def _metrics(offset=0.0, layers=3):
    return {"accuracy": np.linspace(0.9, 0.6, T) + offset, "loss": np.linspace(0.2, 1.0, T),
            "dead_units": {str(layer): np.arange(T) + layer for layer in range(1, layers + 1)}}


@pytest.fixture
def sweep(tmp_path):
    """bp + cbp at two rates, 3 seeds each, nested like a Hydra multirun; one of every bad status."""
    root = tmp_path / "multirun" / "2026-11-21" / "12-00-00"
    job = 0
    for learner, rates in (("bp", [None]), ("cbp", [1e-4, 1e-5])):
        for rate in rates:
            for seed in range(3):
                write_run(root / str(job), _cfg(seed, learner, rate), _metrics(seed / 100),
                          choices={"learner": learner, "activation": "relu"})
                job += 1
    # seeds of their own: a run with the same settings as another is the same run twice
    write_run(root / "90", _cfg(10), {"accuracy": [0.5, 0.4]}, status="running",
              choices={"learner": "cbp", "activation": "relu"})
    write_run(root / "91", _cfg(11), {"accuracy": [0.5]}, status="failed",
              error="Traceback ...\nRuntimeError: CUDA out of memory", choices={"learner": "cbp", "activation": "relu"})
    write_run(root / "92", _cfg(12), {"accuracy": [0.5, np.nan]}, status="diverged", diverged_at_task=1,
              choices={"learner": "cbp", "activation": "relu"})
    return root


def test_rows_columns_and_counts(sweep):
    df = load_runs(sweep)
    assert df.attrs["n_runs"] == 9
    assert df["run_id"].nunique() == 9
    # one row per (run, task, metric, layer): accuracy + loss + 3 layers of dead_units
    assert len(df) == 9 * T * (1 + 1 + 3)
    for col in ["run_id", "condition", "seed", "status", "task", "step", "metric", "layer", "value",
                "choice.learner", "choice.activation"]:
        assert col in df.columns, col
    assert set(df["status"]) == {"completed"}
    assert sorted(df["seed"].unique().tolist()) == [0, 1, 2]
    assert set(df["metric"]) == {"accuracy", "loss", "dead_units"}
    assert set(df.loc[df["metric"] == "accuracy", "layer"]) == {""}
    assert set(df.loc[df["metric"] == "dead_units", "layer"]) == {"1", "2", "3"}
    # run_id is the folder relative to the common parent, and leads back to it
    assert set(df["run_id"]) == {str(i) for i in range(9)}
    one = df[(df["run_id"] == "4") & (df["metric"] == "accuracy")].sort_values("task")
    assert one["task"].tolist() == list(range(T))
    assert one["step"].tolist() == [(t + 1) * 10_000 for t in range(T)]
    np.testing.assert_allclose(one["value"], np.linspace(0.9, 0.6, T) + one["seed"].iloc[0] / 100)


def test_only_varying_config_keys_become_columns(sweep):
    df = load_runs(sweep)
    config_cols = [c for c in df.columns if "." in c and not c.startswith("choice.")]
    assert sorted(config_cols) == ["learner.name", "learner.replacement_rate"]
    for constant in ["network.width", "network.depth", "optimizer.step_size", "learner.weight_decay", "num_tasks"]:
        assert constant not in df.columns
        assert constant in df.attrs["constant"]
    assert df.attrs["constant"]["network.activation"] == ["relu", "relu", "tanh"]
    assert "seed" not in df.attrs["varying"]
    # bp has no replacement_rate: missing, not invented
    bp = df[df["choice.learner"] == "bp"]
    assert bp["learner.replacement_rate"].isna().all()
    assert set(df.loc[df["choice.learner"] == "cbp", "learner.replacement_rate"]) == {1e-4, 1e-5}


def test_condition_groups_seeds(sweep):
    df = load_runs(sweep)
    runs = runs_of(df)
    assert runs["condition"].nunique() == 3
    assert runs.groupby("condition")["seed"].apply(sorted).tolist() == [[0, 1, 2]] * 3
    assert set(runs["condition"]) == {"learner=bp", "learner=cbp, replacement_rate=0.0001",
                                      "learner=cbp, replacement_rate=1e-05"}
    # learner.name is implied by the learner choice, so it is not in the label
    assert df.attrs["condition_keys"] == ["choice.learner", "learner.replacement_rate"]


def test_bad_statuses_excluded_and_reported(sweep, caplog):
    with caplog.at_level(logging.WARNING, logger="multirun_analysis"):
        df = load_runs(sweep)
    excluded = {e["run_id"]: e for e in df.attrs["excluded"]}
    assert set(excluded) == {"90", "91", "92"}
    assert {e["status"] for e in excluded.values()} == {"running", "failed", "diverged"}
    assert "CUDA out of memory" in excluded["91"]["reason"]
    assert "task 1" in excluded["92"]["reason"]
    assert excluded["90"]["path"].endswith("90")
    assert "excluded 3 of 12 runs" in caplog.text and "1 failed" in caplog.text
    assert not df["run_id"].isin(["90", "91", "92"]).any()


def test_bad_statuses_included_on_request(sweep):
    df = load_runs(sweep, include=("completed", "failed", "running"))
    assert set(df["status"]) == {"completed", "failed", "running"}
    assert [e["run_id"] for e in df.attrs["excluded"]] == ["92"]
    everything = load_runs(sweep, include="all")
    assert everything.attrs["excluded"] == []
    assert everything["run_id"].nunique() == 12
    diverged = everything[everything["run_id"] == "92"]
    assert diverged["task"].tolist() == [0]  # the NaN task was not written


def test_only_bad_runs_is_a_clear_error(tmp_path):
    write_run(tmp_path / "a", _cfg(0), {"accuracy": [0.1]}, status="running")
    with pytest.raises(NoRunsError, match="excluded.*running"):
        load_runs(tmp_path)


def test_metrics_filter(sweep):
    df = load_runs(sweep, metrics=["accuracy"])
    assert set(df["metric"]) == {"accuracy"}
    assert len(df) == 9 * T


def test_no_runs_errors(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(NoRunsError, match="no runs found"):
        load_runs(tmp_path / "empty")
    with pytest.raises(NoRunsError, match="no such file"):
        load_runs(tmp_path / "missing")


def test_several_paths_and_a_single_run_folder(tmp_path):
    a = write_run(tmp_path / "a" / "run", _cfg(0, width=50), _metrics())
    b = write_run(tmp_path / "b" / "run", _cfg(0, width=200), _metrics())
    df = load_runs(a, b)
    assert set(df["run_id"]) == {"a/run", "b/run"}
    assert set(df["network.width"]) == {50, 200}
    assert df["network.width"].dtype.kind == "i"
    single = load_runs(a)
    assert set(single["run_id"]) == {"run"}
    assert "network.width" not in single.columns  # nothing varies in one run


def test_settings_come_from_config_not_folder_names(tmp_path):
    # the folder name lies; the config is the truth
    write_run(tmp_path / "learner=bp,seed=7", _cfg(3, "cbp", 1e-3), _metrics(), choices={"learner": "cbp"})
    write_run(tmp_path / "other", _cfg(4, "cbp", 1e-6), _metrics(), choices={"learner": "cbp"})
    df = load_runs(tmp_path)
    row = df[df["run_id"] == "learner=bp,seed=7"].iloc[0]
    assert row["seed"] == 3 and row["choice.learner"] == "cbp" and row["learner.replacement_rate"] == 1e-3


def test_choices_fall_back_to_hydra_yaml_and_hydra_groups_dropped(tmp_path):
    path = write_run(tmp_path / "r", _cfg(0), _metrics(), choices={"learner": "cbp", "network_depth": "3"})
    info = json.loads((path / "run.json").read_text())
    del info["choices"]
    (path / "run.json").write_text(json.dumps(info))
    df = load_runs(tmp_path)
    assert df["choice.learner"].iloc[0] == "cbp" and df["choice.network_depth"].iloc[0] == "3"
    assert not any(c.startswith("choice.hydra") for c in df.columns)


def test_yaml_details_interpolation_exponent_and_seed_like_keys(tmp_path):
    for seed in (0, 1):
        path = write_run(tmp_path / str(seed), {"seed": seed}, _metrics())
        (path / ".hydra" / "config.yaml").write_text(
            f"seed: {seed}\nlearner:\n  name: cbp\n  replacement_rate: 1e-4\n"
            "dataset:\n  shuffle_seed: ${seed}\nnetwork:\n  width: 100\n  hidden: ${network.width}\n"
            "paths:\n  out: ${hydra:runtime.output_dir}\n")
    df = load_runs(tmp_path)
    assert df.attrs["constant"]["learner.replacement_rate"] == 1e-4  # a float, not the string "1e-4"
    assert df.attrs["constant"]["network.hidden"] == 100  # interpolation resolved
    assert df.attrs["constant"]["paths.out"] == "${hydra:runtime.output_dir}"  # unresolvable: kept
    assert sorted(df["dataset.shuffle_seed"].unique().tolist()) == [0, 1]
    assert df["condition"].nunique() == 1  # a seed-like key does not split a condition


def test_unreadable_or_incomplete_run_folders_are_excluded(tmp_path):
    write_run(tmp_path / "good", _cfg(0), _metrics())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    no_metrics = write_run(tmp_path / "nometrics", _cfg(1), _metrics())
    (no_metrics / "metrics.csv").unlink()
    df = load_runs(tmp_path)
    reasons = {e["run_id"]: e["reason"] for e in df.attrs["excluded"]}
    assert set(df["run_id"]) == {"good"}
    assert "run.json unreadable" in reasons["broken"] and "no metrics.csv" in reasons["nometrics"]


def test_load_arrays(tmp_path):
    rng = np.random.default_rng(0)
    mats = {700: rng.normal(size=(5, 5)), 3: rng.normal(size=(5, 5))}
    path = write_run(tmp_path / "r", _cfg(0), _metrics(), arrays={"grad_covariance": mats})
    arrays = load_arrays(path, "grad_covariance")
    assert list(arrays) == [3, 700]
    np.testing.assert_array_equal(arrays[700], mats[700])
    assert load_arrays(path, "grad_covariance.npz").keys() == arrays.keys()


def test_value_column_dtypes(sweep):
    df = load_runs(sweep)
    assert df["value"].dtype == np.float64
    assert df["task"].dtype == np.int64
    assert pd.api.types.is_string_dtype(df["layer"])
