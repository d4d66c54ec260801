"""Reading back what the sync stored, for tests that compare it with expected sums."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.store.models import AccountKey, KeyUsageStats, UsageStats

Stored = dict[tuple[dt.date, str], tuple[Any, ...]]


def _as_stored(rows: Iterable[UsageStats | KeyUsageStats]) -> Stored:
    return {
        (r.date, r.model): (
            r.requests_count,
            r.tokens_input,
            r.tokens_output,
            r.tokens_reasoning,
            r.cost,
            r.byok_cost,
        )
        for r in rows
    }


def stored_usage(session: Session, api_key_id: int) -> Stored:
    """The key's usage rows as ``{(date, model): (requests, in, out, reasoning, cost, byok)}``."""
    return _as_stored(
        session.scalars(select(UsageStats).where(UsageStats.api_key_id == api_key_id))
    )


def stored_usage_of(
    factory: sessionmaker[Session], api_key_id: int
) -> dict[tuple[dt.date, str], tuple[Any, ...]]:
    """:func:`stored_usage` in a session of its own."""
    with factory() as session:
        return stored_usage(session, api_key_id)


def stored_key_usage_of(factory: sessionmaker[Session], account_key_id: int) -> Stored:
    """A catalogued key's own rows (``key_usage_stats``), shaped like :func:`stored_usage`."""
    with factory() as session:
        query = select(KeyUsageStats).where(KeyUsageStats.account_key_id == account_key_id)
        return _as_stored(session.scalars(query))


def catalogue_of(factory: sessionmaker[Session], account_id: int) -> dict[str, AccountKey]:
    """An account's catalogue (``account_keys``) by key hash."""
    with factory() as session:
        rows = session.scalars(select(AccountKey).where(AccountKey.account_id == account_id))
        return {row.hash: row for row in rows}
