"""``make reproduce-<name>`` and ``make reproduction-report`` (plasticity_lab/reproduce.py,
multirun_analysis/reproduction/): the targets' table, their plans at every scale, the projected-time
printout, a smoke-size target end to end through make (runs, resume, report) and the generated
docs/REPRODUCTION.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import compose_config

from multirun_analysis.reproduction import document
from multirun_analysis.reproduction.rules import VERDICTS
from multirun_analysis.reproduction.targets import (PAPER_METHODS, PROVENANCE, REPORT_DIR, SCALES, TARGETS, TEST_SPLIT,
                                                   target)
from multirun_analysis.synthetic import write_run
from plasticity_lab import reproduce
from plasticity_lab.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
ISSUE_TARGETS = {"purice-main-relu", "purice-main-tanh", "purice-twisted", "purice-grid-relu", "purice-grid-tanh",
                 "jucas-relu", "dohare-scr", "bit-flipping"}


# ---------------------------------------------------------------- the table
def test_the_issue_targets_exist_at_every_scale_with_the_test_split_for_mnist():
    assert ISSUE_TARGETS <= set(TARGETS)
    for t in TARGETS.values():
        assert set(t.scales) == set(SCALES)
        for sweep in t.sweeps:
            assert (ROOT / "conf" / "experiment" / f"{sweep.preset}.yaml").is_file()
            mnist = not sweep.preset.startswith(("dohare/slowly", "jucas/bit_flipping"))
            assert (TEST_SPLIT in sweep.overrides) == mnist, sweep
            assert t.sweep_dir(sweep, "full", "r") == Path("r") / t.name / "full" / sweep.label
        assert any(o.startswith("num_tasks=") for o in t.scales["reduced"])
        assert "debug=smoke" in t.scales["smoke"]
    with pytest.raises(KeyError, match="targets: purice-main-relu"):
        target("nope")


@pytest.mark.parametrize("name", ["purice-main-relu", "purice-main-tanh", "jucas-relu"])
def test_the_main_targets_run_the_papers_methods_only_though_their_presets_sweep_two_more(name, tmp_path):
    """The presets also sweep L2 Init and UPGD (rows the papers did not run); the targets reproduce the
    papers: an explicit method sweep lists exactly the paper's methods, in the preset's order, so every
    job is the paper's method and seed it was before those rows were added (its number included)."""
    t = TARGETS[name]
    (sweep,) = t.sweeps
    methods = list(PAPER_METHODS[sweep.preset])
    preset = yaml.safe_load((ROOT / "conf" / "experiment" / f"{sweep.preset}.yaml").read_text())
    swept = preset["hydra"]["sweeper"]["params"]["method"].split(",")
    assert swept == methods + ["l2_init", "upgd"]
    assert f"method={','.join(methods)}" in t.overrides(sweep, "full")
    assert not any("l2_init" in d or "upgd" in d or "UPGD" in d for d in t.differences)
    plan = reproduce.plan_sweep(t, sweep, "smoke", tmp_path)
    planned = {j: s for p in plan.populations for j, s in zip(p.jobs, p.settings)}
    assert sorted(planned) == list(range(3 * len(methods)))
    for num, s in planned.items():
        method, seed = methods[num // 3], num % 3
        alone = parse_config(compose_config(f"experiment={sweep.preset}", f"method={method}", f"seed={seed}",
                                            *t.overrides(sweep, "smoke")[:1], "debug=smoke"))
        assert (s.seed, s.learner, s.optimizer) == (alone.seed, alone.learner, alone.optimizer), (num, method)


def test_the_makefile_has_one_rule_for_every_target():
    makefile = (ROOT / "Makefile").read_text()
    assert "reproduce-%: install" in makefile
    assert "plasticity_lab.reproduce run $* --scale $(SCALE)" in makefile
    assert not any(f"reproduce-{name}:" in makefile for name in TARGETS)  # no hand-written recipes
    assert "multirun_analysis reproduction reproduction --out docs" in makefile


def test_makespan_deals_populations_in_order_to_the_free_process():
    assert reproduce.makespan([], 2) == 0.0
    assert reproduce.makespan([5, 3, 3], 1) == 11
    assert reproduce.makespan([5, 3, 3], 2) == 6  # 5 | 3 + 3
    assert reproduce.makespan([3, 3, 5], 2) == 8  # 3 + 5 | 3: order matters, as in Pool.map
    assert reproduce.makespan([4, 4], 8) == 4


def test_job_ranges():
    assert reproduce._jobs([0, 1, 2, 3, 9]) == "#0-3,9"
    assert reproduce._jobs([4, 5]) == "#4,5"
    assert reproduce._jobs([7]) == "#7"


# ------------------------------------------------------------ plan / project
FULL = {  # runs, tasks, examples per task: what the papers ran (SPEC 5), on the test split for MNIST
    "purice-main-relu": (15, 500, 10_000), "purice-main-tanh": (15, 500, 10_000), "purice-twisted": (21, 500, 10_000),
    "purice-grid-relu": (81, 500, 10_000), "purice-grid-tanh": (81, 500, 10_000), "jucas-relu": (30, 1100, 10_000),
    "jucas-tanh-selu": (60, 1100, 10_000), "dohare-scr": (24, 50, 20_000), "bit-flipping": (132, 75, 40_000),
}


def _settings_of(plans):
    return [s for plan in plans for p in plan.populations for s in p.settings]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FULL))
