"""The ``logger`` group (plasticity_lab/loggers.py): TensorBoard event files read back with
tensorboard's own reader (EventAccumulator), W&B offline runs read back with wandb's own reader
of its run file (wandb.sdk.internal.datastore); one logger per member of a population; a missing
package names its extra.

The runs are bit-flipping regression at smoke size (no data files needed) with CBP, so the rows
include per-layer metrics (units_reset), probes and ``period_error`` (its own step: the period).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from conftest import ROOT, compose_config, optional_package
from plasticity_lab.config import ConfigError, parse_config
from plasticity_lab.run import MemberJob, run_population

REGRESSION = ["dataset=bit_flipping", "network_depth=width_5_depth_6", "debug=smoke", "dataset.flip_after=100",
              "learner=cbp", "learner.replacement_rate=0.01"]
CHOICES = {"learner": "cbp", "method": None, "dataset": "bit_flipping"}


def csv_rows(folder: Path) -> dict[tuple[str, int], float]:
    """metrics.csv as {(tag, task): value}, tags as the loggers name them (``metric/layer_<l>``)."""
    with open(folder / "metrics.csv") as f:
        return {(r["metric"] + (f"/layer_{r['layer']}" if r["layer"] else ""), int(r["task"])): float(r["value"])
                for r in csv.DictReader(f)}


def train_members(tmp_path, *overrides, seeds=(0, 1), population_id="pop-7"):
    jobs = [MemberJob(compose_config(*REGRESSION, f"seed={s}", *overrides), tmp_path / f"m{s}", dict(CHOICES))
            for s in seeds]
    infos = run_population(jobs, population_id=population_id)
    assert all(i["status"] == "completed" for i in infos)
    return [j.out_dir for j in jobs], infos


def tensorboard_scalars(log_dir: Path) -> tuple[dict[tuple[str, int], list[float]], object]:
    """{(tag, step): [values]} of a TensorBoard log folder, and the accumulator."""
    optional_package("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    out: dict[tuple[str, int], list[float]] = {}
    for tag in ea.Tags()["scalars"]:
        for e in ea.Scalars(tag):
            out.setdefault((tag, e.step), []).append(e.value)
    return out, ea


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline, with its settings and caches in the test's folder (never the network)."""
    optional_package("wandb", "wandb")
    for var, sub in (("WANDB_CONFIG_DIR", "wandb_config"), ("WANDB_CACHE_DIR", "wandb_cache"),
                     ("WANDB_DATA_DIR", "wandb_data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def wandb_records(run_file: Path) -> list:
    """Every record of a W&B run file (``run-<id>.wandb``), read with wandb's own reader."""
    try:
        from wandb.sdk.internal import datastore
    except ImportError:
        pytest.fail("wandb.sdk.internal.datastore is missing: wandb >= 0.30 has no reader of its run files "
                    "(the dev extra pins wandb<0.30)")
    from wandb.proto import wandb_internal_pb2

    ds = datastore.DataStore()
    ds.open_for_scan(str(run_file))
    records = []
    while (data := ds.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        records.append(record)
    return records


def wandb_run(folder: Path) -> dict:
    """The one offline W&B run of a run folder: its run record, history rows, metric definitions
    and final summary."""
    (run_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    out = {"file": run_file, "history": [], "metrics": {}, "summary": {}}

    def items(entries):  # a key with "/" is stored as nested_key
        return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in entries
                if i.key or i.nested_key}

    for rec in wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"] = items(rec.run.config.update)
        elif kind == "history":
            out["history"].append(items(rec.history.item))
        elif kind == "metric" and rec.metric.name:
            out["metrics"][rec.metric.name] = rec.metric.step_metric
        elif kind == "summary":
            out["summary"].update(items(rec.summary.update))
    return out


# --------------------------------------------------------------------------- TensorBoard
def test_tensorboard_has_every_row_the_config_and_the_tags_of_each_member(tmp_path):
    folders, infos = train_members(tmp_path, "logger=tensorboard")
    dirs = set()
    for folder, info, seed in zip(folders, infos, (0, 1)):
        (event_file,) = (folder / "tensorboard").glob("events.out.tfevents.*")
        dirs.add(event_file.parent)
        scalars, ea = tensorboard_scalars(folder / "tensorboard")
        rows = csv_rows(folder)
        assert {"error", "period_error", "units_reset/layer_1", "dead_units/layer_1"} <= {t for t, _ in rows}
        logged = {k: v for k, v in scalars.items() if k[0] != "mean_error"}
        assert set(logged) == set(rows)  # every row of metrics.csv, nothing else, each once
        for key, value in rows.items():
            assert logged[key] == [pytest.approx(value, rel=1e-6, abs=1e-30)], key
        assert scalars[("mean_error", 2)] == [pytest.approx(info["mean_error"], rel=1e-6)]
        assert max(t for (tag, t) in rows if tag == "period_error") == 3  # 400 steps / 100: periods 0..3
        from tensorboard.plugins.hparams import plugin_data_pb2

        content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = dict(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams)
        assert hparams["seed"].number_value == seed
        assert hparams["learner.replacement_rate"].number_value == pytest.approx(0.01)
        assert hparams["dataset.name"].string_value == "bit_flipping"
        assert (hparams["run.method"].string_value, hparams["run.population"].string_value) == ("cbp", "pop-7")
        (text,) = ea.Tensors("tags/text_summary")
        assert text.tensor_proto.string_val[0].decode() == f"method=cbp, seed={seed}, population=pop-7"
    assert len(dirs) == 2  # one logger per member


def test_tensorboard_absolute_log_dir_gets_the_run_folder_below_it(tmp_path):
    (folder,), _ = train_members(tmp_path, f"logger=tensorboard", f"logger.tensorboard.log_dir={tmp_path / 'tb'}",
                                 seeds=(3,))
    expected = tmp_path / "tb" / Path(os.path.abspath(folder)).relative_to("/")
    assert list(expected.glob("events.out.tfevents.*")) and not (folder / "tensorboard").exists()
    scalars, _ = tensorboard_scalars(expected)
    assert scalars[("error", 1)] == [pytest.approx(csv_rows(folder)[("error", 1)], rel=1e-6)]


@pytest.mark.slow
def test_tensorboard_resumed_run_hides_what_the_killed_process_wrote_after_its_checkpoint(tmp_path):
    """Killed between a task's metrics.csv and run.json (its TensorBoard file already flushed), then
    resumed from the checkpoint at that task's start: every tag holds each task once, as metrics.csv."""
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), *REGRESSION, "num_tasks=5", "checkpoint_seconds=0",
           "metrics_flush_seconds=0", "logger=tensorboard", f"hydra.run.dir={run}"]
    # flush passes: a checkpoint's and a task's per task; the 6th is task 2's (checkpoint at its start)
    killed = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PLASTICITY_LAB_FAULT": "flush:6"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    shutil.copytree(run / "tensorboard", tmp_path / "before")
    before, _ = tensorboard_scalars(tmp_path / "before")
    assert ("error", 2) in before  # the killed process wrote task 2, after the checkpoint it resumes from
    resumed = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["resumes"] == 1
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    after, _ = tensorboard_scalars(run / "tensorboard")
    rows = csv_rows(run)
    logged = {k: v for k, v in after.items() if k[0] != "mean_error"}
    assert set(logged) == set(rows)
    for key, value in rows.items():
        assert logged[key] == [pytest.approx(value, rel=1e-6, abs=1e-30)], key  # once each, not twice


# --------------------------------------------------------------------------- W&B
def test_wandb_offline_run_of_each_member_holds_config_tags_rows_and_summary(tmp_path, wandb_offline):
    folders, infos = train_members(tmp_path, "logger=wandb", "logger.wandb.mode=offline",
                                   "logger.wandb.tags=[grid]")
    ids = set()
    for folder, info, seed in zip(folders, infos, (0, 1)):
        run = wandb_run(folder)
        ids.add(run["run"].run_id)
        assert run["run"].project == "plasticity_lab"
        assert list(run["run"].tags) == ["method=cbp", f"seed={seed}", "population=pop-7", "grid"]
        assert run["run"].display_name == f"{folder.parent.name}/{folder.name}"
        config = run["config"]
        assert config["seed"] == seed and config["learner"]["name"] == "cbp"
        assert config["learner"]["replacement_rate"] == pytest.approx(0.01)
        assert config["run"]["population"] == "pop-7" and config["run"]["folder"] == str(folder.resolve())
        assert run["metrics"]["error"] == "task" and run["metrics"]["period_error"] == "period"
        assert run["metrics"]["units_reset/layer_1"] == "task"
        logged: dict[tuple[str, int], list[float]] = {}
        for row in run["history"]:
            axis = "period" if "period" in row else "task"
            for key, value in row.items():
                if not key.startswith("_") and key != axis:
                    logged.setdefault((key, row[axis]), []).append(value)
        rows = csv_rows(folder)
        assert set(logged) == set(rows)
        for key, value in rows.items():
            assert logged[key] == [pytest.approx(value, rel=1e-12, abs=1e-300)], key
        assert run["summary"]["status"] == "completed"
        assert run["summary"]["mean_error"] == pytest.approx(info["mean_error"], rel=1e-12)
    assert len(ids) == 2  # one W&B run per member


# --------------------------------------------------------------------------- settings
def _with(cfg, key, value):
    with open_dict(cfg):
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def test_a_missing_package_names_its_extra_before_anything_runs(monkeypatch):
    import plasticity_lab.loggers as loggers

    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^logger\.wandb: needs the wandb package.*pip install '\.\[wandb\]'"):
        parse_config(compose_config("logger=wandb"))
    assert parse_config(compose_config("logger=tensorboard")).logger[0][0] == "tensorboard"


@pytest.mark.parametrize("key, value, message", [
    ("logger.wandb.projct", "x", r"^logger\.wandb\.projct: unknown key"),
    ("logger.wandb.mode", "onlne", r"^logger\.wandb\.mode='onlne': must be one of \['online', 'offline', 'disabled'\]"),
    ("logger.wandb.tags", "grid", r"^logger\.wandb\.tags='grid': must be a list of non-empty strings"),
    ("logger.mlflow", {}, r"^logger\.mlflow: unknown logger; known: tensorboard, wandb"),
])
def test_bad_logger_settings_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_with(compose_config("logger=wandb"), key, value))


