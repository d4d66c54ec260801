"""The HTTP face of a real `openrouter-watcher run` subprocess, on SQLite and PostgreSQL.

The daemon syncs two users' keys from the fake OpenRouter on a pinned clock and polls them,
its alert rule firing for each account and delivering to a channel nobody answers; it serves
/healthz, /metrics and the API on a port it picks itself (``[http] listen`` port 0, read back
from its ``http_started`` line); SIGTERM stops both within the grace time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from worker.store.db import create_db_engine, make_session_factory
from worker.store.models import ApiToken
from worker.testing import loopback
from worker.testing.activity_data import generate_activity
from worker.testing.clock import noon_iso
from worker.testing.env import clean_env
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.logs import json_events
from worker.testing.postgres import free_port
from worker.testing.waiting import wait_until
from worker.vault import accounts
from worker.vault.crypto import Keyring

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
DEAD_SECRET = "dead-Secret-Token-0123456789abcdef"
TODAY = dt.date(2026, 11, 20)
CLOCK = noon_iso(TODAY)
ALICE, BOB = "alice@example.com", "bob@example.com"
KEYS = {  # name: (owner, OpenRouter key)
    "production": (ALICE, "sk-or-v1-http-production-" + "1" * 40),
    "staging": (ALICE, "sk-or-v1-http-staging-" + "2" * 43),
    "research": (BOB, "sk-or-v1-http-research-" + "3" * 42),
}


def env_for(database: str, master_key: str, **extra: str) -> dict[str, str]:
    settings = {
        "OPENROUTER_WATCHER_CONFIG": os.devnull,
        "OPENROUTER_WATCHER_DATABASE_URL": database,
        "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
        "OPENROUTER_WATCHER_LOGGING_FORMAT": "json",
        "OPENROUTER_WATCHER_TESTING_CLOCK": CLOCK,
        "OPENROUTER_WATCHER_SCHEDULE_SHUTDOWN_GRACE_SECONDS": "10",
        "OPENROUTER_WATCHER_HTTP_LISTEN": "127.0.0.1:0",
    }
    return clean_env(**{**settings, **extra})


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=TODAY) as server:
        for seed, (_owner, secret) in enumerate(KEYS.values()):
            rows = generate_activity(today=TODAY, models=3, seed=seed)
            server.add_key(secret, management=True, rows=rows)
        yield server


def test_daemon_serves_health_metrics_and_an_isolated_api(
    tmp_path: Path, db_url: str, fake: FakeOpenRouter, master_key: str, keyring: Keyring
) -> None:
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    for email in (ALICE, BOB):
        accounts.add_user(factory, email)
    for name, (owner, secret) in KEYS.items():
        accounts.add_key(factory, keyring, owner, name, secret)
    tokens = {email: accounts.create_token(factory, email, "api")[1] for email in (ALICE, BOB)}
    key_ids = {k.name: k.id for k in accounts.list_keys(factory)}

    log = tmp_path / "daemon.log"
    dead = f"json://127.0.0.1:{free_port()}/{DEAD_SECRET}"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[channels]]\nname = "dead"\nurl = "{dead}"\n'
        '[[alerts]]\nname = "low-balance"\nmetric = "balance"\nbelow = 1000000\n'
        'notify = ["dead"]\n'
    )
    env = env_for(
        db_url,
        master_key,
        OPENROUTER_WATCHER_OPENROUTER_BASE_URL=fake.base_url,
        OPENROUTER_WATCHER_CONFIG=str(config),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen([CLI, "run"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: (
                proc.poll() is None
                and {"sync_heartbeat", "poll_finished"} <= {e["event"] for e in json_events(log)}
            )
        )
        (started,) = [e for e in json_events(log) if e["event"] == "http_started"]
        url = str(started["url"])

        def get(path: str, email: str | None = None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {tokens[email]}"} if email else {}
            return loopback.get(url + path, headers=headers, timeout=10)

        health = get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["active_keys"] == 3

        scraped = get("/metrics").text
        for name, key_id in key_ids.items():
            assert (
                "openrouter_watcher_account_last_success_timestamp_seconds"
                f'{{account="{name}",account_id="{key_id}",kind="management"}}'
            ) in scraped
        assert 'openrouter_watcher_key_syncs_total{result="ok"} 3.0' in scraped
        assert "openrouter_watcher_scheduler_running 1.0" in scraped

        # the poll job counted like the sync's: its run, duration, the alerts it fired for the
        # three accounts, and the channel that failed, by name and never by URL
        def poll_counted() -> bool:
            return 'openrouter_watcher_poll_runs_total{status="ok"} 1.0' in get("/metrics").text

        wait_until(poll_counted)
        scraped = get("/metrics").text
        assert "openrouter_watcher_poll_duration_seconds_count 1.0" in scraped
        assert 'openrouter_watcher_alerts_fired_total{rule="low-balance"} 3.0' in scraped
        assert 'openrouter_watcher_alert_deliveries_failed_total{channel="dead"} 1.0' in scraped
        for name, key_id in key_ids.items():
            assert (
                "openrouter_watcher_account_live_balance_usd"
                f'{{account="{name}",account_id="{key_id}",kind="management"}}'
            ) in scraped
        assert DEAD_SECRET not in scraped and dead not in scraped
        fired = {email: get("/api/v1/alerts", email).json() for email in (ALICE, BOB)}
        assert {a["subject"] for a in fired[ALICE]} == {
            f"account:{key_ids['production']}",
            f"account:{key_ids['staging']}",
        }
        assert {a["subject"] for a in fired[BOB]} == {f"account:{key_ids['research']}"}

        mine = {email: get("/api/v1/usage?by=account", email).json() for email in (ALICE, BOB)}
        assert {r["account_name"] for r in mine[ALICE]["rows"]} == {"production", "staging"}
        assert {r["account_name"] for r in mine[BOB]["rows"]} == {"research"}
        assert all(r["cost"] != "0.000000000" for e in mine for r in mine[e]["rows"])
        assert get(f"/api/v1/usage?key={key_ids['research']}", ALICE).status_code == 404
        assert get(f"/api/v1/usage?key={key_ids['staging']}", BOB).status_code == 404
        status = {email: get("/api/v1/status", email).json() for email in (ALICE, BOB)}
        assert [k["name"] for k in status[ALICE]["keys"]] == ["production", "staging"]
        assert [k["name"] for k in status[BOB]["keys"]] == ["research"]
        assert all(k["last_status"] == "ok" for e in status for k in status[e]["keys"])
        refused = get("/api/v1/status", None)
        assert refused.status_code == 401

        started_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started_stop < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with factory() as session:
        hashes = list(session.scalars(select(ApiToken.token_hash)))
        used = list(session.scalars(select(ApiToken.last_used_at)))
    engine.dispose()
    assert all(used)  # both tokens' use recorded
    names = [e["event"] for e in json_events(log)]
    assert names.index("http_stopped") < names.index("daemon_stopped")
    with pytest.raises(httpx.ConnectError):
        loopback.get(url + "/healthz", timeout=2)
    everything = log.read_text() + scraped + json.dumps([mine, status]) + refused.text
    for secret in [master_key, *tokens.values(), *hashes, *(s for _, s in KEYS.values())]:
        assert secret not in everything


def test_a_taken_port_stops_run_at_once_with_one_line_and_exit_2(
    tmp_path: Path, sqlite_url: str, master_key: str
) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):  # someone else listens there
        result = subprocess.run(
            [CLI, "run"],
            env=env_for(sqlite_url, master_key, OPENROUTER_WATCHER_HTTP_LISTEN=f"127.0.0.1:{port}"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port} ([http] listen): ")
    assert "in use" in line
    assert "Traceback" not in result.stderr + result.stdout
    assert "daemon_started" not in result.stdout  # nothing was scheduled or synced
