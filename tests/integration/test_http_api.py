"""The API over real HTTP (uvicorn on 127.0.0.1, in process) on SQLite and PostgreSQL.

Tokens of two users prove the isolation both ways; an admin sees everything; every refusal is
the stable JSON error shape and never carries a token, its hash or a stack trace.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.core import render
from worker.core.days import DateRange
from worker.daemon.http.context import HttpContext
from worker.reports.report import Filters, build_report, report_dict
from worker.store.db import create_db_engine, make_session_factory
from worker.store.models import ApiKey, ApiToken, UsageStats
from worker.testing import loopback
from worker.testing.clock import noon
from worker.testing.postgres import free_port
from worker.testing.served import serving
from worker.vault import accounts, tokens

if TYPE_CHECKING:
    from tests.conftest import ReportData

NOW = noon(dt.date(2026, 11, 6))  # window: 2026-10-07 … 2026-11-05
ALICE, BOB = "alice@example.com", "bob@example.com"


@dataclass
class Served:
    url: str
    factory: sessionmaker[Session]
    keys: dict[str, int]  # key name -> id (production, staging: alice; research: bob)
    alice: str
    bob: str

    def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return loopback.get(self.url + path, headers=headers, timeout=10)


def context(factory: sessionmaker[Session], **http: Any) -> HttpContext:
    return HttpContext(
        settings=Settings().replace("http", **http) if http else Settings(),
        session_factory=factory,
        scheduler_alive=lambda: True,
        clock=lambda: NOW,
    )


@contextlib.contextmanager
def serve(engine: Engine, report_data: ReportData) -> Iterator[Served]:
    keys = report_data(engine)
    factory = make_session_factory(engine)
    _, alice = accounts.create_token(factory, ALICE, "alice's")
    _, bob = accounts.create_token(factory, BOB, "bob's")
    with serving(context(factory)) as url:
        yield Served(url, factory, keys, alice, bob)


@pytest.fixture
def served(engine: Engine, report_data: ReportData) -> Iterator[Served]:
    """The seeded API on SQLite and on PostgreSQL."""
    with serve(engine, report_data) as served:
        yield served


@pytest.fixture
def served_sqlite(sqlite_url: str, report_data: ReportData) -> Iterator[Served]:
    """The seeded API on SQLite only, for what does not depend on the database."""
    engine = create_db_engine(sqlite_url)
    with serve(engine, report_data) as served:
        yield served
    engine.dispose()


def expected_usage(served: Served, query: dict[str, Any], filters: Filters) -> Any:
    """What `report --format json` prints for the same question, as parsed JSON."""
    with served.factory() as session:
        report = build_report(
            session,
            query.get("by", "model"),
            DateRange(dt.date(2026, 10, 7), dt.date(2026, 11, 5)),
            filters,
        )
    return json.loads(render.to_json(report_dict(report)))


def error(response: httpx.Response, status: int, code: str, parameter: str | None = None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert body["error"]["parameter"] == parameter
    return str(body["error"]["message"])


def test_each_token_sees_only_its_own_users_usage_and_status(served: Served) -> None:
    for by in ("account", "key", "model", "day"):
        mine = served.get(f"/api/v1/usage?by={by}", served.alice)
        assert mine.status_code == 200
        assert mine.json() == expected_usage(served, {"by": by}, Filters(user_email=ALICE))
    alice_accounts = served.get("/api/v1/usage?by=account", served.alice).json()
    bob_accounts = served.get("/api/v1/usage?by=account", served.bob).json()
    assert {r["account_name"] for r in alice_accounts["rows"]} == {"production", "staging"}
    assert {r["account_name"] for r in bob_accounts["rows"]} == {"research"}
    assert bob_accounts["filters"]["user"] == BOB

    # the other user's key, or the other user, is "not found" both ways
    research, production = served.keys["research"], served.keys["production"]
    assert "no API key" in error(
        served.get(f"/api/v1/usage?key={research}", served.alice), 404, "not_found", "key"
    )
    error(served.get(f"/api/v1/usage?key={production}", served.bob), 404, "not_found", "key")
    error(served.get(f"/api/v1/usage?key={2**63}", served.bob), 404, "not_found", "key")
    error(served.get(f"/api/v1/usage?user={BOB}", served.alice), 404, "not_found", "user")
    error(served.get(f"/api/v1/usage?user={ALICE}", served.bob), 404, "not_found", "user")
    own = served.get(f"/api/v1/usage?user={ALICE}&key={production}&by=day", served.alice)
    assert own.json() == expected_usage(
        served, {"by": "day"}, Filters(user_email=ALICE, key_id=production)
    )

    alice_status = served.get("/api/v1/status", served.alice).json()
    bob_status = served.get("/api/v1/status", served.bob).json()
    assert [k["name"] for k in alice_status["keys"]] == ["production", "staging"]
    assert [k["name"] for k in bob_status["keys"]] == ["research"]
    assert set(alice_status) == {
        "healthy",
        "problems",
        "warnings",
        "keys",
        "last_run",
        "next_run_at",
        "daemons",
    }
    # The daemons and their hosts are shown to admins only; no daemon ran on this database.
    assert alice_status["daemons"] is None


def test_an_admin_token_sees_every_user(served_sqlite: Served) -> None:
    served = served_sqlite
    accounts.set_user_admin(served.factory, BOB, True)
    everything = served.get("/api/v1/usage?by=account", served.bob)
    assert everything.json() == expected_usage(served, {"by": "account"}, Filters())
    assert len(everything.json()["rows"]) == 3
    alice_only = served.get(f"/api/v1/usage?user={ALICE}&by=account", served.bob)
    assert alice_only.json() == expected_usage(served, {"by": "account"}, Filters(user_email=ALICE))
    assert len(served.get("/api/v1/status", served.bob).json()["keys"]) == 3
    error(served.get("/api/v1/usage?user=carol@example.com", served.bob), 404, "not_found", "user")
    research = served.keys["research"]
    error(
        served.get(f"/api/v1/usage?user={ALICE}&key={research}", served.bob),
        400,
        "bad_parameter",
        "key",
    )
    # and the flag is read on every request: revoked, bob is back to his own keys
    accounts.set_user_admin(served.factory, BOB, False)
    assert len(served.get("/api/v1/status", served.bob).json()["keys"]) == 1


BAD_PARAMETERS = [
    ("since=2026-13-01", "since"),
    ("until=yesterday", "until"),
    ("last=0", "last"),
    ("last=3&since=2026-11-01", "last"),
    ("since=2026-11-05&until=2026-11-01", "since"),
    ("by=week", "by"),
    ("key=abc", "key"),
    ("colour=red", "colour"),
    ("by=day&by=model", "by"),
]


def test_bad_parameters_are_400_naming_the_parameter(served_sqlite: Served) -> None:
    for query, parameter in BAD_PARAMETERS:
        response = served_sqlite.get(f"/api/v1/usage?{query}", served_sqlite.alice)
        message = error(response, 400, "bad_parameter", parameter)
        assert parameter in message and "--" not in message, query
    error(
        served_sqlite.get("/api/v1/status?by=day", served_sqlite.alice), 400, "bad_parameter", "by"
    )
    # a secret pasted into the wrong parameter is not echoed back
    pasted = served_sqlite.get(f"/api/v1/usage?by={served_sqlite.bob}", served_sqlite.alice)
    assert "[REDACTED]" in error(pasted, 400, "bad_parameter", "by")
    assert served_sqlite.bob not in pasted.text


def test_refused_tokens_are_401_and_nothing_leaks(served_sqlite: Served) -> None:
    served = served_sqlite
    with served.factory() as session:
        hashes = list(session.scalars(select(ApiToken.token_hash)))
    revoked_view, revoked = accounts.create_token(served.factory, ALICE, "old")
    accounts.revoke_token(served.factory, revoked_view.id)
    accounts.add_user(served.factory, "carol@example.com")
    _, carol = accounts.create_token(served.factory, "carol@example.com", "c")
    accounts.set_user_active(served.factory, "carol@example.com", False)

    missing = served.get("/api/v1/usage")
    assert "missing Authorization" in error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    error(served.get("/api/v1/usage", Authorization=f"Basic {served.alice}"), 401, "unauthorized")
    refused = {
        error(served.get("/api/v1/status", token), 401, "unauthorized")
        for token in ("orw_unknown", "not-even-a-token", revoked, carol)
    }
    assert len(refused) == 1  # unknown, revoked and disabled look the same
    for response in (served.get("/api/v1/status", revoked), served.get("/api/v1/status", carol)):
        for secret in (revoked, carol, *hashes, tokens.hash_token(revoked)):
            assert secret not in response.text

    # a good token still works, and its use is recorded
    before = dt.datetime.now(dt.UTC)
    assert served.get("/api/v1/status", served.alice).status_code == 200
    with served.factory() as session:
        used = session.scalar(
            select(ApiToken.last_used_at).where(
                ApiToken.token_hash == tokens.hash_token(served.alice)
            )
        )
    assert used is not None and used >= before - dt.timedelta(seconds=1)


def test_failed_tokens_are_rate_limited_per_client_address(
    sqlite_url: str, report_data: ReportData
) -> None:
    engine = create_db_engine(sqlite_url)
    report_data(engine)
    factory = make_session_factory(engine)
    _, good = accounts.create_token(factory, ALICE, "good")
    # Behind a trusted proxy the client is the X-Forwarded-For address: two "clients" here.
    ctx = context(factory, failed_auth_per_minute=2, trusted_proxies=("127.0.0.1",))
    with serving(ctx) as url:

        def get(token: str, client: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": client}
            return loopback.get(f"{url}/api/v1/status", headers=headers, timeout=10)

        assert [get("orw_wrong", "192.0.2.1").status_code for _ in range(2)] == [401, 401]
        limited = get(good, "192.0.2.1")  # even a good token: the address is locked out
        error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert get(good, "192.0.2.2").status_code == 200  # another client is not
    engine.dispose()


def test_unknown_paths_and_methods_answer_in_the_error_shape(served_sqlite: Served) -> None:
    error(served_sqlite.get("/api/v1/nothing"), 404, "not_found")
    error(served_sqlite.get("/static/../worker/db.py"), 404, "not_found")
    posted = loopback.post(served_sqlite.url + "/api/v1/usage", timeout=10)
    error(posted, 405, "method_not_allowed")
    page = served_sqlite.get("/")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["x-content-type-options"] == "nosniff"


def test_an_unexpected_error_is_a_500_with_a_request_id_and_no_trace(sqlite_url: str) -> None:
    secret = "orw_" + "s" * 43

    def broken_factory() -> Session:
        raise RuntimeError(f"driver exploded while holding {secret}")

    ctx = context(broken_factory)  # type: ignore[arg-type]
    with serving(ctx) as url:
        response = loopback.get(
            f"{url}/api/v1/status", headers={"Authorization": f"Bearer {secret}"}
        )
    message = error(response, 500, "internal_error")
    assert "request id" in message
    assert secret not in response.text and "Traceback" not in response.text
    assert "exploded" not in response.text


def test_a_database_that_is_down_is_503_for_the_api_health_and_metrics() -> None:
    url = f"postgresql+psycopg://watcher:pw@127.0.0.1:{free_port()}/watcher"
    engine = create_db_engine(url, connect_args={"connect_timeout": 2})
    ctx = context(make_session_factory(engine))
    with serving(ctx) as base:
        api = loopback.get(f"{base}/api/v1/status", headers={"Authorization": "Bearer orw_x"})
        health = loopback.get(f"{base}/healthz")
        scraped = loopback.get(f"{base}/metrics")
    engine.dispose()
    assert "try again later" in error(api, 503, "database_unavailable")
    assert "127.0.0.1" not in api.text
    assert health.status_code == 503
    assert health.json()["reasons"] == ["the database cannot be reached"]
    assert "openrouter_watcher_database_up 0.0" in scraped.text


def test_dashboard_panels_escape_names_that_came_from_outside(served_sqlite: Served) -> None:
    evil = '<script>alert("x")</script>'
    with served_sqlite.factory() as session, session.begin():
        session.add(
            UsageStats(
                api_key_id=served_sqlite.keys["production"],
                date=dt.date(2026, 11, 4),
                model=evil,
                cost=Decimal("1.5"),
            )
        )
        staging = session.get(ApiKey, served_sqlite.keys["staging"])
        assert staging is not None
        staging.name = evil
    panels = served_sqlite.get("/dashboard/panels", served_sqlite.alice)
    assert panels.status_code == 200
    assert panels.headers["content-type"].startswith("text/html")
    assert "<script" not in panels.text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in panels.text
    refused = served_sqlite.get("/dashboard/panels", "orw_nope")
    error(refused, 401, "unauthorized")
