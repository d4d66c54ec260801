"""The plain ``pytest`` script collects every test directory, not only ``python -m pytest``
(which puts the current directory on the path by itself): the fault tests import
``tests.faults.conftest``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from worker.testing.env import clean_env

ROOT = Path(__file__).resolve().parents[2]


def test_the_pytest_script_collects_the_fault_tests() -> None:
    script = Path(sys.executable).with_name("pytest")
    result = subprocess.run(
        [str(script), "--collect-only", "-q", "-p", "no:cacheprovider", "tests/faults"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "tests collected" in result.stdout
    assert "error" not in result.stdout.lower()
