"""`make dashboard` (``python -m worker.demo dashboard``): from nothing to a served dashboard.

In an empty directory it runs the demo first, prints the URL and a token for the demo user,
serves the dashboard, API and metrics from the real daemon, and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from worker.testing import loopback
from worker.testing.env import clean_env
from worker.testing.postgres import free_port


def test_make_dashboard_prints_a_url_and_a_token_and_serves_until_ctrl_c(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.demo", "dashboard", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}/"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError("make dashboard exited:\n" + "".join(lines))
        try:
            return loopback.get(url + "healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        deadline = time.monotonic() + 90
        while not healthy():  # the demo runs first, then the daemon syncs once
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        printed = "".join(lines)
        assert f"dashboard  {url}\n" in printed
        token = next(line.split()[1] for line in lines if line.startswith("token "))
        assert token.startswith("orw_")
        auth = {"Authorization": f"Bearer {token}"}
        usage = loopback.get(url + "api/v1/usage?by=account", headers=auth, timeout=10)
        assert usage.status_code == 200
        assert {r["account_name"] for r in usage.json()["rows"]} == {
            "production",
            "staging",
            "research",
            "team",
        }  # the demo user is an admin
        fired = loopback.get(url + "api/v1/alerts", headers=auth, timeout=10).json()
        assert "daily-spend" in {a["rule"] for a in fired}  # the demo's alert
        scraped = loopback.get(url + "metrics").text
        assert "openrouter_watcher_account_spend_month_to_date_usd" in scraped
        assert 'openrouter_watcher_key_live_spend_today_usd{account="team"' in scraped
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()
    output = "".join(lines)
    assert "sk-or-v1-demo" not in output and "Traceback" not in output
    assert (tmp_path / "data" / "demo" / "master.key").stat().st_mode & 0o777 == 0o600
