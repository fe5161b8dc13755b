"""Sweeps on a real SLURM cluster through submitit (scripts/slurm_cluster.sh starts one; CI does).

Outside CI these tests skip when no cluster answers; in CI (CI=true) a missing cluster fails them
(the ``slurm`` fixture, conftest.py).
"""

import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, wait_until as _wait

pytestmark = [pytest.mark.slurm, pytest.mark.data]


def _sweep(tmp_path, mnist_root, *args):
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "debug=smoke", f"hydra.sweep.dir={sweep}",
                           "hydra.launcher.timeout_min=30", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/run.json")}


def test_submitit_slurm_runs_one_job_per_config(slurm, tmp_path, mnist_root):
    runs = _sweep(tmp_path, mnist_root, "hydra/launcher=submitit_slurm", "seed=0,1", "learner=bp,l2")
    assert len(runs) == 4 and all(r["status"] == "completed" for r in runs.values())
    assert all(r["population_size"] == 1 for r in runs.values())


def test_population_slurm_packs_members_into_few_jobs(slurm, tmp_path, mnist_root):
    runs = _sweep(tmp_path, mnist_root, "hydra/launcher=population_slurm", "hydra.launcher.max_members=2",
                  "seed=0,1,2")
    assert len(runs) == 3 and all(r["status"] == "completed" for r in runs.values())
    pops = {r["population_id"] for r in runs.values()}
    assert len(pops) == 2  # 3 members, at most 2 per SLURM job
    assert all(pid.split("-")[0].split("_")[0].isdigit() for pid in pops)  # SLURM job ids, not local pids


def _squeue(*fields):
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def test_preemption_signal_checkpoints_requeues_and_resumes(slurm, tmp_path, mnist_root):
    """SIGUSR2 (what SLURM sends before a time limit or preemption) -> requeue -> resume -> same metrics."""
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    args = ["num_tasks=10", "dataset.images_per_task=1500", "checkpoint_seconds=0", "metrics_flush_seconds=0",
            "progress_bar=false", "seed=0,1"]
    sweep = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *args, "hydra/launcher=population_slurm",
         "hydra.launcher.timeout_min=120", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait(lambda: (sweep / "0" / "metrics.csv").exists()
              and (sweep / "0" / "metrics.csv").read_text().count(",accuracy,") >= 2, 300, "two tasks")
        (job_id, state), = _squeue()
        assert state == "RUNNING"
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        _wait(lambda: any(s == "PENDING" for _, s in _squeue()), 120, "the requeued job")
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, timeout=30)
        out, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, out[-4000:]
    reference = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *args, f"hydra.sweep.dir={tmp_path / 'ref'}"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    for k in ("0", "1"):
        info = json.loads((sweep / k / "run.json").read_text())
        assert info["status"] == "completed" and info["resumes"] >= 1
        assert _metrics(sweep / k) == _metrics(tmp_path / "ref" / k)
        assert not (sweep / k / "checkpoint.pt").exists()


def _metrics(folder):
    with open(folder / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if not r["metric"].startswith(("time_", "wall_time", "probe_time"))]
