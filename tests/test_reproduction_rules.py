"""The verdict rules of the reproduction report (multirun_analysis/reproduction/rules.py, claims.py), on
synthetic runs written exactly as training writes them: each rule's verdict comes out every way, and
the papers' claims are judged from the runs' settings (Hydra choices, config keys)."""

from __future__ import annotations

import numpy as np
import pytest

from multirun_analysis import load_runs
from multirun_analysis.reproduction import rules
from multirun_analysis.reproduction.claims import CLAIMS
from multirun_analysis.reproduction.rules import (NOT_CHECKED, NOT_REPRODUCED, PARTLY, REPRODUCED, Cond, beats,
                                                  close, combine, declines, hardly_matters, keeps, ordered,
                                                  rises_and_stays)
from multirun_analysis.synthetic import write_run

T = 40  # tasks per synthetic run


def flat(value: float, n: int = T) -> np.ndarray:
    return np.full(n, value)


def rise_then_fall(peak: float, end: float, n: int = T, peak_at: int = 10) -> np.ndarray:
    """0.5 -> ``peak`` at task ``peak_at`` (held a few tasks) -> ``end`` over the rest."""
    up = np.linspace(0.5, peak, peak_at)
    hold = np.full(5, peak)
    down = np.linspace(peak, end, n - peak_at - 5)
    return np.concatenate([up, hold, down])


def write(tmp_path, runs: dict, experiment: str = "purice/main_relu", metric: str = "accuracy", config=None):
    """runs: {method: {seed: per-task values (or {metric: values})}} -> load_runs frame."""
    for method, per_seed in runs.items():
        for seed, values in per_seed.items():
            metrics = values if isinstance(values, dict) else {metric: values}
            cfg = {"seed": seed, "learner": {"name": method}, **((config or {}).get(method, {}))}
            write_run(tmp_path / f"{method}-{seed}", cfg, metrics, choices={"method": method, "experiment": experiment})
    return load_runs(tmp_path)


A, B = Cond("A", {"choice.method": "a"}), Cond("B", {"choice.method": "b"})


# ---------------------------------------------------------------- beats
@pytest.mark.parametrize("a, b, expected", [
    ([0.90, 0.91, 0.92], [0.80, 0.81, 0.80], REPRODUCED),      # better in every seed, far beyond the std
    ([0.90, 0.90, 0.70], [0.80, 0.80, 0.80], PARTLY),          # better on average, not in seed 2
    ([0.80, 0.85, 0.90], [0.79, 0.84, 0.89], PARTLY),          # better in every seed, within the seeds' std
    ([0.80, 0.80, 0.80], [0.80, 0.80, 0.80], NOT_REPRODUCED),  # equal is not better
    ([0.70, 0.72, 0.71], [0.80, 0.81, 0.80], NOT_REPRODUCED),  # worse
])
def test_beats_every_verdict(tmp_path, a, b, expected):
    df = write(tmp_path, {"a": {s: flat(v) for s, v in enumerate(a)}, "b": {s: flat(v) for s, v in enumerate(b)}})
    v = beats(df, A, B, "mean", ddof=1)
    assert v.verdict == expected, v.why
    assert v.numbers["mean_difference"] == pytest.approx(np.mean(a) - np.mean(b))
    assert "seed(s) 0, 1, 2" in v.why


def test_beats_lower_is_better_for_errors_and_the_far_gap(tmp_path):
    df = write(tmp_path, {"a": {s: flat(1.0) for s in range(3)}, "b": {s: flat(2.0 + 0.01 * s) for s in range(3)}},
               metric="error")
    assert beats(df, A, B, "mean", "error").verdict == REPRODUCED  # lower error wins
    assert beats(df, B, A, "mean", "error").verdict == NOT_REPRODUCED
    df = write(tmp_path / "acc", {"a": {s: flat(0.83 + 0.001 * s) for s in range(3)},
                                  "b": {s: flat(0.80 + 0.001 * s) for s in range(3)}})
    assert beats(df, A, B, "last15", min_gap=0.05).verdict == PARTLY  # 3 pp in every seed: not "far"
    assert beats(df, A, B, "last15", min_gap=0.02).verdict == REPRODUCED


def test_beats_pairs_by_seed_and_is_not_checked_without_runs(tmp_path):
    df = write(tmp_path, {"a": {0: flat(0.9), 1: flat(0.9)}, "b": {1: flat(0.8), 2: flat(0.8)}})
    v = beats(df, A, B)
    assert v.numbers["differences"] == {1: pytest.approx(0.1)}  # only the seed both have
    assert beats(df, A, Cond("C", {"choice.method": "c"})).verdict == NOT_CHECKED
    only_b = write(tmp_path / "x", {"a": {0: flat(0.9)}, "b": {5: flat(0.8)}})
    assert beats(only_b, A, B).verdict == NOT_CHECKED


