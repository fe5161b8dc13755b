"""The test suite's own rules (conftest.py): a test that reads real data must carry the ``data``
marker, and missing data skips such a test outside CI but fails it under ``CI=true``."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

PROBE_TESTS = '''
import pytest

def test_unmarked(mnist_root):
    pass

@pytest.mark.data
def test_marked(mnist_root):
    pass

@pytest.mark.data
def test_fashion(debian_fashion):
    pass

def test_no_data():
    pass
'''


def _outcomes(tmp_path, **env):
    """Run PROBE_TESTS with this suite's conftest in ``tmp_path``; {test name: outcome word} from -rA."""
    (tmp_path / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_probe.py").write_text(PROBE_TESTS)
    run_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "tests",
                           "--rootdir", str(tmp_path)], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=300)
    outcomes = {}
    for line in proc.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED") and "test_probe.py::" in rest:
            outcomes[rest.split("::")[1].split(" ")[0]] = word
        elif word == "SKIPPED" and "test_probe.py" in rest:  # "SKIPPED [1] tests/test_probe.py:9: reason"
            outcomes.setdefault("skipped", []).append(rest)
    return outcomes, proc.stdout


@pytest.mark.slow
def test_data_fixture_without_data_marker_fails(tmp_path):
    outcomes, out = _outcomes(tmp_path, PLASTICITY_LAB_DATA=str(ROOT.parent / "shared" / "data"), CI="false")
    assert outcomes["test_unmarked"] == "ERROR", out
    assert "reads real data (mnist_root) but is not marked @pytest.mark.data" in out
    assert outcomes["test_no_data"] == "PASSED"


@pytest.mark.slow
def test_missing_data_fails_under_ci_and_skips_elsewhere(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    outcomes, out = _outcomes(tmp_path / "ci", PLASTICITY_LAB_DATA=str(empty), CI="true")
    assert outcomes["test_marked"] == "ERROR" and "required under CI=true" in out, out
    outcomes, out = _outcomes(tmp_path / "local", PLASTICITY_LAB_DATA=str(empty), CI="false")
    assert "test_marked" not in outcomes and any("real MNIST not found" in r for r in outcomes["skipped"]), out
