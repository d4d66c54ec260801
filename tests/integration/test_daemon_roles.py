"""The daemons' roles as people and monitors see them (:mod:`worker.reports.daemons`): ``status``
(table and ``--json``, exit 1 when no daemon has led for longer than a takeover may take),
``/healthz`` (200 on a healthy standby, with its role) and ``/metrics``; on SQLite and
PostgreSQL. The rows are the ones the daemons write (:mod:`worker.store.instances`), aged on
the database's own clock."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.daemon.http.context import HttpContext
from worker.daemon.leader import Role
from worker.store import instances
from worker.store.models import Instance
from worker.testing.served import serving

Cli = Callable[..., tuple[int, str, str]]


def daemon(
    factory: sessionmaker[Session],
    name: str,
    role: str,
    *,
    heard_seconds_ago: float = 0,
    in_role_seconds: float = 3600,
) -> None:
    """A daemon row as ``name`` would have written it: in its role for ``in_role_seconds``
    (since its start), last heard of ``heard_seconds_ago``."""
    with factory.begin() as session:
        row_id = instances.register(
            session, name=name, host="host-" + name, pid=42, version="1.0", revision="0011"
        )
        if role == instances.STOPPED:
            instances.stopped(session, row_id)
        else:
            instances.beat(session, row_id, role, backend_pid=7 if role == "leader" else None)
        now = instances.db_now(session)
        heard = now - dt.timedelta(seconds=heard_seconds_ago)
        since = now - dt.timedelta(seconds=max(in_role_seconds, heard_seconds_ago))
        session.execute(
            update(Instance)
            .where(Instance.id == row_id)
            .values(heartbeat_at=heard, role_since=since, started_at=since)
        )


@pytest.fixture
def status(
    cli: Cli, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str]]:
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", db_url)

    def run(*args: str) -> tuple[int, str]:
        code, out, err = cli("status", *args)
        return code, out + err

    return run


def test_status_says_nothing_of_daemons_when_none_ever_ran(
    status: Callable[..., tuple[int, str]],
) -> None:
    code, out = status("--json")
    assert code == 0 and json.loads(out)["daemons"] is None
    assert "DAEMON" not in status()[1]


def test_status_names_the_leader_and_its_standby(
    status: Callable[..., tuple[int, str]], session_factory: sessionmaker[Session]
) -> None:
    daemon(session_factory, "a", "leader", heard_seconds_ago=1)
    daemon(session_factory, "b", "standby", heard_seconds_ago=2)

    code, out = status()
    assert code == 0, out
    assert "leader: a" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:2] in ("a ", "b ")}
    assert rows["a"][4] == "leader" and rows["b"][4] == "standby"

    document = json.loads(status("--json")[1])["daemons"]
    assert document["leader"] == "a" and document["leaderless_seconds"] is None
    assert document["takeover_bound_seconds"] == 40.0  # the defaults: 30 s + one 10 s beat
    assert [(d["name"], d["role"], d["host"]) for d in document["instances"]] == [
        ("a", "leader", "host-a"),
        ("b", "standby", "host-b"),
    ]


def test_no_leader_for_longer_than_a_takeover_is_a_problem(
    status: Callable[..., tuple[int, str]], session_factory: sessionmaker[Session]
) -> None:
    daemon(session_factory, "a", "leader", heard_seconds_ago=120)  # died, never taken over
    daemon(session_factory, "b", "standby", heard_seconds_ago=1)

    code, out = status()
    assert code == 1
    assert "leader: none" in out
    assert "no daemon has led for 120 s (a takeover takes at most 40 s)" in out
    document = json.loads(status("--json")[1])
    assert document["healthy"] is False
    assert document["daemons"]["leaderless_seconds"] >= 120
    assert [d["role"] for d in document["daemons"]["instances"]] == ["standby", "silent"]


def test_a_takeover_in_progress_is_not_yet_a_problem(
    status: Callable[..., tuple[int, str]], session_factory: sessionmaker[Session]
) -> None:
    daemon(session_factory, "a", "leader", heard_seconds_ago=15)  # within 30 s + 10 s
    daemon(session_factory, "b", "standby")
    assert status()[0] == 0


def test_daemons_that_all_stopped_cleanly_are_not_a_problem(
    status: Callable[..., tuple[int, str]], session_factory: sessionmaker[Session]
) -> None:
    daemon(session_factory, "a", "stopped", heard_seconds_ago=3600)
    daemon(session_factory, "b", "stopped", heard_seconds_ago=3000)
    daemon(session_factory, "c", "standby", heard_seconds_ago=10**6)  # gone for two weeks
    code, out = status()
    assert code == 0, out
    assert "leader: none" in out


def _served(engine: Engine, role: Role | None) -> Callable[[str], httpx.Response]:
    ctx = HttpContext(
        settings=Settings(),
        session_factory=sessionmaker(engine, expire_on_commit=False),
        scheduler_alive=lambda: True,
        role=lambda: role,
    )

    def get(path: str) -> httpx.Response:
        with serving(ctx) as url:
            return httpx.get(url + path)

    return get


def test_a_standby_is_healthy_and_says_who_leads(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    daemon(session_factory, "a", "leader")
    daemon(session_factory, "b", "standby")
    since = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    get = _served(engine, Role("b", "standby", since, "a"))

    health = get("/healthz")
    assert health.status_code == 200, health.text
    body = health.json()
    assert (body["instance"], body["role"], body["leader"]) == ("b", "standby", "a")
    assert body["role_since"] == "2026-11-20T12:00:00Z"

    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(get("/metrics").text)
        for s in family.samples
    }
    assert (
        found[("openrouter_watcher_instance_info", (("instance", "b"), ("role", "standby")))] == 1
    )
    assert found[("openrouter_watcher_instance_leader", ())] == 0
    assert found[("openrouter_watcher_leader_present", ())] == 1
    assert found[("openrouter_watcher_instances", (("role", "standby"),))] == 1
    assert found[("openrouter_watcher_instances", (("role", "leader"),))] == 1
    assert ("openrouter_watcher_leaderless_seconds", ()) not in found


def test_metrics_say_no_leader_is_present(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    daemon(session_factory, "a", "leader", heard_seconds_ago=300)
    daemon(session_factory, "b", "standby")
    text = _served(engine, None)("/metrics").text
    found = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("openrouter_watcher_lead")
    }
    assert found["openrouter_watcher_leader_present"] == 0
    assert found["openrouter_watcher_leaderless_seconds"] >= 300
    assert "openrouter_watcher_instance_info" not in text  # not served by a daemon
