"""What the read side asks the database, on SQLite and PostgreSQL: the dashboard's figures from
a handful of report queries (and the same sums as the reports), the alerts panel's last ten
from a LIMIT, the live figures' filters in the WHERE, and the per-key part of the status."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from worker.config import ScheduleSettings, Settings
from worker.daemon.http import figures as dashboard
from worker.daemon.http.auth import Scope
from worker.reports.live import EVERY_SCOPE, figures, registered
from worker.reports.report import Filters, build_report
from worker.reports.status import collect_status, key_states
from worker.store import alerts
from worker.store.db import transaction
from worker.store.models import (
    KIND_MANAGEMENT,
    AlertEvent,
    ApiKey,
    LiveSnapshot,
    LiveSubject,
    UsageStats,
    User,
)

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
ALICE = "alice@example.com"
MODELS = [f"vendor/model-{n}" for n in range(11)]  # more than the chart's 8: an "other" series


def _seed(factory: sessionmaker[Session]) -> dict[str, int]:
    """Two users' accounts with 60 days of spend over 11 models, live subjects, 25 alerts."""
    rng = random.Random(5)
    ids = {}
    with transaction(factory) as session:
        for email, name in (("alice@example.com", "alice-prod"), ("bob@example.com", "bob-prod")):
            user = User(email=email, password_hash="!")
            session.add(user)
            session.flush()
            key = ApiKey(user_id=user.id, name=name, key_encrypted="v1:x:y", kind=KIND_MANAGEMENT)
            session.add(key)
            session.flush()
            ids[email] = key.id
            for back in range(1, 61):
                for model in rng.sample(MODELS, 6):
                    cost = Decimal(rng.randint(1, 10**9)).scaleb(-6)
                    session.add(
                        UsageStats(
                            api_key_id=key.id,
                            date=NOW.date() - dt.timedelta(days=back),
                            model=model,
                            requests_count=rng.randint(1, 99),
                            cost=cost,
                        )
                    )
            for key_hash, scope, listed in (("", "account", True), ("h1", "key", True),
                                            ("h2", "key", False)):  # fmt: skip
                subject = LiveSubject(
                    api_key_id=key.id, key_hash=key_hash, scope=scope, name=f"{name}{key_hash}",
                    listed=listed, first_seen_at=NOW - dt.timedelta(days=2),
                    polled_at=NOW - dt.timedelta(minutes=5) if not key_hash else None,
                )  # fmt: skip
                session.add(subject)
                session.flush()
                snap = LiveSnapshot(
                    subject_id=subject.id, taken_at=NOW - dt.timedelta(minutes=5),
                    usage=Decimal(10), usage_daily=Decimal(2), usage_monthly=Decimal(5),
                )  # fmt: skip
                session.add(snap)
                session.flush()
                subject.snapshot_id = snap.id
        for n in range(25):
            owner = ids["alice@example.com"] if n % 2 else ids["bob@example.com"]
            subject = [f"account:{owner}", f"key:{owner}:h1", f"registered:{owner}", "all"][n % 4]
            fired = AlertEvent(
                rule=f"rule-{n}", metric="spend_today", subject=subject, subject_name="s",
                threshold="1", value=Decimal(n), period="2026-11-20",
                fired_at=NOW - dt.timedelta(hours=n), title=f"alert {n}", body="b",
            )  # fmt: skip
            session.add(fired)
    return ids


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def test_the_dashboard_reads_usage_in_four_report_queries_and_sums_like_the_reports(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    _seed(session_factory)
    scope = Scope(user_id=1, email="alice@example.com", admin=True)
    with _statements(engine) as seen, session_factory() as session:
        got = dashboard.collect(session, scope, now=NOW, settings=Settings())
    usage_queries = [s for s in seen if "v_usage_daily" in s]
    # (date, model) over 30 days; per day over both months; per account; per key (2 levels).
    assert len(usage_queries) == 5

    with session_factory() as session:
        period = got.range
        by_model = build_report(session, "model", period)
        by_day = build_report(session, "day", period)
        per_model = {
            row.group["model"]: build_report(
                session, "day", period, Filters(model=row.group["model"])
            )
            for row in by_model.rows[: dashboard.TOP_MODELS]
        }
        previous = build_report(session, "day", got_previous_month(got))
    assert [(r.group, r.totals) for r in got.top_models] == [
        (r.group, r.totals) for r in by_model.rows[: dashboard.TOP_MODELS]
    ]
    assert (got.total, got.requests) == (by_model.total.cost, by_model.total.requests)
    assert got.day_totals == [row.totals.cost for row in by_day.rows]
    for series in got.series[: dashboard.TOP_MODELS]:
        assert series.values == [row.totals.cost for row in per_model[series.name].rows]
    assert got.series[-1].name == dashboard.OTHER
    assert got.previous_month.total == previous.total.cost


def got_previous_month(got: dashboard.Dashboard) -> dashboard.DateRange:
    first = got.previous_month.first
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return dashboard.DateRange(first, following - dt.timedelta(days=1))


def test_the_alerts_panel_reads_its_last_ten_with_a_limit(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    ids = _seed(session_factory)
    since = NOW - dt.timedelta(days=30)
    with session_factory() as session:
        everything = alerts.history(session, since)
        with _statements(engine) as seen:
            last = alerts.history(session, since, last=10)
        alice = alerts.history(session, since, user_id=1)
        alice_last = alerts.history(session, since, user_id=1, last=3)
    assert [a.id for a in last] == [a.id for a in everything][-10:]
    event_queries = [s for s in seen if "FROM alert_events" in s]
    assert len(event_queries) == 1 and "LIMIT" in event_queries[0].upper()
    # The owner's filter, in SQL now, is the same as reading each subject's key id.
    mine = [a.id for a in everything if alerts.subject_key_id(a.subject) == ids[ALICE]]
    assert [a.id for a in alice] == mine
    assert [a.id for a in alice_last] == mine[-3:]


def test_the_live_figures_filter_in_the_query(session_factory: sessionmaker[Session]) -> None:
    ids = _seed(session_factory)
    with session_factory() as session:
        every = figures(session, now=NOW, scopes=EVERY_SCOPE, listed_only=False)
        listed = figures(session, now=NOW)
        own = registered(session, now=NOW)
        one = figures(session, now=NOW, api_key_ids=[ids[ALICE]])
    assert [f.subject for f in listed] == [
        f.subject for f in every if f.scope in ("account", "key") and f.listed
    ]
    assert {k: f.subject for k, f in own.items()} == {
        f.api_key_id: f.subject for f in every if f.key_hash == ""
    }
    assert [f.subject for f in one] == [f.subject for f in listed if f.api_key_id == ids[ALICE]]


def test_the_per_key_status_is_the_statuss_keys(session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    with session_factory() as session:
        status = collect_status(session, ScheduleSettings(), NOW)
        keys = key_states(session, NOW)
        mine = key_states(session, NOW, user_id=1)
    assert keys == status.keys
    assert [k.user for k in mine] == [ALICE]
