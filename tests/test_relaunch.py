"""Re-launching into folders that hold runs: recorded settings never change (issue 10, items 1, 3, 4, 7).

Every case runs ``train.py`` as a user would. Folders are compared byte for byte before and
after; refusals must be one line naming what differs (or who holds the folder) and exit 2.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # every case runs train.py
SMOKE = ("debug=smoke", "probes=minimal")
RECORD = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "run.json", "metrics.csv")


def train(cwd: Path, *args, data=None, multirun=False, env_extra=None, timeout=300):
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(data or ""), **(env_extra or {})}
    cmd = [sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict:
    """md5 of every file of a run folder (the lock file and Hydra's log aside)."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("run.lock", "train.log")}


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture
def completed(tmp_path, mnist_root):
    """A completed seed-0 smoke run and its snapshot."""
    run = tmp_path / "run"
    proc = train(tmp_path, *SMOKE, f"hydra.run.dir={run}", data=mnist_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, snapshot(run)


@pytest.mark.data
def test_same_command_into_a_finished_run_changes_nothing(tmp_path, mnist_root, completed):
    run, before = completed
    assert set(RECORD) <= set(before)
    proc = train(tmp_path, *SMOKE, f"hydra.run.dir={run}", data=mnist_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already finished" in proc.stdout + proc.stderr
    assert snapshot(run) == before


@pytest.mark.data
def test_changed_value_into_a_finished_run_is_refused_and_changes_nothing(tmp_path, mnist_root, completed):
    run, before = completed
    proc = train(tmp_path, *SMOKE, "seed=5", f"hydra.run.dir={run}", data=mnist_root)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert str(run) in line and "seed: recorded 0, now 5" in line and "new output folder" in line
    assert "Traceback" not in proc.stderr
    assert snapshot(run) == before


@pytest.mark.data
def test_resume_under_a_changed_value_names_the_key_and_both_values(tmp_path, mnist_root):
    run = tmp_path / "run"
    args = (*SMOKE, "learner=l2", "num_tasks=4", "checkpoint_seconds=0", f"hydra.run.dir={run}")
    killed = train(tmp_path, *args, data=mnist_root, env_extra={"PLASTICITY_LAB_FAULT": "chunk:3"})
    assert killed.returncode == -signal.SIGKILL
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "running" and info["tasks_completed"] >= 1  # run.json is kept up to date
    before = snapshot(run)
    proc = train(tmp_path, *args, "learner.weight_decay=0.01", data=mnist_root)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "learner.weight_decay: recorded 0.001, now 0.01" in line
    assert snapshot(run) == before
    assert "weight_decay: 0.001" in (run / ".hydra" / "config.yaml").read_text()
    done = train(tmp_path, *args, data=mnist_root)  # the recorded settings resume it
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


@pytest.mark.data
def test_two_concurrent_runs_into_one_folder(tmp_path, mnist_root):
    """The second is refused, naming the first (pid, host); the first's record is not touched."""
    run = tmp_path / "run"
    args = ("probes=minimal", "progress_bar=false", "num_tasks=400", "dataset.images_per_task=500",
            "backend=population", f"hydra.run.dir={run}")  # the torch engine: the first still trains ~1 min
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (run / "run.json").exists()
        before = {name: (run / name).read_bytes() for name in RECORD[:3]}
        second = train(tmp_path, *args, "seed=3", data=mnist_root)
        third = train(tmp_path, *args, data=mnist_root)  # even with the same settings
    finally:
        first.kill()
        first.wait()
    for proc in (second, third):
        assert proc.returncode == 2
        (line,) = error_lines(proc)
        assert f"is being trained by process {first.pid} on " in line and "run.lock" in line
    assert {name: (run / name).read_bytes() for name in RECORD[:3]} == before


@pytest.mark.data
def test_a_killed_run_releases_its_folder_and_resumes(tmp_path, mnist_root):
    run = tmp_path / "run"
    args = (*SMOKE, "num_tasks=4", "checkpoint_seconds=0", f"hydra.run.dir={run}")
    assert train(tmp_path, *args, data=mnist_root, env_extra={"PLASTICITY_LAB_FAULT": "chunk:2"}).returncode == -9
    done = train(tmp_path, *args, data=mnist_root)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["tasks_completed"] == 4 and info["resumes"] == 1


@pytest.mark.data
@pytest.mark.parametrize("fault", ["atomic_write:4", "atomic_write:7", "chunk:1"])
def test_nothing_worth_protecting_starts_over(tmp_path, mnist_root, fault):
    """Killed before the first task completed (writing its record, run.json, the first checkpoint, or
    in the first task): the same command simply starts over, and so does a changed one."""
    run = tmp_path / "run"
    killed = train(tmp_path, *SMOKE, f"hydra.run.dir={run}", data=mnist_root,
                   env_extra={"PLASTICITY_LAB_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL
    proc = train(tmp_path, *SMOKE, "seed=1", f"hydra.run.dir={run}", data=mnist_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 1 and info.get("resumes") is None
    assert "seed: 1" in (run / ".hydra" / "config.yaml").read_text()
    assert not list(run.glob(".*.tmp")) and not list((run / ".hydra").glob(".*.tmp"))


@pytest.mark.data
def test_a_failed_start_is_retried_after_the_data_is_fixed(tmp_path, mnist_root):
    run = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = train(tmp_path, *SMOKE, f"dataset.root={empty}", "dataset.download=false", f"hydra.run.dir={run}")
    assert failed.returncode != 0
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    proc = train(tmp_path, *SMOKE, f"hydra.run.dir={run}", data=mnist_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


@pytest.mark.data
def test_completed_tasks_without_a_checkpoint_are_kept_with_instructions(tmp_path, mnist_root):
    run = tmp_path / "run"
    args = (*SMOKE, "num_tasks=4", "checkpoint_seconds=0", f"hydra.run.dir={run}")
    assert train(tmp_path, *args, data=mnist_root, env_extra={"PLASTICITY_LAB_FAULT": "chunk:3"}).returncode == -9
    (run / "checkpoint.pt").unlink()
    before = snapshot(run)
    proc = train(tmp_path, *args, data=mnist_root)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "without the checkpoint.pt to resume from" in line and "move the folder away" in line
    assert snapshot(run) == before


@pytest.mark.data
def test_a_truncated_checkpoint_is_named_with_what_to_do(tmp_path, mnist_root):
    run = tmp_path / "run"
    args = (*SMOKE, "num_tasks=4", "checkpoint_seconds=0", f"hydra.run.dir={run}")
    assert train(tmp_path, *args, data=mnist_root, env_extra={"PLASTICITY_LAB_FAULT": "chunk:3"}).returncode == -9
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    proc = train(tmp_path, *args, data=mnist_root)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert f"{ckpt} is damaged" in line and "copy it again" in line
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------- sweeps
def _steps(sweep: Path) -> dict:
    """folder -> (step size in .hydra/config.yaml, the override recorded in run.json at its first start)."""
    import yaml

    out = {}
    for run_json in sorted(sweep.glob("*/run.json")):
        folder = run_json.parent
        cfg = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
        first = [o for o in json.loads(run_json.read_text())["overrides"] if o.startswith("optimizer.step_size=")]
        out[folder.name] = (float(cfg["optimizer"]["step_size"]), float(first[0].split("=")[1]))
    return out


@pytest.mark.data
def test_extended_then_shrunk_sweep_with_the_population_launcher(tmp_path, mnist_root):
    sweep = tmp_path / "sweep"
    launch = lambda steps: train(tmp_path, *SMOKE, "hydra/launcher=population", f"optimizer.step_size={steps}",
                                 f"hydra.sweep.dir={sweep}", data=mnist_root, multirun=True)
    assert launch("0.01,0.003").returncode == 0
    before = {d.name: snapshot(d) for d in sweep.iterdir() if d.is_dir()}
    extended = launch("0.03,0.01,0.003")
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "folder 2 (new; folder 0 records other settings)" in extended.stdout + extended.stderr
    assert {name: snapshot(sweep / name) for name in before} == before  # the old runs are untouched
    assert _steps(sweep) == {"0": (0.01, 0.01), "1": (0.003, 0.003), "2": (0.03, 0.03)}
    with_new = {d.name: snapshot(d) for d in sweep.iterdir() if d.is_dir()}
    shrunk = launch("0.003")
    assert shrunk.returncode == 0, shrunk.stderr[-3000:]
    assert {d.name: snapshot(d) for d in sweep.iterdir() if d.is_dir()} == with_new

    from multirun_analysis import best, load_runs

    df = load_runs(sweep)
    assert sorted(df["optimizer.step_size"].unique()) == [0.003, 0.01, 0.03]
    for run_id, step in df.groupby("run_id")["optimizer.step_size"].first().items():
        assert _steps(sweep)[run_id] == (step, step)
    assert best(df).overrides.startswith("optimizer.step_size=")


@pytest.mark.data
def test_extended_sweep_with_a_job_numbered_launcher_is_refused(tmp_path, mnist_root):
    sweep = tmp_path / "sweep"
    launch = lambda steps: train(tmp_path, *SMOKE, f"optimizer.step_size={steps}", f"hydra.sweep.dir={sweep}",
                                 data=mnist_root, multirun=True)
    assert launch("0.01,0.003").returncode == 0
    before = {d.name: snapshot(d) for d in sweep.iterdir() if d.is_dir()}
    proc = launch("0.03,0.01,0.003")
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "optimizer.step_size: recorded 0.01, now 0.03" in line
    assert "hydra/launcher=population" in line and "new hydra.sweep.dir" in line
    assert {d.name: snapshot(d) for d in sweep.iterdir() if d.is_dir()} == before


@pytest.mark.data
def test_two_concurrent_sweeps_into_one_folder(tmp_path, mnist_root):
    sweep = tmp_path / "sweep"
    args = ("-m", "hydra/launcher=population", "probes=minimal", "progress_bar=false", "num_tasks=400",
            "dataset.images_per_task=500", "backend=population", "seed=0,1", f"hydra.sweep.dir={sweep}")
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(sweep.glob("*/run.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        second = train(tmp_path, *args[1:], data=mnist_root, multirun=True)
        holder = json.loads((sweep / "0" / "run.lock").read_text())["pid"]
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    (line,) = error_lines(second)
    assert f"is being trained by process {holder} on " in line
    assert holder != first.pid  # the worker trains, the launcher waits
    deadline = time.monotonic() + 30  # the worker died with its launcher: the folders are free again
    while time.monotonic() < deadline:
        try:
            os.kill(holder, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            break
    else:
        pytest.fail(f"worker {holder} outlived its launcher")


# ------------------------------------------------------------------------------- messages
def test_a_bad_value_is_one_line_and_leaves_no_folder(tmp_path):
    out = tmp_path / "outputs"
    proc = train(tmp_path, *SMOKE, "learner=l2", "learner.weight_decay=-0.1", f"hydra.run.dir={out}/a/run")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: learner.weight_decay=-0.1: must be >= 0"
    assert not out.exists()


def test_negative_n_jobs_names_the_key(tmp_path):
    sweep = tmp_path / "sweep"
    proc = train(tmp_path, *SMOKE, "hydra/launcher=population", "hydra.launcher.n_jobs=-3", "seed=0,1",
                 f"hydra.sweep.dir={sweep}", multirun=True)
    assert proc.returncode == 2
    assert error_lines(proc) == ["error: hydra.launcher.n_jobs=-3: must be >= 0 (processes at once; 0 = one per "
                                 "CPU core)"]
    assert not sweep.exists()


def test_a_key_of_another_learner_is_one_line_naming_its_learners(tmp_path):
    proc = train(tmp_path, *SMOKE, "learner.replacement_rate=0.1", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith("error: learner.replacement_rate: not a setting of learner=bp")
    assert "replacement_rate belongs to learner=cbp" in line
    assert not (tmp_path / "run").exists()
