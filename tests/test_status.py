"""Live status of a sweep: run.json's progress and ETA (plasticity_lab/recording.py) and
``python -m multirun_analysis status`` (multirun_analysis/status.py): every state a run can be in,
the lock probe (which never stops a start), SLURM states from sacct or, without accounting, from
squeue and scontrol (fake commands here; the real cluster in the ``slurm`` tests below)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, wait_until as _until
from multirun_analysis.status import lock_holder, render, slurm_states, submitted_jobs, sweep_status
from multirun_analysis.synthetic import write_run
from plasticity_lab import recording
from plasticity_lab.recording import RunRecorder
from plasticity_lab.run_folder import RunFolderError, RunLock

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)


def _info(folder: Path, **fields) -> None:
    info = json.loads((folder / "run.json").read_text())
    info.update(fields)
    (folder / "run.json").write_text(json.dumps(info))


class Holder:
    """Another process holding ``folder/run.lock`` (exclusively, as a training run; or shared, as a probe)."""

    def __init__(self, folder: Path, shared: bool = False, seconds: float = 60):
        code = textwrap.dedent(f"""
            import fcntl, json, os, sys, time
            fd = os.open({str(folder / 'run.lock')!r}, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.{'LOCK_SH' if shared else 'LOCK_EX'})
            if not {shared}:
                os.ftruncate(fd, 0); os.write(fd, json.dumps({{"pid": os.getpid(), "host": "node7", "since": "x"}}).encode())
            print("locked", flush=True)
            time.sleep({seconds})
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def sweep(tmp_path):
    """A sweep folder with a run in every state."""
    root = tmp_path / "sweep"
    acc = [0.9, 0.8, 0.7]
    write_run(root / "0", {"seed": 0, "num_tasks": 3}, {"accuracy": acc})
    _info(root / "0", last_accuracy=0.7)
    write_run(root / "1", {"seed": 1, "num_tasks": 10}, {"accuracy": acc}, status="running")
    _info(root / "1", last_accuracy=0.7, eta_time=(NOW + dt.timedelta(minutes=14, seconds=5)).isoformat())
    write_run(root / "2", {"seed": 2, "num_tasks": 10}, {"accuracy": acc}, status="running")
    (root / "2" / "run.lock").write_text('{"pid": 1, "host": "gone", "since": "x"}')
    write_run(root / "3", {"seed": 3, "num_tasks": 10}, {"accuracy": acc[:2]}, status="failed",
              error="Traceback ...\nRuntimeError: CUDA out of memory")
    write_run(root / "4", {"seed": 4, "num_tasks": 10}, {"error": [1.0, 0.5]}, status="diverged", diverged_at_task=1)
    _info(root / "4", last_error=0.5)
    write_run(root / "10", {"seed": 5, "num_tasks": 10}, {"accuracy": acc}, status="running")  # no run.lock at all
    (root / "5").mkdir()
    (root / "5" / "run.json").write_text('{"status": "runn')  # a damaged copy
    holder = Holder(root / "1")
    yield root
    holder.stop()


def test_one_line_per_run_in_every_state_and_a_summary(sweep):
    lines = render(sweep_status(sweep, slurm=False), now=NOW)
    by_name = {line.split()[0]: line for line in lines[:-1]}
    assert list(by_name) == ["0", "1", "2", "3", "4", "5", "10"]
    assert by_name["0"].split()[1:4] == ["completed", "3/3", "tasks"] and "acc 70.00%" in by_name["0"]
    local = (NOW + dt.timedelta(minutes=14, seconds=5)).astimezone().strftime("%H:%M")
    assert by_name["1"].split()[1:3] == ["running", "3/10"]
    assert f"ETA 14 min 05 s ({local})" in by_name["1"] and "process" in by_name["1"] and "on node7" in by_name["1"]
    assert by_name["2"].split()[1] == "stale"
    assert "no process holds run.lock: killed or stopped (re-run the same command to resume it)" in by_name["2"]
    assert "ETA" not in by_name["2"]
    assert by_name["3"].split()[1] == "failed" and by_name["3"].endswith("failed: RuntimeError: CUDA out of memory")
    assert by_name["4"].split()[1] == "diverged" and "error 0.5" in by_name["4"]
    assert by_name["4"].endswith("diverged at task 1")
    assert by_name["5"].split()[1] == "unreadable" and "run.json unreadable" in by_name["5"]
    assert by_name["10"].split()[1] == "stale" and "no run.lock" in by_name["10"]
    assert lines[-1] == (f"7 run(s): 1 running, 2 stale, 1 failed, 1 diverged, 1 completed, 1 unreadable; "
                         f"tasks 16/53 (30%); last to finish: ETA 14 min 05 s ({local})")


