"""Drift: the catalogued keys whose settings at OpenRouter differ from what their ``[[limits]]``
table declares (a key changed by hand in OpenRouter's UI, or never applied), read from the
settings the last ``/keys`` listing recorded; no network.

``status``, ``/metrics`` and the ``limits_drift`` alert metric read it; ``limits plan`` asks
OpenRouter itself (:mod:`worker.guards.limits`). A key registered as a management key is
never a limit's (the watcher never changes one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.config.limits import LimitTable, table_for
from worker.core.errors import ConfigError
from worker.core.key_settings import KeySettings
from worker.core.logs import get_logger
from worker.core.render import dollars
from worker.store import guards as store
from worker.store.models import KIND_MANAGEMENT, ApiKey

log = get_logger("worker.guards")


@dataclass(frozen=True)
class Drift:
    """One key whose settings differ from its table's."""

    account_id: int
    account: str
    key_hash: str
    key: str
    table: str  # the table's label
    current: dict[str, Any]  # the differing settings as OpenRouter has them
    wanted: dict[str, Any]  # … and as the table declares them
    seen_at: dt.datetime | None  # when the listing said so


def drifted(session: Session, tables: Sequence[LimitTable]) -> list[Drift]:
    """Every catalogued key a table matches whose recorded settings differ from it; a
    :class:`~worker.core.errors.ConfigError` naming both tables when two match one key."""
    if not tables:
        return []
    management = set(session.scalars(select(ApiKey.id).where(ApiKey.kind == KIND_MANAGEMENT)))
    found = []
    for row in store.key_settings(session):
        if row.registered_key_id in management:
            continue
        table = table_for(tables, row.account_name, row.name)
        if table is None:
            continue
        current = KeySettings(
            disabled=row.disabled,
            limit=row.limit,
            limit_reset=row.limit_reset,
            include_byok_in_limit=row.include_byok_in_limit,  # None: not read yet
        )
        changes = current.changes_to(table.wanted())
        if changes:
            found.append(
                Drift(
                    account_id=row.account_id,
                    account=row.account_name,
                    key_hash=row.hash,
                    key=row.name,
                    table=table.label,
                    current={name: getattr(current, name) for name in changes},
                    wanted=changes,
                    seen_at=row.settings_seen_at,
                )
            )
    return found


def drifted_or_none(session: Session, tables: Sequence[LimitTable]) -> list[Drift]:
    """:func:`drifted` for the daemon's own readers (the alerts, ``/metrics``): a
    configuration error is logged (the daemon refused it at start-up; the catalogue changed
    since) and reads as no drift, rather than stopping the poll or the scrape."""
    try:
        return drifted(session, tables)
    except ConfigError as exc:
        log.error("limits_not_checked", error=str(exc))
        return []


def describe(drift: Drift) -> str:
    """One line for people: what differs, as OpenRouter has it and as declared."""
    parts = [
        f"{name} {_shown(drift.current[name], name)} (declared {_shown(drift.wanted[name], name)})"
        for name in drift.wanted
    ]
    return (
        f'key "{drift.key}" of account "{drift.account}" drifted from {drift.table}: '
        + ", ".join(parts)
    )


def _shown(value: Any, name: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return dollars(Decimal(value)) if name == "limit" else str(value)
