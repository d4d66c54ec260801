"""The shipped systemd unit passes `systemd-analyze verify` and keeps its hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from worker.core.errors import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    ConfigError,
    DatabaseUnavailableError,
    MasterKeyError,
    SchemaError,
)

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "openrouter-watcher.service"
INSTALLED_EXEC = "/opt/openrouter-watcher/.venv/bin/openrouter-watcher"


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=exec",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "User=openrouter-watcher",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=openrouter-watcher",
        "LoadCredential=encryption-key:/etc/openrouter-watcher/encryption-key",
        "Environment=OPENROUTER_WATCHER_CONFIG=/etc/openrouter-watcher/config.toml",
        f"ExecStart={INSTALLED_EXEC} run",
    ):
        assert f"\n{line}\n" in text, line


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed on this machine",
)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's installed script.
    script = Path(sys.executable).parent / "openrouter-watcher"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_EXEC, str(script)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "openrouter-watcher.service" not in result.stderr, result.stderr


def _settings(name: str) -> list[str]:
    return [
        value
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{name}=")
        for value in line.split("=", 1)[1].split()
    ]


def test_unit_restarts_after_runtime_failures_but_not_configuration_errors() -> None:
    # Restart=on-failure restarts on every non-zero exit except those listed as preventing it.
    assert _settings("Restart") == ["on-failure"]
    prevented = {int(code) for code in _settings("RestartPreventExitStatus")}
    assert prevented == {EXIT_USAGE}
    for error in (ConfigError(), MasterKeyError(), SchemaError()):
        assert error.exit_code in prevented, type(error).__name__
    # A database that is down (at boot, or lost later) must bring the service back.
    assert DatabaseUnavailableError().exit_code == EXIT_RUNTIME
    assert EXIT_RUNTIME not in prevented
