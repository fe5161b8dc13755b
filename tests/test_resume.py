"""Resume: a run interrupted at any point and re-run with the same command ends as if uninterrupted."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, compose_config
from plasticity_lab import checkpoint
from plasticity_lab.engine import Population
from plasticity_lab.kernel import KernelPopulation
from plasticity_lab.reference import ReferencePopulation
from plasticity_lab.run import MemberJob, run_population
from plasticity_lab.run_folder import RunFolderError

pytestmark = pytest.mark.data
TIMED = ("time_", "wall_time", "probe_time")  # wall-clock measurements differ between any two runs


def _metrics(folder):
    with open(folder / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if not r["metric"].startswith(TIMED)]


def _job(tmp_path, name, *overrides):
    return MemberJob(compose_config("debug=smoke", "num_tasks=5", "checkpoint_seconds=0", *overrides), tmp_path / name)


def assert_regression_run_resumes(tmp_path, monkeypatch, overrides) -> dict:
    """A regression run (no data files) killed in its third bin and re-run ends with the metrics of an
    uninterrupted run; returns the resumed run's summary."""
    job = lambda name: MemberJob(compose_config(*overrides), tmp_path / name)  # noqa: E731
    run_population([job("ref")])
    with monkeypatch.context() as m:
        _interrupt_at(m, task_calls=3)
        with pytest.raises(Interrupt):
            run_population([job("run")])
    (info,) = run_population([job("run")])
    assert info["resumes"] == 1 and info["status"] == "completed" and "mean_error" in info
    assert _metrics(tmp_path / "run") == _metrics(tmp_path / "ref")
    return info


class Interrupt(BaseException):
    """Stands in for a kill arriving in the middle of a task."""


def _interrupt_at(monkeypatch, task_calls: int):
    """The task_calls-th ``train`` call of any backend (torch engine, kernel, reference) raises Interrupt."""
    calls = {"n": 0}
    for cls in (Population, KernelPopulation, ReferencePopulation):
        original = cls.__dict__["train"]

        def train(self, *args, _original=original, **kwargs):
            calls["n"] += 1
            if calls["n"] == task_calls:
                raise Interrupt()
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "train", train)


@pytest.mark.parametrize("learner,backend", [("bp", "auto"), ("l2", "population")])
def test_interrupted_population_resumes_to_identical_metrics(tmp_path, mnist_root, monkeypatch, learner, backend):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    variants = [(f"learner={learner}", "seed=0", f"backend={backend}"),
                (f"learner={learner}", "seed=1", "optimizer.step_size=0.01", f"backend={backend}")]
    run_population([_job(tmp_path, f"ref{k}", *v) for k, v in enumerate(variants)])
    with monkeypatch.context() as m:
        _interrupt_at(m, task_calls=4)  # one train() call per task at this size: dies inside task 3
        with pytest.raises(Interrupt):
            run_population([_job(tmp_path, f"run{k}", *v) for k, v in enumerate(variants)])
    info = json.loads((tmp_path / "run0" / "run.json").read_text())
    assert info["status"] == "failed" and (tmp_path / "run0" / "checkpoint.pt").exists()
    state = torch.load(tmp_path / "run0" / "checkpoint.pt", weights_only=False)
    assert state["next_task"] == 3
    infos = run_population([_job(tmp_path, f"run{k}", *v) for k, v in enumerate(variants)])
    for k in range(2):
        assert _metrics(tmp_path / f"run{k}") == _metrics(tmp_path / f"ref{k}")
        assert infos[k]["status"] == "completed" and infos[k]["resumes"] == 1
        assert not (tmp_path / f"run{k}" / "checkpoint.pt").exists()


