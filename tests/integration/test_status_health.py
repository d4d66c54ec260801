"""`status` as a health check: a run left "running" with no live holder of the sync lock was cut
short (killed, the disk full) and makes `status` exit 1; a live run does not."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.cli import main
from worker.store import ledger
from worker.store.db import transaction
from worker.store.locking import sync_lock


def _status(db_url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", db_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_CONFIG", "/dev/null")
    out, err = io.StringIO(), io.StringIO()
    code = main(["--log-level", "ERROR", "status", *args], stdout=out, stderr=err)
    assert err.getvalue() == ""
    return code, out.getvalue()


def test_a_run_left_running_without_a_lock_holder_is_unhealthy(
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with transaction(session_factory) as session:
        ledger.finish_run(
            session, ledger.start_run(session, "sync"), status="ok", keys_ok=0, keys_failed=0
        )
        cut = ledger.start_run(session, "schedule")  # its process died before closing it

    code, out = _status(db_url, monkeypatch)
    assert code == 1
    assert f"run #{cut} (schedule, started " in out
    assert "no sync is running: it was cut short" in out
    code, out = _status(db_url, monkeypatch, "--json")
    document = json.loads(out)
    assert (code, document["healthy"]) == (1, False)
    assert [p for p in document["problems"] if f"run #{cut}" in p]

    # The same row while a sync holds the lock is a run in progress: healthy.
    with sync_lock(engine) as held:
        assert held is not None
        code, out = _status(db_url, monkeypatch, "--json")
    assert (code, json.loads(out)["problems"]) == (0, [])
