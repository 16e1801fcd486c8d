"""The layout holds: every package imports first in a fresh interpreter (no import cycle bites), train.py
does not import the evaluation CLI, results/*/runs is tracked while runs/ is not, and nothing cites a
file outside the project."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_IMPORTS = ["tasks", "losses", "evaluation", "engine.config", "engine.step", "models", "experiments.report",
                 "train", "evaluate", "reproduce"]


def test_each_package_imports_first():
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for m in FIRST_IMPORTS}
    failed = {m: p.communicate()[1].strip().splitlines()[-1:] for m, p in procs.items() if p.wait() != 0}
    assert failed == {}


def test_train_does_not_import_the_evaluate_cli():
    code = "import sys, train; assert 'evaluate' not in sys.modules, 'evaluate imported'"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("path, ignored", [("results/synthetic-cpu/runs/0123456789ab.json", False),
                                           ("runs", True), ("datasets", True), (".venv", True)])
def test_run_records_are_tracked_and_run_directories_are_not(path, ignored):
    rc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode
    assert rc == (0 if ignored else 1), path


def test_nothing_cites_a_file_outside_the_project():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for name in files:
        path = ROOT / name
        if name == "tests/test_layout.py":  # names the citations it looks for
            continue
        if path.suffix in (".py", ".md", ".yaml", ".toml", ".yml") or name in ("Makefile", ".ci/run"):
            text = path.read_text()
            bad += [name for needle in ("DESIGN.md", "../shared", "STYLE.md", "CITYSCAPES.md") if needle in text]
    assert bad == []
