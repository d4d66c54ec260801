"""The schema's constraints, defaults and cascades, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.store.models import ApiKey, ApiToken, UsageStats, User


def _add_user(session: Session, email: str) -> User:
    user = User(email=email, password_hash="!x")
    session.add(user)
    session.flush()
    return user


def test_email_must_be_unique(session: Session, sample_user: User) -> None:
    session.add(User(email=sample_user.email, password_hash="!x"))
    with pytest.raises(IntegrityError):
        session.flush()


@pytest.mark.parametrize("email", ["bad", "a@b"])
def test_email_check_rejects_malformed_addresses(engine: Engine, email: str) -> None:
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (email, password_hash) VALUES (:e, 'x')"), {"e": email}
        )


def test_email_check_accepts_a_normal_address(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (email, password_hash) VALUES ('user@example.com', 'x')")
        )
        count = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
    assert count == 1


def test_usage_is_unique_per_key_date_and_model(session: Session, sample_key: ApiKey) -> None:
    day = dt.date(2026, 11, 1)
    session.add(UsageStats(api_key_id=sample_key.id, date=day, model="openai/gpt-4.1"))
    session.commit()
    session.add(UsageStats(api_key_id=sample_key.id, date=day, model="openai/gpt-4.1"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_server_defaults_fill_counts_cost_flags_and_timestamps(engine: Engine) -> None:
    """Defaults come from the database itself, so raw SQL inserts get them too."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (email, password_hash) VALUES ('d@example.com', 'x')"))
        user_id = conn.execute(text("SELECT id FROM users")).scalar_one()
        conn.execute(
            text("INSERT INTO api_keys (user_id, name, key_encrypted) VALUES (:u, 'k', 'c')"),
            {"u": user_id},
        )
        key_id = conn.execute(text("SELECT id FROM api_keys")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO usage_stats (api_key_id, date, model) VALUES (:k, '2026-11-01', 'm')"
            ),
            {"k": key_id},
        )
        conn.execute(
            text("INSERT INTO api_tokens (user_id, token_hash, name) VALUES (:u, 'h', 't')"),
            {"u": user_id},
        )
    with Session(engine) as session:
        user = session.scalars(select(User)).one()
        key = session.scalars(select(ApiKey)).one()
        usage = session.scalars(select(UsageStats)).one()
        token = session.scalars(select(ApiToken)).one()
    assert user.is_active is True and key.is_active is True and token.is_active is True
    assert (usage.requests_count, usage.tokens_input, usage.tokens_output) == (0, 0, 0)
    assert (usage.tokens_reasoning, usage.cost, usage.byok_cost) == (0, Decimal(0), Decimal(0))
    now = dt.datetime.now(dt.UTC)
    for stamp in (
        user.created_at,
        user.updated_at,
        key.created_at,
        usage.created_at,
        token.created_at,
    ):
        assert stamp.tzinfo is not None and stamp.utcoffset() == dt.timedelta(0)
        assert abs(now - stamp) < dt.timedelta(minutes=5)


def test_orm_defaults_set_created_at_in_utc(session: Session, sample_user: User) -> None:
    assert sample_user.created_at.tzinfo is not None
    assert sample_user.created_at.utcoffset() == dt.timedelta(0)
    assert sample_user.is_active is True


@pytest.mark.parametrize(
    "amount", ["0.000001", "9999.999999", "454.542594979", "0.000000001", "123456.123456789"]
)
def test_money_round_trips_exactly_as_decimal(
    session_factory: object, sample_key: ApiKey, amount: str
) -> None:
    from sqlalchemy.orm import sessionmaker

    assert isinstance(session_factory, sessionmaker)
    with session_factory.begin() as session:
        session.add(
            UsageStats(
                api_key_id=sample_key.id,
                date=dt.date(2026, 1, 1),
                model="m",
                cost=Decimal(amount),
                byok_cost=Decimal(amount),
            )
        )
    with session_factory() as session:
        row = session.scalars(select(UsageStats)).one()
    assert isinstance(row.cost, Decimal)
    assert row.cost == Decimal(amount)
    assert row.byok_cost == Decimal(amount)


def test_float_money_is_refused(session: Session, sample_key: ApiKey) -> None:
    session.add(UsageStats(api_key_id=sample_key.id, date=dt.date(2026, 1, 1), model="m", cost=0.1))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="Decimal"):
        session.flush()


def test_deleting_a_user_in_sql_cascades_to_keys_usage_and_tokens(
    engine: Engine, session: Session, sample_key: ApiKey
) -> None:
    other = _add_user(session, "bob@example.com")
    other_key = ApiKey(user_id=other.id, name="k", key_encrypted="c")
    session.add(other_key)
    session.add(UsageStats(api_key_id=sample_key.id, date=dt.date(2026, 1, 1), model="m"))
    session.add(ApiToken(user_id=sample_key.user_id, token_hash="h", name="t"))
    session.commit()
    session.add(UsageStats(api_key_id=other_key.id, date=dt.date(2026, 1, 1), model="m"))
    session.commit()

    with engine.begin() as conn:  # plain SQL: the database itself must cascade
        conn.execute(text("DELETE FROM users WHERE email = 'alice@example.com'"))

    with engine.connect() as conn:
        keys = conn.execute(text("SELECT user_id FROM api_keys")).scalars().all()
        usage = conn.execute(text("SELECT api_key_id FROM usage_stats")).scalars().all()
        tokens = conn.execute(text("SELECT count(*) FROM api_tokens")).scalar_one()
    assert keys == [other.id]
    assert usage == [other_key.id]
    assert tokens == 0


def test_deleting_a_user_through_the_orm_cascades(session: Session, sample_key: ApiKey) -> None:
    session.add(UsageStats(api_key_id=sample_key.id, date=dt.date(2026, 1, 1), model="m"))
    session.commit()
    session.delete(session.get(User, sample_key.user_id))
    session.commit()
    assert session.scalar(select(func.count()).select_from(UsageStats)) == 0
    assert session.scalar(select(func.count()).select_from(ApiKey)) == 0


def test_relationships_navigate_both_ways(session: Session, sample_key: ApiKey) -> None:
    session.add(UsageStats(api_key_id=sample_key.id, date=dt.date(2026, 1, 1), model="m"))
    session.add(ApiToken(user_id=sample_key.user_id, token_hash="h", name="t"))
    session.commit()
    session.expire_all()
    user = session.get(User, sample_key.user_id)
    assert user is not None
    assert [k.name for k in user.api_keys] == ["production"]
    assert [t.name for t in user.api_tokens] == ["t"]
    assert user.api_keys[0].usage_stats[0].api_key.user is user
    assert user.api_tokens[0].user is user
