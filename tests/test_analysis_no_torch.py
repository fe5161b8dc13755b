"""multirun_analysis never imports torch, directly or indirectly (it runs on laptops without it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Records (and refuses) every attempt to import torch, even one that is caught and ignored;
# then imports every module of the package and builds a whole report.
SCRIPT = r"""
import importlib.abc
import sys

attempts = []


class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            attempts.append(name)
            raise ImportError("multirun_analysis must not import torch")
        return None


sys.meta_path.insert(0, Guard())

import matplotlib
matplotlib.use("Agg")
import numpy as np

import multirun_analysis
from multirun_analysis import cli, conditions, grid, html, loading, names, plots, report, status, summaries, synthetic, tables
from multirun_analysis.report import build_report
from multirun_analysis.synthetic import write_run
from multirun_analysis.reproduction import claims, document, rules, targets

root = sys.argv[1]
for seed in range(2):
    write_run(f"{root}/r{seed}", {"seed": seed, "learner": {"name": "bp"}}, {"accuracy": np.full(5, 0.5)})
build_report([root], out=f"{root}/report")
print("\n".join(status.render(status.sweep_status(root))))
document.build_document(f"{root}/reproduction", f"{root}/docs")
print("attempts:", attempts)
print("torch loaded:", "torch" in sys.modules)
"""


def test_no_torch_import(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "attempts: []" in result.stdout
    assert "torch loaded: False" in result.stdout
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "report.html").is_file()
    assert "2 run(s): 2 completed" in result.stdout
    assert (tmp_path / "docs" / "REPRODUCTION.md").is_file()
