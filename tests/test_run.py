"""End to end: train.py and run_population write the promised results."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, compose_config
from plasticity_lab.config import ConfigError
from plasticity_lab.run import MemberJob, run_population
from plasticity_lab.run_folder import RunFolderError


def _metrics(folder: Path):
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _job(tmp_path, name, *overrides):
    return MemberJob(compose_config("debug=smoke", *overrides), tmp_path / name)


@pytest.mark.slow
@pytest.mark.data
def test_train_py_smoke_writes_run_json_and_metrics(tmp_path, mnist_root):
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=smoke", "learner=l2",
                           f"hydra.run.dir={out}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 0 and info["tasks_completed"] == 2
    assert info["choices"]["learner"] == "l2" and "learner=l2" in info["overrides"]
    assert info["versions"]["torch"] == torch.__version__ and info["end_time"]
    assert len(info["git_commit"]) == 40
    all_rows = _metrics(out)
    assert {"effective_rank", "weight_magnitude"} <= {r["metric"] for r in all_rows}  # default probes (SPEC 4)
    rows = [r for r in all_rows if r["metric"] in ("accuracy", "loss")]
    assert [(r["task"], r["metric"]) for r in rows] == [("0", "accuracy"), ("0", "loss"), ("1", "accuracy"), ("1", "loss")]
    assert all(r["layer"] == "" for r in rows) and [r["step"] for r in rows] == ["200", "200", "400", "400"]
    assert all(0 <= float(r["value"]) <= 1 for r in rows if r["metric"] == "accuracy")
    assert (out / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.data
def test_train_py_projects_its_time_and_ends_with_a_summary_line(tmp_path, mnist_root):
    """After the first task: its speed and the projected time of the rest; at the end, even with
    the progress bar: status, mean accuracy, tasks, wall time, network-steps/s and the folder."""
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=smoke", "num_tasks=3", "progress_bar=true",
                           "dataset.images_per_task=2000", f"hydra.run.dir={out}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "tasks: 100%" in proc.stderr  # the progress bar was on
    first = re.search(r"first task trained in ([\d.]+) s \(([\d,]+) network-steps/s\): the remaining 2 tasks will "
                      r"take about ([\d.]+) s of training", log)
    assert first, log
    seconds, rate, rest = float(first[1]), int(first[2].replace(",", "")), float(first[3])
    # the printed seconds are rounded to 0.01 s (a kernel task of 2,000 steps takes a few hundredths)
    assert rest == pytest.approx(2 * seconds, abs=0.02)
    assert 2000 / (seconds + 0.005) <= rate * 1.001 and rate <= 1.001 * 2000 / max(seconds - 0.005, 1e-9)
    info = json.loads((out / "run.json").read_text())
    end = re.search(r"run (\w+): mean accuracy ([\d.]+)% over (\d+)/(\d+) tasks, wall time [\d.]+ s, ([\d,]+) "
                    r"network-steps/s; results in (\S+) \(run.json, metrics.csv\)", log)
    assert end, log
    assert end[1] == info["status"] == "completed" and float(end[2]) == round(100 * info["mean_accuracy"], 2)
    assert (int(end[3]), int(end[4])) == (3, 3) and int(end[5].replace(",", "")) > 0
    assert Path(end[6]) == out and log.count("run completed") == 1


@pytest.mark.data
def test_probes_full_runs_on_the_default_protocol(tmp_path, mnist_root, monkeypatch):
    """`probes=full` on the defaults (every task trains on all 10,000 test images): every probe
    but forgetting, which needs held-out images and is an explicit switch."""
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    job = MemberJob(compose_config("probes=full", "num_tasks=1", "progress_bar=false"), tmp_path / "full")
    (info,) = run_population([job])
    assert info["status"] == "completed"
    rows = _metrics(tmp_path / "full")
    assert [r["step"] for r in rows if r["metric"] == "accuracy"] == ["10000"]  # training was not shrunk
    metrics = {r["metric"] for r in rows}
    assert {"effective_rank", "stable_rank", "dormant_ratio", "grad_rank", "grad_cosine_mean", "time_update_b1",
            "wall_time_task", "weight_norm"} <= metrics
    assert not any(m.startswith("past_task_accuracy") for m in metrics)


@pytest.mark.slow
def test_bad_config_fails_before_training_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=smoke", "learner=l2",
                           "learner.weight_decay=-0.1", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "learner.weight_decay=-0.1: must be >= 0" in proc.stderr
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.data
def test_first_task_well_above_chance_on_real_mnist(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    job = MemberJob(compose_config("num_tasks=1", "progress_bar=false"), tmp_path / "full")
    (info,) = run_population([job])
    assert info["status"] == "completed"
    assert info["mean_accuracy"] > 0.80  # 10,000 examples, 3 x 100 relu, step 0.003


@pytest.mark.slow
@pytest.mark.data
def test_population_members_equal_runs_alone_and_reference(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    variants = [("seed=0",), ("seed=1", "optimizer.step_size=0.01"), ("seed=2", "learner.weight_decay=1e-2"),
                ("seed=3", "optimizer.step_size=0.03")]
    pop = [_job(tmp_path, f"pop{k}", "learner=l2", *v) for k, v in enumerate(variants)]
    run_population(pop)
    for k, v in enumerate(variants):
        (alone,) = run_population([_job(tmp_path, f"alone{k}", "learner=l2", *v)])
        (ref,) = run_population([_job(tmp_path, f"ref{k}", "learner=l2", "backend=reference", *v)])
        got = [float(r["value"]) for r in _metrics(tmp_path / f"pop{k}")]
        assert got == pytest.approx([float(r["value"]) for r in _metrics(tmp_path / f"alone{k}")], rel=1e-6)
        assert got == pytest.approx([float(r["value"]) for r in _metrics(tmp_path / f"ref{k}")], rel=1e-3, abs=1e-3)
        info = json.loads((tmp_path / f"pop{k}" / "run.json").read_text())
        assert (info["member_index"], info["population_size"], info["seed"]) == (k, 4, k)
    assert _metrics(tmp_path / "pop0") != _metrics(tmp_path / "pop1")


@pytest.mark.data
def test_diverged_member_is_recorded_and_others_complete(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    jobs = [_job(tmp_path, "ok", "seed=1"), _job(tmp_path, "boom", "seed=2", "optimizer.step_size=1e8")]
    run_population(jobs)
    boom = json.loads((tmp_path / "boom" / "run.json").read_text())
    assert boom["status"] == "diverged" and boom["diverged_at_task"] == 0
    assert json.loads((tmp_path / "ok" / "run.json").read_text())["status"] == "completed"
    run_population([_job(tmp_path, "ok_alone", "seed=1")])
    assert _metrics(tmp_path / "ok") == _metrics(tmp_path / "ok_alone")


def test_members_must_share_non_vectorisable_settings(tmp_path):
    with pytest.raises(ConfigError, match="cannot vary"):
        run_population([_job(tmp_path, "a"), _job(tmp_path, "b", "activation=tanh")])
    assert not (tmp_path / "a").exists()


@pytest.mark.data
def test_rerun_leaves_finished_members_untouched(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    run_population([_job(tmp_path, "a")])
    before = {f: (tmp_path / "a" / f).read_text() for f in ("metrics.csv", "run.json")}
    infos = run_population([_job(tmp_path, "a"), _job(tmp_path, "b", "seed=1")])
    assert {f: (tmp_path / "a" / f).read_text() for f in before} == before
    assert [i["status"] for i in infos] == ["completed", "completed"]
    assert not (tmp_path / "a" / "checkpoint.pt").exists()


def test_refuses_a_folder_with_completed_tasks_but_no_checkpoint(tmp_path):
    a = _job(tmp_path, "a")
    (tmp_path / "a" / ".hydra").mkdir(parents=True)
    (tmp_path / "a" / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(a.cfg))
    (tmp_path / "a" / "run.json").write_text(json.dumps({"status": "failed", "tasks_completed": 3}))
    with pytest.raises(RunFolderError, match="stopped after 3 task.*without the checkpoint.pt to resume from"):
        run_population([_job(tmp_path, "b"), a])
    assert json.loads((tmp_path / "a" / "run.json").read_text()) == {"status": "failed", "tasks_completed": 3}
    assert not (tmp_path / "b").exists()  # refused before anything was written: no new folder either


def test_missing_data_fails_clearly_and_marks_run_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job = _job(tmp_path, "r", "dataset.download=false")
    with pytest.raises(RuntimeError, match="PLASTICITY_LAB_DATA"):
        run_population([job])
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["status"] == "failed" and "t10k-images" in info["error"]


def _train_py(tmp_path, mnist_root, *overrides):
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=smoke", *overrides, f"hydra.run.dir={out}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "completed" and info["tasks_completed"] == 2
    return info, _metrics(out)


def _counts(rows, metric):
    """{(task, layer): value} of a per-layer count metric."""
    return {(int(r["task"]), int(r["layer"])): int(float(r["value"])) for r in rows if r["metric"] == metric}


@pytest.mark.slow
@pytest.mark.data
def test_train_py_adapted_tanh_smoke(tmp_path, mnist_root):
    info, rows = _train_py(tmp_path, mnist_root, "learner=adapted", "activation=tanh")
    assert info["choices"]["learner"] == "adapted"
    for metric in ("units_rescaled_low", "units_rescaled_high"):
        assert sorted(_counts(rows, metric)) == [(t, l) for t in (0, 1) for l in (1, 2, 3)]
    assert all(0 <= float(r["value"]) <= 1 for r in rows if r["metric"] == "accuracy")


@pytest.mark.slow
@pytest.mark.data
def test_train_py_cbp_first_layer_only_smoke(tmp_path, mnist_root):
    info, rows = _train_py(tmp_path, mnist_root, "learner=cbp", "cbp_layers=layer_1",
                           "learner.replacement_rate=1e-2", "learner.maturity_threshold=20")
    assert info["choices"]["cbp_layers"] == "layer_1"
    counts = _counts(rows, "units_reset")
    assert counts[(0, 1)] > 0 and counts[(1, 1)] > 0  # ~ 0.01 * 100 units per step in layer 1 ...
    assert all(counts[(t, l)] == 0 for t in (0, 1) for l in (2, 3))  # ... and never in layers 2, 3


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("learner", [
    ["learner=cbp", "learner.replacement_rate=[1e-2,5e-3,0]", "learner.maturity_threshold=20", "optimizer=adam",
     "optimizer.step_size=1e-3"],
    ["learner=adapted", "reset_strategy=tanh", "learner.rho_low=1e-2", "learner.rho_high=1e-2",
     "learner.maturity_threshold=20", "activation=tanh"],
])
def test_reset_learners_population_equals_alone_and_reference(tmp_path, mnist_root, monkeypatch, learner):
    """Through the runner: members with different hyperparameters equal their runs alone and the reference."""
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    variants = [("seed=0",), ("seed=1", "learner.decay_rate=0.9", "learner.maturity_threshold=10")]
    run_population([_job(tmp_path, f"pop{k}", *learner, *v) for k, v in enumerate(variants)])
    for k, v in enumerate(variants):
        (alone,) = run_population([_job(tmp_path, f"alone{k}", *learner, *v)])
        (ref,) = run_population([_job(tmp_path, f"ref{k}", *learner, "backend=reference", *v)])
        pop_rows, alone_rows, ref_rows = (_metrics(tmp_path / f"{n}{k}") for n in ("pop", "alone", "ref"))
        assert [r["metric"] for r in pop_rows] == [r["metric"] for r in ref_rows]
        got = [float(r["value"]) for r in pop_rows]
        assert got == pytest.approx([float(r["value"]) for r in alone_rows], rel=1e-6)
        assert got == pytest.approx([float(r["value"]) for r in ref_rows], rel=1e-3, abs=1e-3)
        counted = [r for r in pop_rows if r["layer"]]
        assert counted and sum(float(r["value"]) for r in counted) > 0


@pytest.mark.data
def test_cbp_run_records_utility_statistics_per_layer(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    run_population([_job(tmp_path, "cbp", "learner=cbp", "learner.maturity_threshold=20",
                         "learner.replacement_rate=0.01")])
    rows = _metrics(tmp_path / "cbp")
    stats = {(r["metric"], r["layer"]): float(r["value"]) for r in rows if r["task"] == "1"}
    for layer in ("1", "2", "3"):
        assert stats[("utility_min", layer)] <= stats[("utility_median", layer)] <= stats[("utility_max", layer)]
        assert stats[("utility_mean", layer)] > 0
        assert stats[("units_reset", layer)] > 0
