"""`make bench` runs end to end and reports every figure it promises (tiny sizes: no timing asserted)."""

import pytest

from plasticity_lab import bench


@pytest.mark.data
def test_bench_reports_engine_learners_and_ratios(capsys, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    results = bench.main(["--steps", "120", "--repeats", "1", "--population", "1", "2", "--learners", "cbp",
                          "--no-probes", "--no-kernel"])
    out = capsys.readouterr().out
    assert "real MNIST" in out and "naive nn.Module loop" in out and "engine K=2" in out
    assert "x bp time" in out and "naive per-example cbp script" in out
    assert set(results) == {"naive", "engine_K1", "engine_K2", "learner_bp_K16", "learner_cbp_K16", "naive_cbp"}
    assert all(v > 0 for v in results.values())


@pytest.mark.data
def test_bench_reports_the_kernel_section(capsys, mnist_root, monkeypatch):
    monkeypatch.setenv("PLASTICITY_LAB_DATA", str(mnist_root))
    results = bench.main(["--steps", "150", "--repeats", "1", "--population", "1", "--learners", "--no-probes",
                          "--no-compile", "--seconds", "0.3", "--processes", "1"])
    out = capsys.readouterr().out
    for text in ("kernel bp", "x naive", "x engine K=16", "kernel cbp", "kernel adapted", "x kernel bp's time",
                 "bp's time on cbp's own network", "bp's time on adapted's own network",
                 "whole machine", "experiment=purice/main_relu", "experiment=jucas/relu"):
        assert text in out, text
    assert "15 runs, 75M network-steps" in out and "30 runs, 330M network-steps" in out  # 5 x 3 x 500 x 10,000; [J]'s row
    for key in ("kernel_bp", "kernel_cbp", "kernel_adapted", "kernel_naive", "kernel_engine_K16", "kernel_machine",
                "kernel_bp_on_cbp_network", "kernel_bp_on_adapted_network",
                "projected_hours_purice/main_relu", "projected_hours_jucas/relu"):
        assert results[key] > 0, key
    # this process and one fresh one, each against its own bp; verdicts on the median; cbp_sums_only: cbp at
    # replacement_rate 0, the |w| sums alone
    assert results["kernel_cbp_sums_only"] > 0
    for name in ("cbp", "adapted", "cbp_sums_only"):
        ratios = results[f"kernel_{name}_ratios"]
        assert len(ratios) == 2 and all(r > 0 for r in ratios)
        assert results[f"kernel_{name}_ratio_median"] == pytest.approx(sum(ratios) / 2)
    assert "cbp: its |w| sums alone" in out
    assert out.count("in 2 processes:") == 3 and "median" in out


@pytest.mark.slow
def test_the_compiled_kernel_is_cached_across_processes():
    """compile_seconds runs two fresh interpreters against one empty numba cache: the first
    compiles the step (a cache miss), the second loads what the first compiled (hits, no miss)."""
    first, second = bench.compile_seconds()
    assert first["misses"] > 0 and first["hits"] == 0
    assert second["hits"] > 0 and second["misses"] == 0
    assert first["seconds"] > 0 and second["seconds"] > 0
    assert first["cpu_seconds"] > 0
    assert second["cpu_seconds"] < first["cpu_seconds"]  # loading the cache costs less than compiling
