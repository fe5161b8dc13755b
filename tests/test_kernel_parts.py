"""The kernel backend's parts on their own: read-ahead draws, unit selection, its compile options and
cache, and where its events run (kernel/draws.py, kernel/learners/base.py, kernel/jit.py)."""

import copy
import sys

import numpy as np
import pytest
import torch

from conftest import optimizer
from plasticity_lab.kernel import KernelPopulation, jit
from plasticity_lab.kernel.draws import ReadAhead
from plasticity_lab.kernel.learners import KernelContinualBackprop as KC
from plasticity_lab.kernel.learners.base import smallest
from plasticity_lab.network import NetworkSpec, uniform


def _generator(seed=7):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- read-ahead draws
def test_read_ahead_gives_each_bound_the_draws_at_its_position():
    """Consuming 5 numbers with bound 0.3, then 7 with bound 2 (as events of two layers do) gives
    exactly the draws of those sizes and bounds one after another from the generator."""
    ahead = ReadAhead(_generator(), [(-0.3, 0.3), (-2.0, 2.0)], block=8, positions=np.zeros((1, 2), np.int64),
                      at=(0, 0))
    direct = _generator()
    expected = [uniform(direct, 5, -0.3, 0.3), uniform(direct, 7, -2.0, 2.0)]
    got = []
    for row, n in ((0, 5), (1, 7)):
        ahead.ensure(n)  # the second needs more than the block holds: drawn further ahead
        start = ahead.used
        got.append(torch.from_numpy(ahead.blocks[row, start : start + n].copy()))
        ahead.positions[0, 0] = start + n  # what the compiled code does
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    ahead.sync()
    assert torch.equal(uniform(ahead.gen, 3, 0.0, 1.0), uniform(direct, 3, 0.0, 1.0))  # the engine's state


def test_read_ahead_sync_leaves_the_generator_after_the_used_numbers_only():
    gen = _generator()
    ahead = ReadAhead(gen, [(0.0, 1.0)], block=100, positions=np.zeros(1, np.int64), at=0)
    ahead.ensure(10)
    assert ahead.blocks.shape == (1, 100)
    ahead.positions[0] = 4
    ahead.sync()
    direct = _generator()
    uniform(direct, 4, 0.0, 1.0)
    assert torch.equal(gen.get_state(), direct.get_state())
    assert ahead.used == 0 and ahead.blocks.shape[1] == 0
    ahead.sync()  # nothing read ahead: the generator is not touched
    assert torch.equal(gen.get_state(), direct.get_state())


def test_a_deep_copy_keeps_the_read_ahead_and_its_position_together():
    """(The timing probe deep-copies a population: its copy must advance its own position.)"""
    owner = {"positions": np.zeros((1, 2), np.int64)}
    owner["ahead"] = ReadAhead(_generator(), [(0.0, 1.0)], block=16, positions=owner["positions"], at=(0, 1))
    twin = copy.deepcopy(owner)
    twin["positions"][0, 1] = 5
    assert twin["ahead"].used == 5 and owner["ahead"].used == 0


def test_read_ahead_blocks_double_at_each_refill_up_to_their_limit_and_keep_the_stream():
    """Every refill draws twice the last block (fewer returns to Python for a member that replaces
    often), up to GROWTH times the first; the numbers consumed are still the generator's stream."""
    ahead = ReadAhead(_generator(), [(0.0, 1.0)], block=4, positions=np.zeros(1, np.int64), at=0)
    sizes, consumed = [], []
    for _ in range(7):
        ahead.ensure(ahead.blocks.shape[1] - ahead.used + 1)  # one more than is left: a refill
        sizes.append(ahead.blocks.shape[1])
        consumed.append(torch.from_numpy(ahead.blocks[0].copy()))
        ahead.positions[0] = ahead.blocks.shape[1]  # all of it used
    assert ReadAhead.GROWTH == 16
    assert sizes == [4, 8, 16, 32, 64, 64, 64]
    assert torch.equal(torch.cat(consumed), uniform(_generator(), sum(sizes), 0.0, 1.0))


def test_bias_correction_table_is_one_minus_eta_to_the_age_then_one_from_age_one():
    """cbp's table of 1 - eta^age (read by every step instead of a power per young unit): the
    power below AGE_ONE (base.age_one), exactly 1 from there on, and a table too short for AGE_ONE
    leaves the rest to the power (``_corrections``)."""
    from plasticity_lab.kernel.learners.base import AGE_ONE, ETA, NUM_ROWS, age_one
    from plasticity_lab.kernel.learners.cbp import _corrections, bias_corrections

    lpt = np.zeros((NUM_ROWS, 2), np.float32)
    lpt[ETA] = [0.99, 0.9]
    lpt[AGE_ONE] = age_one(lpt[ETA].astype(np.float64), np.float32)
    a1 = lpt[AGE_ONE].astype(int)
    table = np.empty((2, a1.max() + 1))
    bias_corrections(lpt, table)
    for l in range(2):
        ages = np.arange(a1[l])
        np.testing.assert_allclose(table[l, : a1[l]], 1 - 0.99 ** ages if l == 0 else 1 - 0.9 ** ages, rtol=1e-5)
        assert (table[l, a1[l] :] == 1.0).all() and table[l, a1[l] - 1] < 1.0
    ages = np.array([1, 50, a1[0] - 1, a1[0], 5 * a1[0]], np.float32)
    full, short = np.empty(5), np.empty(5)
    _corrections(ages, table[0], lpt[ETA, 0], lpt[AGE_ONE, 0], full)
    _corrections(ages, table[0, :40], lpt[ETA, 0], lpt[AGE_ONE, 0], short)
    assert full.tolist() == short.tolist() == [table[0, 1], table[0, 50], table[0, a1[0] - 1], 1.0, 1.0]


