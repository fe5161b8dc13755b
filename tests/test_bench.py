"""`make bench` runs end to end and reports every figure it promises (tiny sizes: no timing asserted)."""

import pytest

from plasticity_lab import bench


@pytest.mark.data
def test_bench_reports_engine_learners_and_ratios(capsys, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    results = bench.main(["--steps", "120", "--repeats", "1", "--population", "1", "2", "--learners", "cbp",
                          "--no-probes"])
    out = capsys.readouterr().out
    assert "real MNIST" in out and "naive nn.Module loop" in out and "engine K=2" in out
    assert "x bp time" in out and "naive per-example cbp script" in out
    assert set(results) == {"naive", "engine_K1", "engine_K2", "learner_bp_K16", "learner_cbp_K16", "naive_cbp"}
    assert all(v > 0 for v in results.values())
