"""``account-keys``: every key of the registered accounts, as the last sync listed it, with what
the live poll says it spends today and this month, its limit and what is left of it, and the
last guard action on it; no network."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from worker.reports.live import figures
from worker.store import guards
from worker.store.catalogue import AccountKeyView, listing


@dataclass(frozen=True)
class AccountKeyRow:
    """One key of an account: the catalogue's view, then the live poll's and the guards'."""

    account_id: int
    account_name: str
    name: str
    hash: str
    disabled: bool
    limit: Decimal | None
    gone: bool
    registered_key_id: int | None
    created_at: dt.datetime | None
    last_seen_at: dt.datetime
    fetch_error: str | None
    # From the live poll (None before the key's first poll, or when its figure is not today's).
    today: Decimal | None = None
    month: Decimal | None = None
    limit_remaining: Decimal | None = None
    limit_reset: str | None = None
    as_of: dt.datetime | None = None
    last_guard_action: dict[str, Any] | None = None


def account_keys(
    session: Session,
    account_id: int | None = None,
    *,
    user_id: int | None = None,
    now: dt.datetime | None = None,
) -> list[AccountKeyRow]:
    """The catalogue (of one account, of ``user_id``'s, or all), newest key first, with each
    key's live figures and last guard action."""
    keys = listing(session, account_id, user_id=user_id)
    accounts = sorted({k.account_id for k in keys})
    live = {
        (f.api_key_id, f.key_hash): f
        for f in figures(session, now=now, scopes=("key",), listed_only=False, api_key_ids=accounts)
    }
    actions = guards.latest_per_key(session) if keys else {}
    resets = _resets(session, accounts)
    rows = []
    for key in keys:
        fig = live.get((key.account_id, key.hash))
        action = actions.get((key.account_id, key.hash))
        rows.append(
            AccountKeyRow(
                **{f.name: getattr(key, f.name) for f in dataclasses.fields(AccountKeyView)},
                today=fig.today if fig else None,
                month=fig.month if fig else None,
                limit_remaining=fig.limit_remaining if fig else None,
                limit_reset=resets.get((key.account_id, key.hash)),
                as_of=fig.as_of if fig else None,
                last_guard_action=(
                    {
                        "id": action.id,
                        "rule": action.rule,
                        "action": action.action,
                        "status": action.status,
                        "at": action.sent_at or action.created_at,
                    }
                    if action
                    else None
                ),
            )
        )
    return rows


def _resets(session: Session, accounts: list[int]) -> dict[tuple[int, str], str | None]:
    return {
        (row.account_id, row.hash): row.limit_reset
        for row in guards.key_settings(session, accounts)
    }
