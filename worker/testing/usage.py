"""Reading back what the sync stored, for tests that compare it with expected sums."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.models import UsageStats


def stored_usage(session: Session, api_key_id: int) -> dict[tuple[dt.date, str], tuple[Any, ...]]:
    """The key's usage rows as ``{(date, model): (requests, in, out, reasoning, cost, byok)}``."""
    rows = session.execute(select(UsageStats).where(UsageStats.api_key_id == api_key_id))
    return {
        (r.date, r.model): (
            r.requests_count,
            r.tokens_input,
            r.tokens_output,
            r.tokens_reasoning,
            r.cost,
            r.byok_cost,
        )
        for r in rows.scalars()
    }


def stored_usage_of(
    factory: sessionmaker[Session], api_key_id: int
) -> dict[tuple[dt.date, str], tuple[Any, ...]]:
    """:func:`stored_usage` in a session of its own."""
    with factory() as session:
        return stored_usage(session, api_key_id)