def test_every_target_plans_the_paper_runs_at_full_scale_and_the_same_conditions_reduced(tmp_path, name):
    t = TARGETS[name]
    full = [reproduce.plan_sweep(t, sw, "full", tmp_path) for sw in t.sweeps]
    runs, tasks, examples = FULL[name]
    settings = _settings_of(full)
    assert len(settings) == runs
    assert {s.num_tasks for s in settings} == {tasks}
    assert {reproduce.examples_per_task(s) for s in settings} == {examples}
    assert sum(p.network_steps for p in full) == runs * tasks * examples
    for s in settings:
        if not s.dataset.is_regression:
            assert s.dataset.split == "test"
    if "grid" in name:  # 1 seed, the strategy's rates fixed
        assert {s.seed for s in settings} == {0}
        assert len({(s.learner.rho_low, s.learner.rho_high) for s in settings}) == 1
    reduced = [reproduce.plan_sweep(t, sw, "reduced", tmp_path) for sw in t.sweeps]
    reduced_settings = _settings_of(reduced)
    assert len(reduced_settings) == runs
    assert max(s.num_tasks for s in reduced_settings) < tasks
    strip = lambda s: (s.seed, s.learner, s.optimizer, s.network, s.dataset)  # noqa: E731
    assert sorted(map(repr, map(strip, reduced_settings))) == sorted(map(repr, map(strip, settings)))
    assert not any(tmp_path.iterdir())  # planning writes nothing