def test_the_default_is_no_logger_and_the_logger_never_decides_a_resume():
    from plasticity_lab.run_folder import config_record

    assert parse_config(compose_config()).logger == ()
    assert config_record(compose_config("logger=tensorboard")) == config_record(compose_config())


@pytest.mark.slow
def test_population_launcher_gives_each_member_its_own_loggers(tmp_path):
    """End to end: one population of three members (one process), three TensorBoard folders and three
    W&B runs, each tagged with the member's seed and the population."""
    optional_package("tensorboard", "tensorboard")
    optional_package("wandb", "wandb")
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_CONFIG_DIR": str(tmp_path / "wc"), "WANDB_CACHE_DIR": str(tmp_path / "wcache"),
           "WANDB_DATA_DIR": str(tmp_path / "wd")}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *REGRESSION, "seed=0,1,2",
                           "logger=tensorboard_wandb", "logger.wandb.mode=offline", "hydra/launcher=population",
                           "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = {d.name: json.loads((d / "run.json").read_text()) for d in sweep.iterdir() if (d / "run.json").exists()}
    assert len(infos) == 3 and len({i["population_id"] for i in infos.values()}) == 1
    assert all(i["population_size"] == 3 for i in infos.values())
    for name, info in infos.items():
        run = wandb_run(sweep / name)
        assert f"seed={info['seed']}" in run["run"].tags
        assert f"population={info['population_id']}" in run["run"].tags
        scalars, _ = tensorboard_scalars(sweep / name / "tensorboard")
        assert scalars[("error", 1)] == [pytest.approx(csv_rows(sweep / name)[("error", 1)], rel=1e-6)]
        assert not math.isnan(info["mean_error"])