# ----------------------------------------------------------------------------- unit selection
@pytest.mark.parametrize("seed", range(5))
def test_smallest_is_the_start_of_a_stable_argsort(seed):
    """Ties by the lowest index, inf (ineligible) after every finite key, NaN last: what the
    engine's and the reference's stable sorts choose."""
    rng = np.random.default_rng(seed)
    keys = rng.choice([0.0, 1.0, 2.0, -1.0, np.inf, -np.inf, np.nan], size=40)
    chosen, taken = np.zeros(40, np.int64), np.zeros(40, np.int64)
    for n in (1, 7, 40):
        smallest(keys, n, chosen, taken)
        assert chosen[:n].tolist() == np.argsort(keys, kind="stable")[:n].tolist()


# ----------------------------------------------------------------------------- compile options, cache
def test_every_compiled_kernel_function_sets_its_floating_point_options():
    """numba compiles a function that leaves an option unset with its caller's: a learner's
    decision called from the fastmath training loop would take its liberties (kernel/jit.py)."""
    from numba.core.dispatcher import Dispatcher

    import plasticity_lab.kernel.step  # noqa: F401 (every compiled module is loaded)

    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("plasticity_lab.kernel"):
            for attr, obj in vars(module).items():
                if isinstance(obj, Dispatcher) and obj.py_func.__module__ == name:
                    found[f"{name}.{attr}"] = obj.targetoptions
    assert len(found) > 20
    assert all("fastmath" in options and options.get("_nrt") is False for options in found.values()), found
    fast = {name for name, options in found.items() if options["fastmath"]}
    assert fast == {"plasticity_lab.kernel.step.train_member", "plasticity_lab.kernel.step._abs_sum",
                    "plasticity_lab.kernel.rows.abs_row_sums"}


def test_a_changed_source_drops_the_cache_of_every_kernel_folder(tmp_path):
    """numba keys a cached function on its own file only; the kernel's fingerprint covers them all."""
    src = tmp_path / "src"
    (src / "learners").mkdir(parents=True)
    (src / "step.py").write_text("a = 1\n")
    (src / "learners" / "cbp.py").write_text("b = 2\n")
    before = jit.fingerprint(src)
    caches = [tmp_path / "cache" / "kernel", tmp_path / "cache" / "learners"]
    for folder in caches:
        folder.mkdir(parents=True)
        (folder / "step.train_member-1.py311.nbi").write_text("index")
        (folder / "step.train_member-1.py311.1.nbc").write_text("code")
        (folder / "keep.txt").write_text("not numba's")
    jit.drop_stale(caches, before)  # no fingerprint yet: dropped, fingerprint written
    assert all(not list(f.glob("*.nb?")) and (f / "keep.txt").exists() for f in caches)
    (caches[0] / "again.nbi").write_text("index")
    jit.drop_stale(caches, before)  # unchanged sources: kept
    assert (caches[0] / "again.nbi").exists()
    (src / "learners" / "cbp.py").write_text("b = 3\n")  # a callee's file changes
    after = jit.fingerprint(src)
    assert after != before
    jit.drop_stale(caches, after)
    assert not (caches[0] / "again.nbi").exists() and (caches[0] / jit.FINGERPRINT).read_text() == after


# ----------------------------------------------------------------------------- events in compiled code
def test_replacements_run_in_compiled_code_and_python_only_draws_further_ahead(monkeypatch):
    """CBP's events are done inside the compiled loop; the loop returns to Python only when the
    read-ahead draws run out (then the event is completed there), a few times per many events."""
    calls = []
    original = KC.handle_event
    monkeypatch.setattr(KC, "handle_event", lambda self, *a: (calls.append(a[1]), original(self, *a)))
    spec = NetworkSpec.mlp(784, 32, 3, 10, "relu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 600, 784, generator=g)
    x, y = x * (x > 0.7), torch.randint(0, 10, (1, 600), generator=g)
    pop = KernelPopulation(spec, [0], optimizer(step_size=0.01), learner=KC(replacement_rate=1e-2, maturity_threshold=20))
    calls.clear()  # (the warm-up's)
    pop.train(x, y)
    replaced = pop.take_counts()["units_reset"].sum()
    assert replaced > 300  # an event (a unit of each layer) about every 4 steps
    # the first event (nothing read ahead yet), then one whenever a block (~16 events' draws) runs out
    assert 1 <= len(calls) <= replaced // 30