@pytest.mark.data
def test_the_projection_prints_network_steps_processes_and_wall_time_before_anything_runs(tmp_path, mnist_root,
                                                                                          monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    lines = []
    status = reproduce.run_target("purice-main-relu", "smoke", tmp_path, dry_run=True, calibration_steps=60,
                                  log=lines.append)
    text = "\n".join(lines)
    assert status == 0
    populations = int(re.search(r"15 runs x 2 tasks x 200 examples \(batch 1\): 6,000 network-steps in (\d+) "
                                r"population\(s\)", text).group(1))
    assert re.search(r"bp on 784 -> 3 x 100 relu -> 10, \w+ backend, \d+ member\(s\): [\d,]+ network-steps/s", text)
    assert len(re.findall(r"population of jobs #\S+: .* at [\d,]+/s = ", text)) == populations
    assert f"total: 6,000 network-steps; processes: {min(os.cpu_count(), populations)} at a time" in text
    assert re.search(r"projected wall time: [\d.]+ (s|min)", text)
    assert text.index("projected wall time") < text.index("dry run: nothing trained")
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------- end to end
def _make(*args, cwd=ROOT, timeout=900):
    env = {**os.environ}
    env.pop("MAKEFLAGS", None)
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.data
def test_a_smoke_target_runs_end_to_end_through_make_resumes_and_feeds_the_document(tmp_path, mnist_root):
    root = tmp_path / "reproduction"
    args = f"ARGS=--root {root} --calibration-steps 50"
    first = _make("reproduce-purice-main-relu", "SCALE=smoke", args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout + first.stderr
    assert "total: 6,000 network-steps; processes:" in out
    assert out.index("projected wall time") < out.index("running main_relu")
    scale_dir = root / "purice-main-relu" / "smoke"
    runs = sorted((scale_dir / "main_relu").glob("*/run.json"))
    assert len(runs) == 15
    assert {json.loads(r.read_text())["status"] for r in runs} == {"completed"}
    assert {json.loads(r.read_text())["choices"]["experiment"] for r in runs} == {"purice/main_relu"}
    assert (scale_dir / REPORT_DIR / "report.md").is_file()
    record = json.loads((scale_dir / PROVENANCE).read_text())
    assert [i["status"] for i in record["invocations"]] == ["completed"]
    assert record["invocations"][0]["network_steps"] == 6000

    again = _make("reproduce-purice-main-relu", "SCALE=smoke", args)  # the same command resumes: nothing retrains
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "every member has already finished" in again.stdout + again.stderr
    assert [json.loads(r.read_text())["end_time"] for r in runs] == [
        json.loads(r.read_text())["end_time"] for r in sorted((scale_dir / "main_relu").glob("*/run.json"))]
    assert len(json.loads((scale_dir / PROVENANCE).read_text())["invocations"]) == 2

    docs = tmp_path / "docs"
    result = subprocess.run([sys.executable, "-m", "multirun_analysis", "reproduction", str(root), "--out", str(docs)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    text = (docs / "REPRODUCTION.md").read_text()
    section = text[text.index("## `purice-main-relu`"):text.index("## `purice-main-tanh`")]
    assert "| Scale | **smoke**" in section
    assert "| Tasks per run | 2 |" in section and "| Examples per task | 200 " in section
    backends = sorted({json.loads(r.read_text())["backend"] for r in runs})  # as the runs recorded it
    assert "split **test**" in section and f"| Backend / device | {', '.join(backends)} / cpu |" in section
    assert ("experiment=purice/main_relu dataset.split=test method=bp,l2,cbp,adapted_relu,adapted_tanh debug=smoke "
            "hydra/launcher=population") in section
    claims = re.findall(r"^\| \[P\] .* \| \*\*(.+?)\*\* \|", section, re.M)
    assert len(claims) == 5 and set(claims) <= set(VERDICTS) - {"not checked"}
    assert "**Not run.**" in text[text.index("## `purice-main-tanh`"):]
    for png in (docs / "reproduction").glob("*.png"):
        assert png.stat().st_size <= document.MAX_FIGURE_BYTES


@pytest.mark.slow
def test_the_regression_target_runs_both_sweeps_and_its_claims_are_judged(tmp_path):
    root = tmp_path / "reproduction"
    lines = []
    assert reproduce.run_target("dohare-scr", "smoke", root, calibration_steps=30, log=lines.append) == 0
    scale_dir = root / "dohare-scr" / "smoke"
    assert len(list((scale_dir / "slowly_changing_regression").glob("*/run.json"))) == 9
    assert len(list((scale_dir / "slowly_changing_regression_cbp").glob("*/run.json"))) == 15
    assert "total: 9,600 network-steps" in "\n".join(lines)
    path = document.build_document(root, tmp_path / "docs")
    section = path.read_text().split("## `dohare-scr`")[1].split("\n## ")[0]
    verdicts = re.findall(r"^\| \[D\] .* \| \*\*(.+?)\*\* \|", section, re.M)
    assert len(verdicts) == 3 and "not checked" not in verdicts
    assert "| Bins per run | 2 |" in section and "| Steps per task (bin) | 200 |" in section


# ------------------------------------------------------------- the document
def _synthetic_target(root: Path, tasks: int = 40):
    """purice-main-relu at scale full, written as training writes runs, with 40 tasks in its config."""
    t = TARGETS["purice-main-relu"]
    folder = t.sweep_dir(t.sweeps[0], "full", root)
    rng = np.random.default_rng(0)
    for i, method in enumerate(["bp", "l2", "cbp", "adapted_relu", "adapted_tanh"]):
        for seed in range(3):
            cfg = {"seed": seed, "num_tasks": tasks, "learner": {"name": method},
                   "dataset": {"name": "permuted_mnist", "split": "test", "images_per_task": 10000, "subset": "fixed",
                               "shuffle_seed": 0}}
            write_run(folder / str(3 * i + seed), cfg,
                      {"accuracy": 0.8 + 0.01 * i + 0.005 * rng.standard_normal(tasks),
                       "effective_rank": {"1": np.full(tasks, 50.0 - i), "2": np.full(tasks, 40.0 - i)}},
                      choices={"method": method, "experiment": "purice/main_relu"})
    (folder / "multirun.yaml").write_text("hydra:\n  overrides:\n    hydra: [hydra/launcher=population]\n"
                                          "    task: [experiment=purice/main_relu, dataset.split=test]\n")
    (folder.parent / PROVENANCE).write_text(json.dumps({"target": t.name, "scale": "full", "invocations": [
        {"wall_seconds": 3600.0, "projected_seconds": 3000.0, "cpu_count": 2}]}))
    return t


def test_the_document_reports_what_ran_from_the_runs_and_lists_the_rest_as_not_run(tmp_path):
    root, docs = tmp_path / "reproduction", tmp_path / "docs"
    _synthetic_target(root)
    (docs / "reproduction").mkdir(parents=True)
    (docs / "reproduction" / "stale.png").write_bytes(b"old")
    text = document.build_document(root, docs).read_text()
    assert not (docs / "reproduction" / "stale.png").exists()  # regenerated whole
    section = text[text.index("## `purice-main-relu`"):text.index("## `purice-main-tanh`")]
    assert "| Tasks per run | 40 |" in section  # the runs' config, not the target's 500
    assert "| Scale | **full**" in section and "500 tasks x 10,000 MNIST training images" in section
    assert "| Examples per task | 10,000 (subset fixed, shuffle_seed 0) |" in section
    assert "| Seeds | 0, 1, 2 (3 per condition) |" in section
    assert "| Runs | 15 completed and loaded |" in section
    assert "| Differs from the paper | CBP's replacement rate is the preset's 1e-4" in section
    assert "| Network-steps trained | 6,000,000 |" in section  # 15 runs x 40 tasks x 10,000 steps (metrics' step)
    assert "the make target ran 1 time(s), 1 h 00 min in all, on 2 CPU core(s) (its projection: 50 min 00 s)" in section
    assert "python train.py -m experiment=purice/main_relu dataset.split=test hydra/launcher=population" in section
    assert "MNIST **test** split" in section and "sample std, ddof=1" in section
    assert "![purice-main-relu: online accuracy" in section and "![purice-main-relu: effective rank" in section
    rows = re.findall(r"^\| \[P\] (.*?) \| (.*?) \| \*\*(.+?)\*\* \| (.*) \|$", section, re.M)
    assert len(rows) == 5 and all(v in VERDICTS for _, _, v, _ in rows)
    assert all(re.search(r"\d", why) for *_, why in rows)  # every verdict states its numbers
    for other in ("purice-main-tanh", "jucas-relu", "bit-flipping"):
        part = text.split(f"## `{other}`")[1].split("\n## ")[0]
        assert "**Not run.**" in part and f"make reproduce-{other} SCALE=full" in part
    assert "| [`purice-main-relu`](#purice-main-relu) |" in text and "| full |" in text
    assert "## How the verdicts are computed" in text and "## How to regenerate" in text
    for png in (docs / "reproduction").glob("*.png"):
        assert png.stat().st_size <= document.MAX_FIGURE_BYTES
    assert sorted(p.name for p in (docs / "reproduction").iterdir()) == [
        "purice-main-relu-accuracy.png", "purice-main-relu-effective_rank.png"]


def test_the_document_prefers_the_largest_scale_and_honours_a_chosen_one(tmp_path):
    root = tmp_path / "r"
    t = _synthetic_target(root)
    smoke = t.sweep_dir(t.sweeps[0], "smoke", root) / "0"
    write_run(smoke, {"seed": 0, "num_tasks": 2}, {"accuracy": [0.1, 0.2]}, choices={"method": "bp"})
    assert document.available_scale(t, root) == "full"
    assert document.available_scale(t, root, "smoke") == "smoke"
    assert document.available_scale(t, root, "reduced") is None
    assert document.available_scale(TARGETS["jucas-relu"], root) is None


def test_the_analysis_cli_writes_the_document(tmp_path):
    from multirun_analysis.cli import main

    root, docs = tmp_path / "reproduction", tmp_path / "docs"
    _synthetic_target(root)
    assert main(["reproduction", str(root), "--out", str(docs)]) == 0
    assert (docs / "REPRODUCTION.md").is_file()


def test_figures_stay_small_at_the_papers_length(tmp_path):
    """[J]'s 10 conditions x 3 seeds x 1,100 noisy tasks: the embedded PNG stays under 100 KB."""
    from multirun_analysis import load_runs, plots

    rng = np.random.default_rng(0)
    methods = ["cbp", *(f"cbp_layer_{k}" for k in range(1, 6)), "cbp_layers_2_to_L", "cbp_none", "bp", "l2"]
    for i, m in enumerate(methods):
        for seed in range(3):
            accuracy = 0.9 - 0.02 * i - np.linspace(0, 0.05 * (i % 3), 1100) + 0.01 * rng.standard_normal(1100)
            write_run(tmp_path / f"{m}-{seed}", {"seed": seed, "learner": {"name": m}}, {"accuracy": accuracy},
                      choices={"method": m, "experiment": "jucas/relu"})
    path = document._save(plots.plot_curves(load_runs(tmp_path), "accuracy"), tmp_path / "fig.png")
    assert 5_000 < path.stat().st_size <= document.MAX_FIGURE_BYTES