def test_beats_on_the_last_15_percent_uses_the_last_tasks_only(tmp_path):
    end_high = np.concatenate([np.full(T - 6, 0.5), np.full(6, 0.9)])  # last_count(40) = 6
    df = write(tmp_path, {"a": {s: end_high for s in range(2)}, "b": {s: flat(0.8) for s in range(2)}})
    assert beats(df, A, B, "last15").verdict == REPRODUCED
    assert beats(df, A, B, "mean").verdict == NOT_REPRODUCED


def test_combine():
    r, p, n, c = (rules.Verdict(k, k) for k in (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_CHECKED))
    assert combine([r, r]).verdict == REPRODUCED
    assert combine([n, n]).verdict == NOT_REPRODUCED
    assert combine([r, n]).verdict == PARTLY
    assert combine([r, p]).verdict == PARTLY
    assert combine([r, c]).verdict == NOT_CHECKED
    with pytest.raises(ValueError):
        rules.Verdict("maybe", "")


# ------------------------------------------------------- declines / keeps
@pytest.mark.parametrize("curves, declines_verdict, keeps_verdict", [
    ([rise_then_fall(0.9, 0.7)] * 3, REPRODUCED, NOT_REPRODUCED),                          # every seed falls 20 pp
    ([rise_then_fall(0.9, 0.89)] * 3, NOT_REPRODUCED, REPRODUCED),                         # 1 pp: no decline
    ([rise_then_fall(0.9, 0.7), rise_then_fall(0.9, 0.9), rise_then_fall(0.9, 0.9)], PARTLY, PARTLY),
])
def test_declines_and_keeps_every_verdict(tmp_path, curves, declines_verdict, keeps_verdict):
    df = write(tmp_path, {"a": dict(enumerate(curves))})
    assert declines(df, A).verdict == declines_verdict
    assert keeps(df, A).verdict == keeps_verdict
    assert declines(df, B).verdict == NOT_CHECKED


def test_declines_from_the_first_tasks_needs_an_early_peak(tmp_path):
    early = write(tmp_path / "early", {"a": {s: rise_then_fall(0.9, 0.6, peak_at=2) for s in range(3)}})
    late = write(tmp_path / "late", {"a": {s: rise_then_fall(0.9, 0.6, peak_at=20) for s in range(3)}})
    assert declines(early, A, early=True).verdict == REPRODUCED
    assert declines(late, A, early=True).verdict == NOT_REPRODUCED
    assert declines(late, A).verdict == REPRODUCED  # it declines, only not from the first tasks


def test_declines_of_an_error_is_relative_growth_from_its_lowest_point(tmp_path):
    falling_then_rising = 2.0 - rise_then_fall(1.5, 1.2)  # error 1.5 -> 0.5 -> 0.8: +60%
    almost_flat = 2.0 - rise_then_fall(1.5, 1.47)           # 0.5 -> 0.53: +6%
    df = write(tmp_path, {"a": {s: falling_then_rising for s in range(2)}, "b": {s: almost_flat for s in range(2)}},
               metric="error")
    assert declines(df, A, "error").verdict == REPRODUCED
    assert declines(df, B, "error").verdict == NOT_REPRODUCED
    assert keeps(df, B, "error").verdict == REPRODUCED


@pytest.mark.parametrize("curves, expected", [
    ([rise_then_fall(0.9, 0.895)] * 2, REPRODUCED),        # 0.5 -> 0.9, stays
    ([flat(0.9)] * 2, NOT_REPRODUCED),                      # never rises
    ([rise_then_fall(0.9, 0.6)] * 2, NOT_REPRODUCED),       # rises, does not stay up
    ([rise_then_fall(0.9, 0.895), flat(0.9)], PARTLY),
])
def test_rises_and_stays_every_verdict(tmp_path, curves, expected):
    df = write(tmp_path, {"a": dict(enumerate(curves))})
    assert rises_and_stays(df, A).verdict == expected


