"""The Prometheus rules shipped in deploy/ are valid (``promtool check rules``), fire as their
unit tests say (``promtool test rules``: tests/unit/prometheus/rules_test.yml), and name only
series that /metrics serves (the table in docs/http.md). promtool is Debian's, installed by
``make test`` (``make promtool``)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus-rules.yml"
RULE_TESTS = Path(__file__).parent / "prometheus" / "rules_test.yml"
PROMTOOL = os.environ.get("PROMTOOL", "/usr/bin/promtool")


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert Path(PROMTOOL).exists(), f"no promtool at {PROMTOOL}: run `make promtool`"
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_shipped_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_the_rules_fire_as_their_unit_tests_say() -> None:
    done = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_rule_file_is_refused(tmp_path: Path) -> None:
    # The check is real: promtool refuses an expression that does not parse.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: max(\n"
    )
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_the_rules_name_only_documented_series() -> None:
    documented = set(re.findall(r"`(openrouter_watcher_\w+)`", (ROOT / "docs/http.md").read_text()))
    used = set(re.findall(r"openrouter_watcher_\w+", RULES.read_text()))
    assert used and used <= documented, used - documented
