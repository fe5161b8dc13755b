"""Loading 1,000 runs of 500 tasks x 2 metrics takes seconds, not minutes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from multirun_analysis import condition_summaries, load_runs
from multirun_analysis.synthetic import write_run

N_RUNS, N_TASKS = 1_000, 500
LIMIT_S = 30.0  # generous: a few seconds on a 2-core machine, but CI machines are noisy


@pytest.mark.slow
def test_load_1000_runs(tmp_path):
    rng = np.random.default_rng(0)
    rates = (1e-3, 1e-4, 1e-5, 1e-6)
    for i in range(N_RUNS):
        cfg = {"seed": i, "num_tasks": N_TASKS,  # every run its own settings (equal ones would be one run twice)
               "learner": {"name": "cbp", "replacement_rate": rates[i % 4], "c_low": float(i // 20 % 10)},
               "network": {"width": 100, "depth": 3, "activation": "relu"}}
        write_run(tmp_path / "multirun" / f"{i // 100}" / f"{i}", cfg,
                  {"accuracy": rng.random(N_TASKS), "loss": rng.random(N_TASKS)},
                  choices={"learner": "cbp", "activation": "relu"})
    start = time.perf_counter()
    df = load_runs(tmp_path / "multirun")
    elapsed = time.perf_counter() - start
    assert len(df) == N_RUNS * N_TASKS * 2
    assert df["run_id"].nunique() == N_RUNS
    assert df.attrs["condition_keys"] == ["learner.replacement_rate", "learner.c_low"]
    assert df["condition"].nunique() == 40
    summary = condition_summaries(df)
    assert summary["n_seeds"].sum() == N_RUNS
    print(f"loaded {N_RUNS} runs x {N_TASKS} tasks x 2 metrics in {elapsed:.2f} s")
    assert elapsed < LIMIT_S
