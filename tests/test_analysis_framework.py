"""multirun_analysis on runs the framework itself wrote (smoke size, real MNIST)."""

import csv

import pytest

from conftest import compose_config
from multirun_analysis import best, condition_summaries, load_runs
from plasticity_lab.run import MemberJob, run_population


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mnist_root):
    import os

    os.environ["PLASTICITY_LAB_DATA"] = str(mnist_root)
    root = tmp_path_factory.mktemp("sweep")
    for learner, steps in (("bp", ("0.01", "0.001")), ("l2", ("0.01",))):
        jobs = [MemberJob(compose_config("debug=smoke", f"learner={learner}", f"seed={seed}",
                                         f"optimizer.step_size={alpha}"),
                          root / f"{learner}-{alpha}-{seed}", {"learner": learner})
                for alpha in steps for seed in (0, 1)]
        run_population(jobs)
    # one failed run: analysis must report and exclude it
    bad = MemberJob(compose_config("debug=smoke", "seed=9", "dataset.download=false", "dataset.root=/nonexistent"),
                    root / "failed", {"learner": "bp"})
    os.environ["PLASTICITY_LAB_DATA"] = "/nonexistent"
    with pytest.raises(RuntimeError):
        run_population([bad])
    os.environ["PLASTICITY_LAB_DATA"] = str(mnist_root)
    return root


def _accuracies(folder):
    with open(folder / "metrics.csv") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "accuracy"]


@pytest.mark.data
def test_load_runs_reads_framework_output(sweep):
    df = load_runs(sweep)
    assert df["run_id"].nunique() == 6
    assert [e["status"] for e in df.attrs["excluded"]] == ["failed"]
    assert {"choice.learner", "optimizer.step_size", "seed"} <= set(df.columns)
    assert {"accuracy", "loss", "effective_rank", "weight_magnitude"} <= set(df["metric"])
    assert set(df.loc[df["metric"] == "accuracy", "task"]) == {0, 1}


@pytest.mark.data
def test_summary_and_best_match_the_metrics_files(sweep):
    df = load_runs(sweep)
    summary = condition_summaries(df)
    for alpha in (0.01, 0.001):
        row = summary[(summary["choice.learner"] == "bp") & (summary["optimizer.step_size"] == alpha)].iloc[0]
        per_seed = [sum(_accuracies(sweep / f"bp-{alpha}-{s}")) / 2 for s in (0, 1)]
        assert row["mean_accuracy"] == pytest.approx(sum(per_seed) / 2)
    winner = best(df, by="mean_accuracy")
    top = summary.sort_values("mean_accuracy", ascending=False).iloc[0]
    assert f"optimizer.step_size={top['optimizer.step_size']}" in winner.overrides