def test_the_command_prints_the_same(sweep):
    proc = subprocess.run([sys.executable, "-m", "multirun_analysis", "status", str(sweep), "--no-slurm"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 8 and proc.stdout.splitlines()[-1].startswith("7 run(s): 1 running, 2 stale")
    missing = subprocess.run([sys.executable, "-m", "multirun_analysis", "status", str(sweep / "nothing")],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "no such file" in missing.stderr


def test_the_lock_probe_never_stops_a_start_and_a_held_lock_still_refuses(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    probe = Holder(folder, shared=True, seconds=0.3)  # what the status does, for a moment (here a long one)
    try:
        lock = RunLock(folder).acquire()  # waits the probe out
    finally:
        probe.stop()
    assert lock_holder(folder)[0] is True  # flock is per open file: the probe sees this process's own lock too
    lock.release()
    trainer = Holder(folder)
    try:
        held, who = lock_holder(folder)
        assert held is True and who["host"] == "node7"
        start = time.monotonic()
        with pytest.raises(RunFolderError, match="is being trained by process"):
            RunLock(folder).acquire()
        assert 0.9 <= time.monotonic() - start < 10  # refused after the patience, not at once, not for ever
    finally:
        trainer.stop()
    assert lock_holder(folder)[0] is False


def test_run_json_carries_progress_and_an_eta_from_the_pace_after_start_up(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(recording.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    r = RunRecorder(tmp_path, {"num_tasks": 10, "tasks_completed": 0}, flush_seconds=0)
    r.start()
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["slurm_job_id"] == "77_3" and info.get("eta_time") is None and info["updated_time"]
    clock[0] += 100.0  # start-up and the first task: 100 s
    r.info["tasks_completed"] = 1
    r.flush()
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["seconds_per_task"] == 100.0  # only the first task so far: start-up included
    eta = dt.datetime.fromisoformat(info["eta_time"])
    assert abs((eta - dt.datetime.now(dt.timezone.utc)).total_seconds() - 900) < 5
    clock[0] += 20.0  # then 2 tasks in 20 s: 10 s per task, start-up left out
    r.info["tasks_completed"] = 3
    r.flush()
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["seconds_per_task"] == 10.0 and info["tasks_completed"] == 3
    eta = dt.datetime.fromisoformat(info["eta_time"])
    assert abs((eta - dt.datetime.now(dt.timezone.utc)).total_seconds() - 70) < 5
    r.finish("completed")
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["eta_time"] is None and info["status"] == "completed"


# --------------------------------------------------------------------------- SLURM, with fake commands
def _fake_slurm(bin_dir: Path, sacct: str | None, squeue: str = "", scontrol: dict | None = None) -> None:
    """Fake sacct / squeue / scontrol on PATH; sacct None: 'accounting storage is disabled'."""
    bin_dir.mkdir(exist_ok=True)
    def prints(text: str) -> str:
        return f"cat <<'END'\n{text.rstrip()}\nEND"

    scripts = {
        "sacct": prints(sacct) if sacct is not None else "echo 'Slurm accounting storage is disabled' >&2; exit 1",
        "squeue": prints(squeue),
        "scontrol": "case \"$4\" in\n" + "".join(f"  {job}) echo 'JobId={job} JobState={state} Reason=None';;\n"
                                                for job, state in (scontrol or {}).items())
                    + "  *) echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1;;\nesac",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


def test_slurm_states_from_sacct_where_there_is_accounting(tmp_path, monkeypatch):
    _fake_slurm(tmp_path / "bin", sacct="5_0|RUNNING\n5_1|CANCELLED by 0\n9|COMPLETED\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    assert slurm_states(["5_0", "5_1", "9"]) == ({"5_0": "RUNNING", "5_1": "CANCELLED", "9": "COMPLETED"}, "sacct")


def test_slurm_states_from_squeue_and_scontrol_without_accounting(tmp_path, monkeypatch):
    _fake_slurm(tmp_path / "bin", sacct=None, squeue="5_0 RUNNING\n5_1 PENDING\n6 RUNNING\n",
                scontrol={"4_0": "COMPLETED"})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    states, source = slurm_states(["5_0", "5_1", "4_0", "3"])
    assert states == {"5_0": "RUNNING", "5_1": "PENDING", "4_0": "COMPLETED"}  # 3: forgotten by SLURM
    assert source == "squeue and scontrol; sacct: no accounting here"


def test_a_slurm_sweep_shows_job_ids_states_requeues_and_jobs_without_runs(tmp_path, monkeypatch):
    root = tmp_path / "sweep"
    acc = [0.5, 0.6]
    for k, job in enumerate(("5_0", "5_1", "4_0", "3")):
        write_run(root / str(k), {"seed": k, "num_tasks": 9}, {"accuracy": acc}, status="running" if k < 3 else "completed")
        _info(root / str(k), slurm_job_id=job)
    holder = Holder(root / "0")
    for job in ("5", "5_0", "5_1", "8_0", "8_1", "4_0", "3"):  # 5/: an array's script folder; 8_*: not started
        (root / ".submitit" / job).mkdir(parents=True)
    assert submitted_jobs(root) == ["3", "4_0", "5_0", "5_1", "8_0", "8_1"]
    _fake_slurm(tmp_path / "bin", sacct=None, squeue="5_0 RUNNING\n5_1 PENDING\n8_0 PENDING\n8_1 PENDING\n",
                scontrol={"4_0": "RUNNING", "3": "COMPLETED"})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    try:
        lines = render(sweep_status(root), now=NOW)
    finally:
        holder.stop()
    assert len(lines) == 7
    assert lines[0].split()[:2] == ["0", "running"] and "slurm 5_0 RUNNING" in lines[0]
    assert lines[1].split()[:2] == ["1", "waiting"] and "slurm 5_1 PENDING" in lines[1]
    assert "its SLURM job is PENDING (requeued): it resumes when it starts" in lines[1]
    assert lines[2].split()[:2] == ["2", "starting"] and "slurm 4_0 RUNNING" in lines[2]
    assert lines[3].split()[:2] == ["3", "completed"] and "slurm 3 COMPLETED" in lines[3]
    assert [line.split()[:3] for line in lines[4:6]] == [["(no", "run", "yet)"]] * 2
    assert "pending" in lines[4] and "slurm 8_0 PENDING" in lines[4] and "slurm 8_1 PENDING" in lines[5]
    assert lines[-1] == ("4 run(s): 1 running, 1 starting, 1 waiting, 2 pending, 1 completed; tasks 8/36 (22%); "
                         "SLURM jobs (from squeue and scontrol; sacct: no accounting here): "
                         "1 COMPLETED, 3 PENDING, 2 RUNNING")


def test_without_slurm_commands_the_job_id_is_shown_with_unknown_state(tmp_path, monkeypatch):
    write_run(tmp_path / "0", {"seed": 0, "num_tasks": 2}, {"accuracy": [0.5, 0.5]})
    _info(tmp_path / "0", slurm_job_id="12")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (line, summary) = render(sweep_status(tmp_path), now=NOW)
    assert "slurm 12 (state unknown: no SLURM commands here)" in line and "SLURM" not in summary


# --------------------------------------------------------------------------- live
def _status(*paths) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "multirun_analysis", "status", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.data
def test_a_running_local_sweep_is_running_with_an_eta_then_stale_when_killed(tmp_path, mnist_root):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", "seed=0,1", "num_tasks=400",
                             "dataset.images_per_task=3000", "progress_bar=false", "metrics_flush_seconds=0",
                             "hydra/launcher=population", "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, env={**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def running():
            lines = _status(sweep) if sweep.is_dir() and any(sweep.glob("*/run.json")) else []
            ok = len(lines) == 3 and all(line.split()[1] == "running" and "ETA" in line for line in lines[:2])
            return ok and int(lines[0].split()[2].split("/")[0]) >= 3 and lines
        lines = _until(running, 240, "both runs running with an ETA")
        assert lines[-1].startswith("2 run(s): 2 running; tasks ") and "last to finish: ETA" in lines[-1]
        done = [int(line.split()[2].split("/")[0]) for line in lines[:2]]
        later = _until(lambda: (ls := _status(sweep)) and int(ls[0].split()[2].split("/")[0]) > done[0] and ls,
                       120, "progress")
        assert later[0].split()[2].endswith("/400")
    finally:
        proc.kill()  # the launcher; its worker dies with it (PR_SET_PDEATHSIG)
        proc.wait()
    lines = _until(lambda: (ls := _status(sweep)) and all(line.split()[1] == "stale" for line in ls[:2]) and ls,
                   60, "the killed runs to be stale")
    assert lines[-1].startswith("2 run(s): 2 stale")


def _squeue_jobs() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data
def test_a_population_slurm_sweep_on_the_cluster_pending_running_completed(slurm, tmp_path, mnist_root):
    """Two population_slurm jobs held back (--begin) are pending with no runs; released, their runs are
    running with their job ids in state RUNNING; at the end completed, COMPLETED. Where the cluster keeps
    no accounting (the CI cluster), the states come from squeue and scontrol."""
    sweep = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", "seed=0,1", "num_tasks=200", "dataset.images_per_task=5000",
         "progress_bar=false", "metrics_flush_seconds=0", "hydra/launcher=population_slurm",
         "hydra.launcher.max_members=1", "hydra.launcher.timeout_min=30",
         "+hydra.launcher.additional_parameters.begin=now+600", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env={**os.environ, "PLASTICITY_LAB_DATA": str(mnist_root)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        jobs = _until(lambda: len(submitted_jobs(sweep)) == 2 and submitted_jobs(sweep), 120, "two submitted jobs")
        _until(lambda: all(_squeue_jobs().get(j) == "PENDING" for j in jobs), 60, "the jobs in squeue")
        lines = _status(sweep)
        assert [line.split()[3] for line in lines[:2]] == ["pending"] * 2
        assert [f"slurm {j} PENDING" in line for j, line in zip(jobs, lines)] == [True, True]
        no_accounting = subprocess.run(["sacct", "-n", "-X"], capture_output=True, timeout=30).returncode != 0
        source = "squeue and scontrol; sacct: no accounting here" if no_accounting else "sacct"
        assert lines[-1] == f"0 run(s): 2 pending; SLURM jobs (from {source}): 2 PENDING"
        subprocess.run(["scontrol", "update", f"jobid={jobs[0].split('_')[0]}", "StartTime=now"], check=True, timeout=30)

        def running():
            ls = _status(sweep)
            hit = [line for line in ls[:-1] if line.split()[1] == "running" and "RUNNING" in line and "ETA" in line]
            return hit and ls
        lines = running_lines = _until(running, 300, "a run running in its SLURM job")
        hit = next(line for line in running_lines if line.split()[1] == "running")
        assert any(f"slurm {j} RUNNING" in hit for j in jobs)
        out, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, out[-3000:]
    lines = _status(sweep)
    assert [line.split()[:2] for line in lines[:2]] == [["0", "completed"], ["1", "completed"]]
    assert sorted(line.split("slurm ")[1].split()[0] for line in lines[:2]) == jobs
    assert all(line.split("slurm ")[1].split()[1] == "COMPLETED" for line in lines[:2])
    assert lines[-1] == f"2 run(s): 2 completed; tasks 400/400 (100%); SLURM jobs (from {source}): 2 COMPLETED"
