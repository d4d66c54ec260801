"""worker.store: the idempotent write and the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session, sessionmaker

from worker import store
from worker.db import create_db_engine, make_session_factory, transaction
from worker.models import ApiKey, SyncKeyResult, SyncRun, User, utcnow
from worker.store import UsageRow, WriteCounts
from worker.testing.usage import stored_usage

D1 = dt.date(2026, 11, 1)
D2 = dt.date(2026, 11, 2)


def _write(
    factory: sessionmaker[Session],
    key_id: int,
    days: list[dt.date],
    rows: list[UsageRow],
    **kwargs: int,
) -> WriteCounts:
    with transaction(factory) as session:
        return store.write_key_days(session, key_id, days, rows, **kwargs)


def test_write_inserts_then_an_identical_write_sends_nothing(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    rows = [
        UsageRow(D1, "openai/gpt-4.1", 3, 100, 50, 70, Decimal("0.3"), Decimal("0.000000001")),
        UsageRow(D2, "openai/gpt-4.1", 1, 10, 5, 0, Decimal("454.542594979"), Decimal(0)),
    ]
    assert _write(session_factory, sample_key.id, [D1, D2], rows) == WriteCounts(inserted=2)

    statements: list[str] = []
    engine = session_factory.kw["bind"]

    def _capture(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", _capture)
    try:
        again = _write(session_factory, sample_key.id, [D1, D2], rows)
    finally:
        event.remove(engine, "before_cursor_execute", _capture)
    assert again == WriteCounts(unchanged=2)
    assert not [s for s in statements if not s.lstrip().upper().startswith("SELECT")]

    with session_factory() as session:
        stored = stored_usage(session, sample_key.id)
    assert stored[(D1, "openai/gpt-4.1")] == (
        3,
        100,
        50,
        70,
        Decimal("0.3"),
        Decimal("0.000000001"),
    )
    assert stored[(D2, "openai/gpt-4.1")][4] == Decimal("454.542594979")


def test_a_restated_day_replaces_values_and_deletes_vanished_models_only_that_day(
    session_factory: sessionmaker[Session], sample_key: ApiKey
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
    with session_factory() as session:
        stored = stored_usage(session, sample_key.id)
    assert stored == {
        (D1, "a/x"): (9, 9, 9, 1, Decimal("9.000000009"), Decimal("0.1")),
        (D1, "a/z"): (1, 1, 1, 0, Decimal("0.1"), Decimal(0)),
        (D2, "a/y"): (3, 3, 3, 0, Decimal("3.5"), Decimal(0)),
    }


def test_a_fetched_day_without_rows_deletes_that_daysstored_usage(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    _write(
        session_factory, sample_key.id, [D1, D2], [UsageRow(D1, "a/x", 1), UsageRow(D2, "a/x", 1)]
    )
    assert _write(session_factory, sample_key.id, [D1], []) == WriteCounts(deleted=1)
    with session_factory() as session:
        assert set(stored_usage(session, sample_key.id)) == {(D2, "a/x")}


def test_writes_are_chunked_and_counted_exactly(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    days = [D1 + dt.timedelta(days=i) for i in range(5)]
    rows = [UsageRow(d, f"m/{i}", i, cost=Decimal(i) / 1000) for d in days for i in range(7)]
    assert _write(session_factory, sample_key.id, days, rows, chunk_size=4) == WriteCounts(
        inserted=35
    )
    changed = [
        UsageRow(r.date, r.model, r.requests_count + (r.date == D1), cost=r.cost)
        for r in rows
        if r.model != "m/6"
    ]
    assert _write(session_factory, sample_key.id, days, changed, chunk_size=4) == WriteCounts(
        updated=7 - 1, unchanged=24, deleted=5
    )
    with session_factory() as session:
        assert len(stored_usage(session, sample_key.id)) == 30


def test_rows_of_other_keys_are_never_touched(
    session_factory: sessionmaker[Session], session: Session, sample_key: ApiKey
) -> None:
    other = ApiKey(user_id=sample_key.user_id, name="other", key_encrypted="v1:x")
    session.add(other)
    session.commit()
    _write(session_factory, other.id, [D1], [UsageRow(D1, "a/x", 5)])
    assert _write(session_factory, sample_key.id, [D1], []) == WriteCounts()
    assert _write(session_factory, sample_key.id, [D1], [UsageRow(D1, "a/x", 1)]) == WriteCounts(
        inserted=1
    )
    with session_factory() as s:
        assert stored_usage(s, other.id) == {(D1, "a/x"): (5, 0, 0, 0, Decimal(0), Decimal(0))}


@pytest.mark.parametrize("plain_inserts", [False, True])
def test_write_rejects_rows_outside_the_days_and_duplicates(
    session_factory: sessionmaker[Session], sample_key: ApiKey, plain_inserts: bool
) -> None:
    def write(rows: list[UsageRow]) -> None:
        with transaction(session_factory) as session:
            store.write_keys_days(
                session, [(sample_key.id, rows)], [D1], plain_inserts=plain_inserts
            )

    with pytest.raises(ValueError, match="outside"):
        write([UsageRow(D2, "a/x")])
    with pytest.raises(ValueError, match="aggregate first"):
        write([UsageRow(D1, "a/x"), UsageRow(D1, "a/x")])
    with session_factory() as session:
        assert stored_usage(session, sample_key.id) == {}


def test_plain_inserts_store_exactly_what_the_upsert_stores(
    session_factory: sessionmaker[Session], sample_key: ApiKey, sample_user: User
) -> None:
    with transaction(session_factory) as session:
        other = ApiKey(user_id=sample_user.id, name="other", key_encrypted="x", is_active=True)
        session.add(other)
        session.flush()
        other_id = other.id
    rows = [
        UsageRow(D1, "openai/gpt-4.1", 3, 100, 50, 70, Decimal("454.542594979"), Decimal("1e-9")),
        UsageRow(D2, "a/x", 1, 2**40, 5, 0, Decimal("0.3"), Decimal(0)),
    ]
    with transaction(session_factory) as session:
        counts = store.write_keys_days(
            session, [(sample_key.id, rows), (other_id, rows)], [D1, D2], plain_inserts=True
        )
    assert counts == [WriteCounts(inserted=2), WriteCounts(inserted=2)]
    with transaction(session_factory) as session:
        again = store.write_keys_days(session, [(sample_key.id, rows)], [D1, D2])
    assert again == [WriteCounts(unchanged=2)]
    with session_factory() as session:
        assert stored_usage(session, sample_key.id) == stored_usage(session, other_id)
        assert stored_usage(session, sample_key.id)[(D1, "openai/gpt-4.1")] == (
            3,
            100,
            50,
            70,
            Decimal("454.542594979"),
            Decimal("0.000000001"),
        )


def test_active_keys_skip_inactive_keys_and_users(session: Session) -> None:
    alice = User(email="alice@example.com", password_hash="!x")
    bob = User(email="bob@example.com", password_hash="!x", is_active=False)
    session.add_all([alice, bob])
    session.flush()
    k1 = ApiKey(user_id=alice.id, name="a1", key_encrypted="c1")
    k2 = ApiKey(user_id=alice.id, name="a2", key_encrypted="c2", is_active=False)
    k3 = ApiKey(user_id=bob.id, name="b1", key_encrypted="c3")
    k4 = ApiKey(user_id=alice.id, name="a3", key_encrypted="c4")
    session.add_all([k1, k2, k3, k4])
    session.commit()
    assert [k.id for k in store.active_keys(session)] == [k1.id, k4.id]
    assert [k.id for k in store.active_keys(session, [k4.id, k2.id])] == [k4.id]
    assert "c1" not in repr(store.active_keys(session)[0])


def test_mark_key_seen_sets_kind_and_last_use(session: Session, sample_key: ApiKey) -> None:
    when = dt.datetime(2026, 11, 3, 0, 20, tzinfo=dt.UTC)
    store.mark_key_seen(session, sample_key.id, kind=store.KEY_MANAGEMENT, accepted_at=when)
    session.commit()
    session.refresh(sample_key)
    assert (sample_key.kind, sample_key.last_used_at) == ("management", when)
    store.mark_key_seen(session, sample_key.id, kind=store.KEY_ORDINARY)
    session.commit()
    session.refresh(sample_key)
    assert (sample_key.kind, sample_key.last_used_at) == ("ordinary", when)


def test_ledger_records_a_run_and_its_keys(session: Session, sample_key: ApiKey) -> None:
    run_id = store.start_run(session, "backfill")
    store.record_key_result(
        session, run_id, sample_key.id, status="ok", counts=WriteCounts(1, 2, 3, 4), http_requests=5
    )
    store.record_key_result(session, run_id, sample_key.id, status="failed", error="boom")
    store.finish_run(session, run_id, status="failed", keys_ok=1, keys_failed=1)
    session.commit()
    run = session.get(SyncRun, run_id)
    assert run is not None
    session.refresh(run)
    assert (run.trigger, run.status, run.keys_ok, run.keys_failed) == ("backfill", "failed", 1, 1)
    assert run.finished_at is not None and run.finished_at >= run.started_at
    results = session.execute(select(SyncKeyResult).order_by(SyncKeyResult.id)).scalars().all()
    assert [
        (
            r.status,
            r.rows_inserted,
            r.rows_updated,
            r.rows_unchanged,
            r.rows_deleted,
            r.http_requests,
            r.error,
        )
        for r in results
    ] == [("ok", 1, 2, 3, 4, 5, None), ("failed", 0, 0, 0, 0, 0, "boom")]


def test_ledger_rejects_unknown_states(session: Session, sample_key: ApiKey) -> None:
    with pytest.raises(ValueError):
        store.start_run(session, "cron")
    run_id = store.start_run(session, "sync")
    with pytest.raises(ValueError):
        store.record_key_result(session, run_id, sample_key.id, status="meh")
    with pytest.raises(ValueError):
        store.finish_run(session, run_id, status="done", keys_ok=0, keys_failed=0)


def test_the_upsert_guard_skips_a_row_whose_values_are_equal(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    """The IS DISTINCT FROM (SQLite: IS NOT) guard of the statement the sync sends: an equal
    conflicting row is not rewritten, a different one is."""
    _write(session_factory, sample_key.id, [D1], [UsageRow(D1, "a/x", 1, cost=Decimal("0.3"))])

    def send(cost: Decimal, session: Session) -> None:
        sqlite = session.get_bind().dialect.name == "sqlite"
        created = utcnow().replace(tzinfo=None).isoformat(" ") if sqlite else utcnow()
        row = UsageRow(D1, "a/x", 1, cost=cost)
        wire = store._wire(row, sqlite)
        day = D1.isoformat() if sqlite else D1
        values = (sample_key.id, day, "a/x", *wire, *((created,) if sqlite else ()))
        store.send_upserts(session, [values], created)

    with transaction(session_factory) as session:
        conn = session.connection()
        # What "written" means: PostgreSQL gives an updated row a new xmin; SQLite counts it
        # in total_changes().
        probe = (
            text("SELECT total_changes()")
            if conn.dialect.name == "sqlite"
            else text("SELECT xmin::text::bigint FROM usage_stats")
        )
        before = conn.execute(probe).scalar_one()
        send(Decimal("0.3"), session)
        after_same = conn.execute(probe).scalar_one()
        send(Decimal(1), session)
        after_change = conn.execute(probe).scalar_one()
    if conn.dialect.name == "sqlite":
        assert (after_same - before, after_change - after_same) == (0, 1)
    else:
        assert after_same == before
        assert after_change != before
    with session_factory() as session:
        assert stored_usage(session, sample_key.id)[(D1, "a/x")][4] == Decimal(1)


def test_unchanged_resync_does_not_advance_the_postgres_sequence(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    factory = make_session_factory(engine)
    try:
        with transaction(factory) as session:
            user = User(email="seq@example.com", password_hash="!x")
            session.add(user)
            session.flush()
            key = ApiKey(user_id=user.id, name="k", key_encrypted="c")
            session.add(key)
            session.flush()
            key_id = key.id
        rows = [UsageRow(D1, f"m/{i}", i) for i in range(10)]
        _write(factory, key_id, [D1], rows)
        with factory() as s:
            before = s.execute(text("SELECT last_value FROM usage_stats_id_seq")).scalar_one()
        assert _write(factory, key_id, [D1], rows) == WriteCounts(unchanged=10)
        with factory() as s:
            after = s.execute(text("SELECT last_value FROM usage_stats_id_seq")).scalar_one()
        assert after == before
    finally:
        engine.dispose()


def test_several_keys_share_one_write_and_each_gets_its_own_counts(
    session_factory: sessionmaker[Session], sample_key: ApiKey, sample_user: User
) -> None:
    with transaction(session_factory) as session:
        other = ApiKey(user_id=sample_user.id, name="other", key_encrypted="x", is_active=True)
        session.add(other)
        session.flush()
        other_id = other.id
    _write(session_factory, sample_key.id, [D1], [UsageRow(D1, "a/x", 1), UsageRow(D1, "a/y", 1)])
    _write(session_factory, other_id, [D1], [UsageRow(D1, "a/y", 5)])

    with transaction(session_factory) as session:
        counts = store.write_keys_days(
            session,
            [
                # a/y vanished for this key only: the other key's a/y stays.
                (sample_key.id, [UsageRow(D1, "a/x", 2)]),
                (other_id, [UsageRow(D1, "a/y", 5), UsageRow(D1, "b/z", 1)]),
            ],
            [D1],
        )

    assert counts == [WriteCounts(updated=1, deleted=1), WriteCounts(inserted=1, unchanged=1)]
    with session_factory() as session:
        assert {k: v[0] for k, v in stored_usage(session, sample_key.id).items()} == {
            (D1, "a/x"): 2
        }
        assert {k: v[0] for k, v in stored_usage(session, other_id).items()} == {
            (D1, "a/y"): 5,
            (D1, "b/z"): 1,
        }


def test_a_key_given_twice_in_one_write_is_refused(session: Session, sample_key: ApiKey) -> None:
    with pytest.raises(ValueError, match="twice"):
        store.write_keys_days(
            session, [(sample_key.id, []), (sample_key.id, [UsageRow(D1, "a/x", 1)])], [D1]
        )


def test_checksums_of_several_keys_in_one_query(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    _write(session_factory, sample_key.id, [D1, D2], [UsageRow(D1, "a/x", 2, cost=Decimal("0.5"))])
    with session_factory() as session:
        sums = store.window_checksums(session, [sample_key.id, 999_999], D1, D2)
        alone = store.window_checksum(session, 999_999, D1, D2)
    assert store.checksum_rows(sums[sample_key.id]) == 1
    assert sums[sample_key.id].startswith("1|2|")
    assert "500000000" in sums[sample_key.id]
    assert sums[999_999] == alone
    assert store.checksum_rows(sums[999_999]) == 0
