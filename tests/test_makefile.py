"""The Makefile's targets: each defined once, the dry runs of both profiles, no warning on any call."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*targets: str) -> subprocess.CompletedProcess:
    # -n: print the recipes without running them (no install, no Snakemake)
    return subprocess.run(["make", "-n", *targets], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_dry_runs_use_their_own_profile_and_make_prints_no_warning():
    run = _make("dry-run", "slurm-dry-run", "report", "docs")
    assert run.returncode == 0, run.stderr
    assert "warning" not in run.stderr.lower(), run.stderr
    lines = run.stdout.splitlines()
    assert any("--profile profiles/local -n" in line for line in lines)
    assert any("--profile profiles/slurm -n" in line for line in lines)
    assert any("--report results/report.html" in line for line in lines)


def test_stray_targets_are_gone():
    run = _make("slurm-docs")
    assert run.returncode != 0 and "No rule to make target" in run.stderr
