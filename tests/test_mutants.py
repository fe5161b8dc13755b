"""``make mutants`` (scripts/mutants.py): its edits still apply, and it mutates only a copy."""

import importlib.util
import sys

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
mutants = sys.modules["mutants"] = importlib.util.module_from_spec(_spec)  # (dataclasses look it up there)
_spec.loader.exec_module(mutants)


def test_every_mutant_edit_still_applies_exactly_once():
    """Learner code moved? Update scripts/mutants.py so that ``make mutants`` plants the same slips."""
    assert mutants.check_anchors() == []
    assert len(mutants.MUTANTS) >= 30
    assert len({m.name for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
    # the kernel's compiled learners get the slips the engine and the reference get (where it has the code)
    assert sum("kernel" in mutants.implementations(m) for m in mutants.MUTANTS) >= 25


def test_a_stale_anchor_is_reported_not_skipped(tmp_path):
    copy = mutants.copy_repository(tmp_path / "repo")
    stale = mutants.Mutant("stale", ((mutants.CBP, "this text is not in cbp.py", "x"),))
    twice = mutants.Mutant("twice", ((mutants.REF_CBP, "                    continue\n", "                    pass\n"),))  # 3 times in cbp.py
    problems = mutants.check_anchors(copy, [stale, twice])
    assert len(problems) == 2 and "found 0 times" in problems[0] and "found 3 times" in problems[1]
    with pytest.raises(mutants.StaleMutant, match="stale"):
        mutants.apply(stale, copy)


def test_mutants_edit_a_copy_and_never_the_working_tree(tmp_path):
    copy = mutants.copy_repository(tmp_path / "repo")
    assert not (copy / ".git").exists() and not (copy / ".venv").exists()
    mutant = mutants.MUTANTS[0]
    files = {path for path, _, _ in mutant.edits}
    before = {path: (ROOT / path).read_text() for path in files}
    originals = mutants.apply(mutant, copy)
    for path in files:
        assert (copy / path).read_text() != before[path]  # planted in the copy
        assert (ROOT / path).read_text() == before[path]  # the working tree untouched
    assert mutants.implementations(mutant) == ["engine", "kernel", "reference"]
    assert {f.relative_to(copy).as_posix() for f in originals} == files


@pytest.mark.slow
def test_a_planted_slip_is_caught_in_each_implementation_and_the_copy_restored(tmp_path):
    copy = mutants.copy_repository(tmp_path / "repo")
    mutant = next(m for m in mutants.MUTANTS if m.name.startswith("redo: score < tau"))
    killers = mutants.run_mutant(mutant, copy)
    assert killers == {"engine": "tests/test_oracles.py::test_redo_dormant_scores_by_hand[engine]",
                       "reference": "tests/test_oracles.py::test_redo_dormant_scores_by_hand[reference]"}
    for path, _, _ in mutant.edits:
        assert (copy / path).read_text() == (ROOT / path).read_text()