# ------------------------------------------------ close / ordered / spread
@pytest.mark.parametrize("gap, expected", [(0.005, REPRODUCED), (0.02, PARTLY), (0.05, NOT_REPRODUCED)])
def test_close_every_verdict(tmp_path, gap, expected):
    df = write(tmp_path, {"a": {s: flat(0.8 + gap) for s in range(3)}, "b": {s: flat(0.8) for s in range(3)}})
    v = close(df, A, B, "last15")
    assert v.verdict == expected
    assert v.numbers["difference_pp"] == pytest.approx(100 * gap)


@pytest.mark.parametrize("values, expected", [
    ([0.9, 0.8, 0.7, 0.6], REPRODUCED), ([0.9, 0.7, 0.8, 0.6], PARTLY), ([0.6, 0.7, 0.8, 0.9], NOT_REPRODUCED),
    ([0.8], NOT_CHECKED),
])
def test_ordered_every_verdict(values, expected):
    assert ordered([f"c{i}" for i in range(len(values))], values, -1, "test").verdict == expected


def test_spearman_by_hand():
    assert rules.spearman([1, 2, 3]) == pytest.approx(1.0)
    assert rules.spearman([3, 2, 1]) == pytest.approx(-1.0)
    assert rules.spearman([1, 3, 2]) == pytest.approx(0.5)  # ranks 1,3,2 vs 1,2,3: 1 - 6*2/(3*8)
    assert rules.spearman([2, 2, 2]) == 0.0


@pytest.mark.parametrize("means, expected", [([0.80, 0.81, 0.805], REPRODUCED), ([0.80, 0.84], PARTLY),
                                             ([0.80, 0.90], NOT_REPRODUCED)])
def test_hardly_matters_every_verdict(tmp_path, means, expected):
    names = "abc"[:len(means)]
    df = write(tmp_path, {n: {0: flat(m)} for n, m in zip(names, means)})
    conds = [Cond(n, {"choice.method": n}) for n in names]
    assert hardly_matters(df, conds, "last15", "test").verdict == expected


# ------------------------------------------------------------ the claims
def _verdicts(target: str, df) -> dict[str, str]:
    ddof = 0 if target.startswith("jucas") else 1
    return {c.text: c.check(df, ddof).verdict for c in CLAIMS[target]}


def _main_relu(tmp_path, bp, cbp, relu, rank_relu, rank_cbp):
    per_seed = lambda curve, rank=None: {s: ({"accuracy": curve + 0.001 * s} | (  # noqa: E731
        {"effective_rank": {"1": flat(rank + s), "2": flat(rank + s)}} if rank else {})) for s in range(3)}
    return write(tmp_path, {"bp": per_seed(bp), "l2": per_seed(flat(0.85)), "cbp": per_seed(cbp, rank_cbp),
                            "adapted_relu": per_seed(relu, rank_relu), "adapted_tanh": per_seed(flat(0.86))})


def test_main_relu_claims_as_the_thesis_states_them(tmp_path):
    df = _main_relu(tmp_path, bp=rise_then_fall(0.9, 0.6), cbp=flat(0.88), relu=rise_then_fall(0.95, 0.945),
                    rank_relu=40, rank_cbp=60)
    assert set(_verdicts("purice-main-relu", df).values()) == {REPRODUCED}


def test_main_relu_claims_not_reproduced_when_the_runs_say_otherwise(tmp_path):
    # relu strategy below L2 and declining; higher rank than CBP; BP flat; CBP declining
    df = _main_relu(tmp_path, bp=flat(0.8), cbp=rise_then_fall(0.9, 0.6), relu=rise_then_fall(0.84, 0.6),
                    rank_relu=70, rank_cbp=60)
    verdicts = _verdicts("purice-main-relu", df)
    assert set(verdicts.values()) <= {NOT_REPRODUCED, PARTLY}
    assert verdicts["BP declines"] == NOT_REPRODUCED
    assert verdicts["CBP keeps plasticity"] == NOT_REPRODUCED


def test_main_relu_claims_not_checked_without_their_runs(tmp_path):
    df = write(tmp_path, {"bp": {0: flat(0.8)}})
    verdicts = _verdicts("purice-main-relu", df)
    assert verdicts["BP declines"] == NOT_REPRODUCED
    assert verdicts["CBP keeps plasticity"] == NOT_CHECKED
    assert verdicts["the relu strategy beats L2, the tanh strategy, CBP and BP over all tasks"] == NOT_CHECKED