def test_member_resumes_in_a_different_packing(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    run_population([_job(tmp_path, "ref1", "seed=1")])
    with monkeypatch.context() as m:
        _interrupt_at(m, task_calls=3)
        with pytest.raises(Interrupt):
            run_population([_job(tmp_path, "run0", "seed=0"), _job(tmp_path, "run1", "seed=1")])
    run_population([_job(tmp_path, "run1", "seed=1")])  # alone this time
    assert _metrics(tmp_path / "run1") == _metrics(tmp_path / "ref1")


def test_resume_refuses_changed_settings(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    with monkeypatch.context() as m:
        _interrupt_at(m, task_calls=2)
        with pytest.raises(Interrupt):
            run_population([_job(tmp_path, "run", "seed=0")])
    with pytest.raises(RunFolderError, match=r"optimizer.step_size: recorded 0.003, now 0.01\)"):
        run_population([_job(tmp_path, "run", "seed=0", "optimizer.step_size=0.01")])


def test_resume_ignores_tuned_values_the_run_does_not_use(tmp_path, mnist_root, monkeypatch):
    """``tuned`` is compared through what it sets (learner.*, optimizer.*), not itself: a method added to
    train.yaml's ``tuned`` after a run started (here: a changed unused entry) leaves it resumable, to the
    same metrics; a changed value the run's method uses still refuses, naming the resolved key."""
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    run_population([_job(tmp_path, "ref", "method=cbp")])
    with monkeypatch.context() as m:
        _interrupt_at(m, task_calls=2)
        with pytest.raises(Interrupt):
            run_population([_job(tmp_path, "run", "method=cbp")])
    with pytest.raises(RunFolderError, match=r"learner.replacement_rate: recorded 0.0001, now 0.001\)"):
        run_population([_job(tmp_path, "run", "method=cbp", "tuned.cbp.replacement_rate=1e-3")])
    info = run_population([_job(tmp_path, "run", "method=cbp", "tuned.upgd.sigma=0.5", "+tuned.new.step_size=1")])[0]
    assert info["resumes"] == 1 and _metrics(tmp_path / "run") == _metrics(tmp_path / "ref")


@pytest.mark.slow
def test_population_killed_during_its_checkpoint_round_resumes_with_the_same_call(tmp_path, mnist_root, monkeypatch):
    """Members' checkpoints at different tasks (issue 10, item 2): each resumes from its own, re-packed."""
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    variants = [("seed=0",), ("seed=1", "optimizer.step_size=0.01"), ("seed=2",)]
    run_population([_job(tmp_path, f"ref{k}", *v) for k, v in enumerate(variants)])
    saves = {"n": 0}
    original = checkpoint.save

    def save(out_dir, state):
        saves["n"] += 1
        if saves["n"] == 3 * 2 + 3:  # the round at the start of task 2: members 0 and 1 saved, not member 2
            raise Interrupt()
        return original(out_dir, state)

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", save)
        with pytest.raises(Interrupt):
            run_population([_job(tmp_path, f"run{k}", *v) for k, v in enumerate(variants)])
    tasks = [torch.load(tmp_path / f"run{k}" / "checkpoint.pt", weights_only=False)["next_task"] for k in range(3)]
    assert tasks == [2, 2, 1]
    infos = run_population([_job(tmp_path, f"run{k}", *v) for k, v in enumerate(variants)])
    for k in range(3):
        assert (tmp_path / f"run{k}" / "metrics.csv").read_bytes() == (tmp_path / f"ref{k}" / "metrics.csv").read_bytes()
        assert infos[k]["status"] == "completed" and infos[k]["resumes"] == 1
        assert infos[k]["member_index"] == k and infos[k]["population_size"] == 3


@pytest.mark.slow
def test_kill_minus_9_then_same_command_resumes(tmp_path, mnist_root):
    env = {**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}
    args = ["num_tasks=8", "dataset.images_per_task=1500", "checkpoint_seconds=0", "metrics_flush_seconds=0",
            "progress_bar=false"]

    def command(folder):
        return [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={tmp_path / folder}"]

    subprocess.run(command("ref"), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(command("run"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        metrics = tmp_path / "run" / "metrics.csv"
        if metrics.exists() and metrics.read_text().count(",accuracy,") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "running"
    done = subprocess.run(command("run"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "completed" and info["resumes"] == 1
    assert _metrics(tmp_path / "run") == _metrics(tmp_path / "ref")


LEARNER_VARIANTS = [
    ("learner=cbp", "learner.replacement_rate=0.05", "learner.maturity_threshold=20"),
    # rho * #eligible = 0.005 * 100 = 0.5 < 1: the coin branch (asserted below), so the coin stream is in use
    ("learner=cbp", "learner.replacement_rate=0.005", "learner.maturity_threshold=20", "learner.accumulate=false",
     "learner.util_type=random"),
    ("learner=adapted", "learner.rho_low=0.05", "learner.rho_high=0.02", "learner.maturity_threshold=20"),
    # per_pass: the maturity schedules of each pass's clock are rebuilt from the restored ages
    ("learner=adapted", "learner.schedule=per_pass", "learner.rho_low=[0.05,0,0.02]", "learner.rho_high=[0.02,0.05,0.03]",
     "learner.maturity_threshold=20"),
    # [P]'s two-pass CBP: the high pass's accumulator survives
    ("learner=cbp", "learner.replacement_rate=0.03", "learner.high_replacement_rate=0.013", "learner.maturity_threshold=20",
     "learner.reinit=no_gain", "learner.util_type=contribution"),
    ("learner=redo", "learner.reset_period=50"),
    ("learner=shrink_perturb",),
    ("learner=shrink_perturb", "learner.mode=toward_init"),
    ("learner=cbp", "optimizer=adam", "learner.replacement_rate=0.05", "learner.maturity_threshold=20"),
    ("learner=l2", "optimizer.momentum=0.9"),
]


@pytest.mark.slow
@pytest.mark.parametrize("variant", LEARNER_VARIANTS, ids=lambda v: " ".join(v))
@pytest.mark.parametrize("backend", ["population", "reference"])
def test_every_learner_and_optimizer_resumes_exactly(tmp_path, mnist_root, monkeypatch, variant, backend,
                                                     coin_draws):
    """Learner state (ages, utilities, accumulators, maturity schedule, generators, moments) survives."""
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    jobs = lambda prefix: [_job(tmp_path, f"{prefix}{k}", *variant, f"seed={k}", f"backend={backend}",
                                "dataset.images_per_task=100") for k in range(2)]
    run_population(jobs("ref"))
    with monkeypatch.context() as m:
        _interrupt_at(m, task_calls=3)
        with pytest.raises(Interrupt):
            run_population(jobs("run"))
    coin_draws.clear()
    run_population(jobs("run"))
    if "learner.accumulate=false" in variant:  # the resumed part flipped coins: the checkpoint carried the stream
        assert len(coin_draws) > 100
    for k in range(2):
        assert _metrics(tmp_path / f"run{k}") == _metrics(tmp_path / f"ref{k}")
