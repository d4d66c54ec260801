"""worker.store: the one usage write, the keys to poll and the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import UsageTriggers
from worker.core.outcomes import KeyOutcome
from worker.core.usage import UsageRow, WriteCounts
from worker.store import keys as key_store
from worker.store import ledger
from worker.store.db import create_db_engine, make_session_factory, transaction
from worker.store.models import ApiKey, SyncKeyResult, SyncRun, User, utcnow
from worker.store.usage_write import KeyRows, write_usage
from worker.testing.usage import stored_usage_of

D1 = dt.date(2026, 11, 1)
D2 = dt.date(2026, 11, 2)


def _write(
    factory: sessionmaker[Session], key_id: int, days: list[dt.date], rows: list[UsageRow]
) -> WriteCounts:
    with transaction(factory) as session:
        (counts,) = write_usage(session, [KeyRows(key_id, rows, frozenset(days))])
        return counts


def test_write_inserts_exactly_then_an_identical_write_sends_nothing(
    session_factory: sessionmaker[Session], sample_key: ApiKey, usage_triggers: UsageTriggers
) -> None:
    rows = [
        UsageRow(D1, "openai/gpt-4.1", 3, 100, 50, 70, Decimal("0.3"), Decimal("0.000000001")),
        # Counters beyond 2^31 fit on both databases (BIGINT on PostgreSQL since 0005).
        UsageRow(D2, "openai/gpt-4.1", 2**40, 2**40, 5, 0, Decimal("454.542594979"), Decimal(0)),
    ]
    assert _write(session_factory, sample_key.id, [D1, D2], rows) == WriteCounts(inserted=2)
    # 0.3 and 0.300000000 are the same amount: nothing to write.
    same = [rows[0]._replace(cost=Decimal("0.300000000")), rows[1]]
    assert _write(session_factory, sample_key.id, [D1, D2], same) == WriteCounts(unchanged=2)
    assert usage_triggers.writes() == ["insert", "insert"]
    assert stored_usage_of(session_factory, sample_key.id) == {
        (D1, "openai/gpt-4.1"): (3, 100, 50, 70, Decimal("0.3"), Decimal("0.000000001")),
        (D2, "openai/gpt-4.1"): (2**40, 2**40, 5, 0, Decimal("454.542594979"), Decimal(0)),
    }


def test_a_restated_day_replaces_values_and_deletes_vanished_models_only_that_day(
    session_factory: sessionmaker[Session], sample_key: ApiKey, usage_triggers: UsageTriggers
) -> None:
    _write(
        session_factory,
        sample_key.id,
        [D1, D2],
        [
            UsageRow(D1, "a/x", 1, 1, 1, 0, Decimal("1.5"), Decimal(0)),
            UsageRow(D1, "a/y", 2, 2, 2, 0, Decimal("2.5"), Decimal(0)),
            UsageRow(D2, "a/y", 3, 3, 3, 0, Decimal("3.5"), Decimal(0)),
        ],
    )
    counts = _write(
        session_factory,
        sample_key.id,
        [D1],
        [
            UsageRow(D1, "a/x", 9, 9, 9, 1, Decimal("9.000000009"), Decimal("0.1")),
            UsageRow(D1, "a/z", 1, 1, 1, 0, Decimal("0.1"), Decimal(0)),
        ],
    )
    assert counts == WriteCounts(inserted=1, updated=1, deleted=1)
    assert usage_triggers.writes()[3:] == ["insert", "update", "delete"]
    assert stored_usage_of(session_factory, sample_key.id) == {
        (D1, "a/x"): (9, 9, 9, 1, Decimal("9.000000009"), Decimal("0.1")),
        (D1, "a/z"): (1, 1, 1, 0, Decimal("0.1"), Decimal(0)),
        (D2, "a/y"): (3, 3, 3, 0, Decimal("3.5"), Decimal(0)),
    }


def test_a_written_day_without_rows_deletes_that_days_rows(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    _write(
        session_factory, sample_key.id, [D1, D2], [UsageRow(D1, "a/x", 1), UsageRow(D2, "a/x", 1)]
    )
    assert _write(session_factory, sample_key.id, [D1], []) == WriteCounts(deleted=1)
    assert set(stored_usage_of(session_factory, sample_key.id)) == {(D2, "a/x")}


def test_many_rows_and_keys_share_statements_each_with_its_own_counts(
    session_factory: sessionmaker[Session], session: Session, sample_key: ApiKey
) -> None:
    other = ApiKey(user_id=sample_key.user_id, name="other", key_encrypted="v1:x")
    session.add(other)
    session.commit()
    days = [D1 + dt.timedelta(days=i) for i in range(30)]
    rows = [UsageRow(d, f"m/{i}", i, cost=Decimal(i) / 1000) for d in days for i in range(200)]
    with transaction(session_factory) as s:
        counts = write_usage(
            s,
            [
                KeyRows(sample_key.id, rows, frozenset(days)),
                KeyRows(other.id, rows[:10], frozenset(days)),
            ],
        )
    assert counts == [WriteCounts(inserted=6000), WriteCounts(inserted=10)]
    changed = [r._replace(requests_count=r.requests_count + (r.date == D1)) for r in rows]
    changed = [r for r in changed if r.model != "m/199"]
    assert _write(session_factory, sample_key.id, days, changed) == WriteCounts(
        updated=199, unchanged=5771, deleted=30
    )
    assert len(stored_usage_of(session_factory, sample_key.id)) == 5970
    assert len(stored_usage_of(session_factory, other.id)) == 10


def test_rows_of_other_keys_and_other_days_are_never_touched(
    session_factory: sessionmaker[Session], session: Session, sample_key: ApiKey
) -> None:
    other = ApiKey(user_id=sample_key.user_id, name="other", key_encrypted="v1:x")
    session.add(other)
    session.commit()
    _write(session_factory, other.id, [D1], [UsageRow(D1, "a/x", 5)])
    _write(session_factory, sample_key.id, [D2], [UsageRow(D2, "a/x", 5)])
    assert _write(session_factory, sample_key.id, [D1], []) == WriteCounts()
    assert _write(session_factory, sample_key.id, [D1], [UsageRow(D1, "a/x", 1)]) == WriteCounts(
        inserted=1
    )
    assert stored_usage_of(session_factory, other.id) == {
        (D1, "a/x"): (5, 0, 0, 0, Decimal(0), Decimal(0))
    }
    assert set(stored_usage_of(session_factory, sample_key.id)) == {(D1, "a/x"), (D2, "a/x")}


def test_write_refuses_rows_outside_the_days_duplicates_and_a_key_twice(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    with pytest.raises(ValueError, match="outside"):
        _write(session_factory, sample_key.id, [D1], [UsageRow(D2, "a/x")])
    with pytest.raises(ValueError, match="two rows"):
        _write(session_factory, sample_key.id, [D1], [UsageRow(D1, "a/x"), UsageRow(D1, "a/x")])
    with pytest.raises(ValueError, match="twice"), transaction(session_factory) as session:
        item = KeyRows(sample_key.id, [], frozenset([D1]))
        write_usage(session, [item, item])
    assert stored_usage_of(session_factory, sample_key.id) == {}


def test_a_row_that_appeared_after_the_read_fails_the_write_instead_of_doubling(
    postgres_url: str,
) -> None:
    # A writer outside the sync inserts the row after the write's snapshot was taken (staged
    # with PostgreSQL's repeatable read): the unique constraint refuses the second copy, and a
    # new transaction (the sync's retry) reads it and updates it.
    engine = create_db_engine(postgres_url)
    factory = make_session_factory(engine)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO users (email, password_hash) VALUES ('ops@example.com', '!')"
            )
            conn.exec_driver_sql(
                "INSERT INTO api_keys (user_id, name, key_encrypted) "
                "SELECT id, 'k', 'v1:x' FROM users"
            )
            key_id = conn.exec_driver_sql("SELECT id FROM api_keys").scalar_one()
        with factory() as session:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            session.execute(select(ApiKey.id)).all()  # the snapshot
            with engine.begin() as other:
                other.exec_driver_sql(
                    "INSERT INTO usage_stats (api_key_id, date, model) VALUES (%s, %s, 'a/x')",
                    (key_id, D1),
                )
            rows = [UsageRow(D1, "a/x", 2)]
            with pytest.raises(Exception, match="uniq_key_date_model"):
                write_usage(session, [KeyRows(key_id, rows, frozenset([D1]))])
        assert _write(factory, key_id, [D1], [UsageRow(D1, "a/x", 2)]) == WriteCounts(updated=1)
        assert stored_usage_of(factory, key_id)[(D1, "a/x")][0] == 2
    finally:
        engine.dispose()


def test_active_keys_skip_inactive_keys_and_users(session: Session) -> None:
    alice = User(email="alice@example.com", password_hash="!x")
    bob = User(email="bob@example.com", password_hash="!x", is_active=False)
    session.add_all([alice, bob])
    session.flush()
    on = ApiKey(user_id=alice.id, name="on", key_encrypted="v1:a")
    off = ApiKey(user_id=alice.id, name="off", key_encrypted="v1:b", is_active=False)
    bobs = ApiKey(user_id=bob.id, name="bob", key_encrypted="v1:c")
    session.add_all([on, off, bobs])
    session.commit()
    assert [k.id for k in key_store.active_keys(session)] == [on.id]
    assert key_store.active_keys(session, [off.id]) == []
    assert "v1:a" not in repr(key_store.active_keys(session)[0])


def test_keys_remember_what_openrouter_said(session: Session, sample_key: ApiKey) -> None:
    at = utcnow()
    key_store.mark_accepted(session, [sample_key.id], at)
    key_store.hold_back(session, sample_key.id, "b" * 64, at)
    session.commit()
    held = key_store.active_keys(session)[0]
    assert (held.suspicious_digest, held.suspicious_since) == ("b" * 64, at)
    key_store.remember_answer(session, sample_key.id, "d" * 64, 90)
    session.commit()
    session.refresh(sample_key)
    assert (sample_key.kind, sample_key.last_used_at, sample_key.activity_digest) == (
        "management",
        at,
        "d" * 64,
    )
    applied = key_store.active_keys(session)[0]
    assert (applied.activity_rows, applied.suspicious_digest, applied.suspicious_since) == (
        90,
        None,
        None,
    )
    key_store.mark_ordinary(session, sample_key.id)
    key_store.remember_answer(session, sample_key.id, None, None)
    session.commit()
    session.refresh(sample_key)
    assert (sample_key.kind, sample_key.activity_digest, sample_key.activity_rows) == (
        "ordinary",
        None,
        None,
    )


def test_ledger_records_a_run_its_keys_and_closes_stale_runs(
    session: Session, sample_key: ApiKey
) -> None:
    run_id = ledger.start_run(session, "sync")
    outcome = KeyOutcome(
        sample_key.id, sample_key.user_id, "k", "ok", WriteCounts(1, 2, 3, 4), http_requests=2
    )
    failed = KeyOutcome(sample_key.id, sample_key.user_id, "k", "failed", error="boom")
    ledger.record_outcomes(session, run_id, [outcome, failed])
    session.commit()
    assert ledger.interrupt_stale_runs(session) == [run_id]
    session.commit()
    run = session.get(SyncRun, run_id)
    assert run is not None
    assert (run.status, run.keys_ok, run.keys_failed) == ("interrupted", 1, 1)
    results = session.scalars(select(SyncKeyResult).order_by(SyncKeyResult.id)).all()
    assert [
        (r.status, r.rows_inserted, r.rows_updated, r.rows_unchanged, r.rows_deleted, r.error)
        for r in results
    ] == [("ok", 1, 2, 3, 4, None), ("failed", 0, 0, 0, 0, "boom")]
    ledger.finish_run(session, run_id, status="ok", keys_ok=1, keys_failed=0)
    with pytest.raises(ValueError, match="unknown run status"):
        ledger.finish_run(session, run_id, status="weird", keys_ok=0, keys_failed=0)
    with pytest.raises(ValueError, match="unknown trigger"):
        ledger.start_run(session, "cron")
