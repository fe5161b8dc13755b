"""Sweeps: Hydra's launchers and our population launcher pack, validate and write job folders."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from hydra_plugins.plasticity_lab_launcher.launcher import plan_populations


def _sweep(tmp_path, *args, data=None, timeout=600):
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(data or "")}
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "debug=smoke",
                           f"hydra.sweep.dir={sweep_dir}", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, sweep_dir


def _runs(sweep_dir: Path):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/run.json"))}


def test_plan_groups_equal_keys_and_caps_population_size():
    keys = ["a", "b", "a", "a", "b", "a", "a"]
    assert plan_populations(keys, 3) == [[0, 2, 3], [5, 6], [1, 4]]
    assert plan_populations(keys, 16) == [[0, 2, 3, 5, 6], [1, 4]]
    assert plan_populations(["x"] * 5, 1) == [[0], [1], [2], [3], [4]]


@pytest.mark.slow
@pytest.mark.data
def test_population_launcher_packs_a_sweep_into_few_processes(tmp_path, mnist_root):
    proc, sweep = _sweep(tmp_path, "hydra/launcher=population", "hydra.launcher.max_members=4",
                         "seed=0,1,2", "optimizer.step_size=0.01,0.003", "learner=bp,l2", data=mnist_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(sweep)
    assert len(runs) == 12 and all(r["status"] == "completed" for r in runs.values())
    populations = {r["population_id"] for r in runs.values()}
    assert len(populations) == 4  # 6 bp jobs -> 4 + 2, 6 l2 jobs -> 4 + 2
    log = proc.stdout + proc.stderr
    assert log.count("sweep finished") == 1 and f"sweep finished: 12 runs in {sweep}: 12 completed" in log
    for num, r in runs.items():  # every member's folder holds its own config, as Hydra writes it
        overrides = (sweep / num / ".hydra" / "overrides.yaml").read_text()
        assert f"seed={r['seed']}" in overrides and r["choices"]["learner"] in overrides
        metrics = (sweep / num / "metrics.csv").read_text()
        assert metrics.count(",accuracy,") == 2 and metrics.count(",loss,") == 2
    by_pop = {}
    for r in runs.values():
        by_pop.setdefault(r["population_id"], set()).add(r["choices"]["learner"])
    assert all(len(learners) == 1 for learners in by_pop.values())  # bp and l2 never share a population


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    proc, sweep = _sweep(tmp_path, "hydra/launcher=population", "hydra.launcher.dry_run=true",
                         "hydra.launcher.max_members=2", "seed=0,1,2", "activation=relu,tanh")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "6 jobs -> 4 population(s)" in log
    assert not sweep.exists()
    # the default sweep folder (multirun/<date>/...) is not created either
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=population_slurm",
                           "hydra.launcher.dry_run=true", "seed=0,1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 jobs -> 1 population(s)" in proc.stdout + proc.stderr
    assert _files(tmp_path) == []


@pytest.mark.slow
def test_bad_value_in_a_sweep_fails_before_anything_is_written(tmp_path):
    for launcher in ("population", "basic"):
        proc, sweep = _sweep(tmp_path, f"hydra/launcher={launcher}", "learner=l2",
                             "learner.weight_decay=1e-3,-1", "seed=0,1")
        assert proc.returncode != 0
        assert "job #2 (debug=smoke learner=l2 learner.weight_decay=-1 seed=0): learner.weight_decay=-1.0: must be >= 0" \
            in proc.stderr, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr  # the message alone
        assert not sweep.exists()


@pytest.mark.slow
def test_method_sweep_with_a_learner_specific_override_composes():
    """Hydra composes a sweep once with the default learner (bp) before expanding `method`;
    learner/optimizer/dataset are open sections, so a key only cbp has still composes there."""
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "experiment=jucas/relu",
                           "method=cbp,cbp_layer_1", "learner.util_type=contribution", "hydra/launcher=population",
                           "hydra.launcher.dry_run=true", "hydra.launcher.n_jobs=1"],  # 1 process: kernel jobs not split
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "6 jobs -> 1 population(s)" in log
    assert "#3 : method=cbp_layer_1 seed=0 experiment=jucas/relu learner.util_type=contribution" in log


@pytest.mark.slow
def test_method_sweep_including_a_learner_without_the_key_says_what_to_do(tmp_path):
    proc, sweep = _sweep(tmp_path, "method=cbp,bp", "learner.util_type=contribution")
    assert proc.returncode != 0
    assert ("job #1 (debug=smoke method=bp learner.util_type=contribution): learner.util_type: not a setting of learner=bp"
            in proc.stderr), proc.stderr[-3000:]
    assert "util_type belongs to learner=cbp" in proc.stderr and "sweep only methods" in proc.stderr
    assert not sweep.exists()


@pytest.mark.slow
@pytest.mark.data
def test_method_sweep_trains_each_method_with_the_override_and_ends_with_one_summary(tmp_path, mnist_root):
    proc, sweep = _sweep(tmp_path, "experiment=jucas/relu", "dataset.split=test",  # the training split is not here
                         "method=cbp,cbp_layer_1", "seed=0", "learner.util_type=contribution", data=mnist_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(sweep)
    assert [r["status"] for r in runs.values()] == ["completed", "completed"]
    configs = [yaml.safe_load((sweep / num / ".hydra" / "config.yaml").read_text())["learner"] for num in runs]
    assert [c["util_type"] for c in configs] == ["contribution", "contribution"]
    assert [c["layers"] for c in configs] == ["all", [1]]
    log = proc.stdout + proc.stderr
    assert log.count("sweep finished") == 1 and "run completed" not in log  # one summary, not one per run
    assert f"sweep finished: 2 runs in {sweep}: 2 completed" in log
    best = max(runs.items(), key=lambda kv: kv[1]["mean_accuracy"])
    method = "cbp" if best[0] == "0" else "cbp_layer_1"
    assert re.search(rf"best condition .*: method={method}: {100 * best[1]['mean_accuracy']:.2f}%", log), log
    assert f"report: python -m multirun_analysis report {sweep}" in log


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_plain_hydra_launchers_run_one_config_per_job(tmp_path, mnist_root, launcher):
    proc, sweep = _sweep(tmp_path, f"hydra/launcher={launcher}", "seed=0,1", data=mnist_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(sweep)
    assert sorted(r["seed"] for r in runs.values()) == [0, 1]
    assert all(r["status"] == "completed" and r["population_size"] == 1 for r in runs.values())


def test_kernel_populations_are_cut_to_fill_every_process():
    """The kernel trains a population's members one after another: 6 kernel jobs on 2 processes
    become 2 populations of 3; groups on the torch engine are packed as before."""
    assert plan_populations(["a"] * 6, 16, [True] * 6, processes=2) == [[0, 1, 2], [3, 4, 5]]
    assert plan_populations(["a"] * 6, 2, [True] * 6, processes=2) == [[0, 1], [2, 3], [4, 5]]
    keys = ["k", "e", "k", "e", "k", "e"]
    kernel = [k == "k" for k in keys]
    assert plan_populations(keys, 16, kernel, processes=3) == [[0], [2], [4], [1, 3, 5]]


def test_slurm_kernel_population_trains_in_cpus_per_task_processes():
    from hydra_plugins.plasticity_lab_launcher.launcher import Job, PopulationSlurmLauncher

    launcher = PopulationSlurmLauncher(max_members=16, cpus_per_task=4)
    assert launcher._processes_per_population([Job(0, [], None, "kernel"), Job(1, [], None, "kernel")]) == 4
    assert launcher._processes_per_population([Job(0, [], None, "population")]) == 1
    assert launcher._local_processes() == 1


@pytest.mark.data
def test_a_kernel_population_split_over_processes_writes_every_member(tmp_path, mnist_root, monkeypatch):
    from conftest import compose_config
    from hydra_plugins.plasticity_lab_launcher.launcher import _train
    from plasticity_lab.run import MemberJob

    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    members = [MemberJob(compose_config("debug=smoke", f"seed={s}"), tmp_path / str(s)) for s in range(3)]
    infos = _train(members, "split", processes=2)
    assert [i["seed"] for i in infos] == [0, 1, 2] and all(i["status"] == "completed" for i in infos)
    assert [i["backend"] for i in infos] == ["kernel"] * 3
    assert sorted(json.loads((tmp_path / str(s) / "run.json").read_text())["population_size"] for s in range(3)) == [1, 2, 2]
    alone = _train([MemberJob(compose_config("debug=smoke", "seed=2"), tmp_path / "alone")], "alone", processes=2)
    assert alone[0]["mean_accuracy"] == infos[2]["mean_accuracy"]


# What each launcher hands back to Hydra for each job: the run's summary by its task kind (plasticity_lab/tasks.py).
RETURNS = r"""
import json, sys
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from plasticity_lab.hydra_setup import register_resolvers
from plasticity_lab.run import run

register_resolvers()
hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=create_config_search_path(sys.argv[1]))
batches = hydra.multirun(config_name="train", task_function=run, overrides=sys.argv[2:])
print("RETURNS", json.dumps([r.return_value for batch in batches for r in batch]))
"""


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("launcher", ["population", "basic"])
@pytest.mark.parametrize("dataset,summary", [(["dataset=bit_flipping", "network_depth=width_5_depth_6"], "mean_error"),
                                             (["dataset=permuted_mnist", "dataset.images_per_task=50"], "mean_accuracy")])
def test_every_launcher_returns_each_jobs_summary_to_hydra(tmp_path, mnist_root, launcher, dataset, summary):
    """A packed regression job returns its mean error (a classification job its mean accuracy) as its Hydra
    return value, the same number as its run.json."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-c", RETURNS, str(ROOT / "conf"), "debug=smoke", *dataset, "seed=0,1",
                           f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env={**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    returned = json.loads(proc.stdout.split("RETURNS ")[1])
    runs = _runs(sweep)
    assert returned == [runs[str(k)][summary] for k in range(2)]
    assert all(isinstance(v, float) for v in returned) and returned[0] != returned[1]