def test_jucas_claims_from_the_last_15_percent(tmp_path):
    layers = {f"cbp_layer_{k}": 0.90 - 0.02 * (k - 1) for k in range(1, 6)}
    runs = {m: {s: flat(v + 0.001 * s) for s in range(3)} for m, v in
            {"cbp": 0.905, **layers, "cbp_layers_2_to_L": 0.70, "cbp_none": 0.6, "bp": 0.6, "l2": 0.8}.items()}
    df = write(tmp_path, runs, experiment="jucas/relu")
    assert set(_verdicts("jucas-relu", df).values()) == {REPRODUCED}
    runs["cbp_layer_1"] = {s: flat(0.85) for s in range(3)}  # layer 1 far from all, below layer 2 and 3
    runs["cbp_layers_2_to_L"] = {s: flat(0.92) for s in range(3)}  # above all layers
    df = write(tmp_path / "other", runs, experiment="jucas/relu")
    verdicts = _verdicts("jucas-relu", df)
    assert verdicts["on the 5 x 100 relu net, replacing layer 1 alone is close to replacing all layers"] == NOT_REPRODUCED
    assert verdicts["the deeper the single replaced layer, the worse"] == PARTLY
    assert verdicts["layers 2..L alone is far below all layers"] == NOT_REPRODUCED


def test_jucas_tanh_selu_claim_reads_each_net_by_its_experiment(tmp_path):
    for experiment, spread in (("jucas/tanh", 0.002), ("jucas/selu", 0.03)):
        methods = [f"cbp_layer_{k}" for k in range(1, 6)]
        activation = {"network": {"activation": experiment.split("/")[1]}}  # the nets differ (else: one run twice)
        write(tmp_path / experiment.replace("/", "_"), {m: {0: flat(0.8 + spread * k)} for k, m in enumerate(methods, 1)},
              experiment=experiment, config={m: activation for m in methods})
    df = load_runs(tmp_path)
    v = CLAIMS["jucas-tanh-selu"][0].check(df, 0)
    assert v.verdict == PARTLY  # tanh: range 0.8 pp; selu: 12 pp
    assert "[reproduced] tanh net" in v.why and "[not reproduced] selu net" in v.why


def _scr(tmp_path, bp_growth: dict, cbp_end: float):
    """Backprop error 1.0 falling to 0.5, then growing by bp_growth[step]; CBP at two rates."""
    for step, growth in bp_growth.items():
        for s in range(3):
            curve = np.concatenate([np.linspace(1.0, 0.5, 10), np.linspace(0.5, 0.5 * (1 + growth), T - 10)])
            write_run(tmp_path / f"bp-{step}-{s}", {"seed": s, "learner": {"name": "bp"}, "optimizer": {"step_size": step}},
                      {"error": curve + 0.001 * s}, choices={"experiment": "dohare/slowly_changing_regression"})
    for rate, end in ((1e-4, cbp_end), (1e-2, 2.0)):
        for s in range(3):
            curve = np.concatenate([np.linspace(1.0, 0.5, 10), np.linspace(0.5, end, T - 10)])
            write_run(tmp_path / f"cbp-{rate}-{s}", {"seed": s, "learner": {"name": "cbp", "replacement_rate": rate},
                                                     "optimizer": {"step_size": 0.01}},
                      {"error": curve}, choices={"experiment": "dohare/slowly_changing_regression_cbp"})
    return load_runs(tmp_path)


def test_dohare_claims_pick_conditions_by_step_size_and_rate(tmp_path):
    df = _scr(tmp_path / "paper", {0.001: 0.3, 0.003: 0.6, 0.01: 1.2}, cbp_end=0.5)
    assert set(_verdicts("dohare-scr", df).values()) == {REPRODUCED}
    df = _scr(tmp_path / "flat", {0.001: 0.0, 0.003: 0.0, 0.01: 0.0}, cbp_end=0.9)
    verdicts = _verdicts("dohare-scr", df)
    assert verdicts["on slowly-changing regression BP's error grows over time"] == NOT_REPRODUCED
    assert verdicts["... more at larger step sizes"] == NOT_REPRODUCED  # nothing grows: nothing to order
    assert verdicts["CBP keeps it low"] == NOT_REPRODUCED  # worse than Backprop at the end, and growing
    df = _scr(tmp_path / "reversed", {0.001: 1.2, 0.003: 0.6, 0.01: 0.3}, cbp_end=0.5)
    assert _verdicts("dohare-scr", df)["... more at larger step sizes"] == NOT_REPRODUCED


def test_every_claim_names_its_paper_and_rule():
    assert set(CLAIMS) <= set(__import__("multirun_analysis.reproduction.targets", fromlist=["TARGETS"]).TARGETS)
    for claims in CLAIMS.values():
        for c in claims:
            assert c.paper in ("[P]", "[J]", "[D]") and c.text and c.rule
