"""The guards' SQL: the audit trail of changes to keys (``guard_actions``), its outbox, and the
settings each catalogued key had at the last listing. Every function runs in the caller's
transaction.

A key's settings travel as JSON text (:func:`settings_json`): ``disabled``, ``limit`` (exact
decimal text or null), ``limit_reset``, ``include_byok_in_limit`` and OpenRouter's
``updated_at`` when known: what the watcher compares before it undoes anything.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, false, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.store.models import AccountKey, ApiKey, GuardAction
from worker.store.models.guards import ABANDONED, FAILED, KEPT, PENDING, RESTORED, SENT

_CONFLICT = ("rule", "account_id", "key_hash", "period")


def settings_json(settings: Mapping[str, Any]) -> str:
    """A key's settings (or the changed part of them) as the JSON text stored."""
    out = {}
    for name, value in settings.items():
        if isinstance(value, Decimal):
            value = format(value.normalize(), "f")
        elif isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        out[name] = value
    return json.dumps(out, sort_keys=True)


def settings_of(text: str | None) -> dict[str, Any]:
    """Stored JSON settings back as values (``limit`` a Decimal, ``updated_at`` a datetime)."""
    if not text:
        return {}
    found: dict[str, Any] = json.loads(text)
    if found.get("limit") is not None:
        found["limit"] = Decimal(found["limit"])
    if found.get("updated_at"):
        found["updated_at"] = dt.datetime.fromisoformat(found["updated_at"])
    return found


@dataclass(frozen=True)
class Action:
    """One guard action, as the commands, the API and the dashboard show it."""

    id: int
    rule: str
    source: str
    account_id: int
    account_name: str
    key_hash: str
    key_name: str
    action: str
    period: str
    mode: str
    status: str
    restore: str
    before: dict[str, Any]
    wanted: dict[str, Any]
    after: dict[str, Any]
    metric: str | None
    threshold: str | None
    value: Decimal | None
    event_id: int | None
    attempts: int
    created_at: dt.datetime
    sent_at: dt.datetime | None
    restored_at: dt.datetime | None
    error: str | None


def _action(row: GuardAction, account_name: str) -> Action:
    return Action(
        id=row.id,
        rule=row.rule,
        source=row.source,
        account_id=row.account_id,
        account_name=account_name,
        key_hash=row.key_hash,
        key_name=row.key_name,
        action=row.action,
        period=row.period,
        mode=row.mode,
        status=row.status,
        restore=row.restore,
        before=settings_of(row.before),
        wanted=settings_of(row.wanted),
        after=settings_of(row.after),
        metric=row.metric,
        threshold=row.threshold,
        value=row.value,
        event_id=row.event_id,
        attempts=row.attempts,
        created_at=row.created_at,
        sent_at=row.sent_at,
        restored_at=row.restored_at,
        error=row.error,
    )


def add(session: Session, **values: Any) -> int | None:
    """Record a new action; its id, or None when (rule, account, key, period) already has one:
    the constraint, not this process's memory, keeps it to one."""
    dialect = session.get_bind().dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        builder(GuardAction)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(_CONFLICT))
        .returning(GuardAction.id)
    )
    return session.scalar(statement)


def _query(where: Sequence[ColumnElement[bool]] = ()) -> Any:
    return (
        select(GuardAction, ApiKey.name)
        .join(ApiKey, ApiKey.id == GuardAction.account_id)
        .where(*where)
        .order_by(GuardAction.id)
    )


def get(session: Session, action_id: int) -> Action | None:
    row = session.execute(_query([GuardAction.id == action_id])).first()
    return _action(*row) if row is not None else None


def outgoing(session: Session) -> list[Action]:
    """Actions still to send (enforce mode), oldest first."""
    return [_action(*row) for row in session.execute(_query([GuardAction.status == PENDING]))]


def restorable(session: Session) -> list[Action]:
    """Sent actions that undo themselves at the start of the next period (``next_period``)."""
    where = [
        GuardAction.status == SENT,
        GuardAction.restore == "next_period",
        GuardAction.source == "alert",
    ]
    return [_action(*row) for row in session.execute(_query(where))]


def latest(session: Session, rule: str, account_id: int, key_hash: str) -> Action | None:
    """The newest action of ``rule`` on the key (a [[limits]] table is asked once per drift)."""
    row = session.execute(
        _query(
            [
                GuardAction.rule == rule,
                GuardAction.account_id == account_id,
                GuardAction.key_hash == key_hash,
            ]
        )
        .order_by(None)
        .order_by(GuardAction.id.desc())
        .limit(1)
    ).first()
    return _action(*row) if row is not None else None


def history(
    session: Session, *, user_id: int | None = None, last: int | None = None
) -> list[Action]:
    """Every action (of ``user_id``'s accounts), oldest first; ``last``: the newest so many."""
    where = [ApiKey.user_id == user_id] if user_id is not None else []
    query = _query(where)
    if last is not None:
        newest = query.order_by(None).order_by(GuardAction.id.desc()).limit(last)
        return [_action(*row) for row in session.execute(newest)][::-1]
    return [_action(*row) for row in session.execute(query)]


def latest_per_key(session: Session) -> dict[tuple[int, str], Action]:
    """The newest action of each key, by (account id, key hash): ``account-keys`` shows it."""
    newest = (
        select(func.max(GuardAction.id))
        .group_by(GuardAction.account_id, GuardAction.key_hash)
        .scalar_subquery()
    )
    rows = session.execute(_query([GuardAction.id.in_(newest)]))
    return {(a.account_id, a.key_hash): a for a in (_action(*row) for row in rows)}


def counts(session: Session) -> list[tuple[str, str, str, int]]:
    """(rule, action, status, how many): what ``/metrics`` counts."""
    rows = session.execute(
        select(GuardAction.rule, GuardAction.action, GuardAction.status, func.count())
        .group_by(GuardAction.rule, GuardAction.action, GuardAction.status)
        .order_by(GuardAction.rule, GuardAction.action, GuardAction.status)
    )
    return [(rule, action, status, int(n)) for rule, action, status, n in rows]


def _set(session: Session, action_id: int, **values: Any) -> None:
    session.execute(update(GuardAction).where(GuardAction.id == action_id).values(**values))


def record_sent(
    session: Session, action_id: int, after: Mapping[str, Any], at: dt.datetime, attempts: int
) -> None:
    """The change is in place at OpenRouter (sent now, or found already so: ``attempts`` 0)."""
    _set(
        session,
        action_id,
        status=SENT,
        after=settings_json(after),
        sent_at=at,
        last_attempt_at=at if attempts else None,
        attempts=GuardAction.attempts + attempts,
        error=None,
    )


def record_failed(
    session: Session, action_id: int, error: str, at: dt.datetime, *, final: bool, attempts: int
) -> None:
    """An attempt failed: ``final`` (refused: never retried) or left pending for the next poll."""
    values: dict[str, Any] = {
        "error": error,
        "last_attempt_at": at,
        "attempts": GuardAction.attempts + attempts,
    }
    if final:
        values["status"] = FAILED
    _set(session, action_id, **values)


def record_abandoned(session: Session, action_id: int, error: str) -> None:
    _set(session, action_id, status=ABANDONED, error=error)


def record_restored(
    session: Session, action_id: int, after: Mapping[str, Any], at: dt.datetime
) -> None:
    """The watcher undid its change: the key has its settings from before again."""
    _set(session, action_id, status=RESTORED, restored_at=at, after=settings_json(after))


def record_kept(session: Session, action_id: int, reason: str) -> None:
    """The change is not undone (the key changed since): never tried again."""
    _set(session, action_id, status=KEPT, error=reason)


def record_restore_failed(session: Session, action_id: int, error: str) -> None:
    """Undoing failed (OpenRouter unavailable): tried again at the next poll."""
    _set(session, action_id, error=error)


def key_settings(session: Session, account_ids: Sequence[int] | None = None) -> list[Any]:
    """The catalogued keys still listed, with their settings at the last listing and their
    account's name: (account_id, account name, hash, name, disabled, limit, limit_reset,
    include_byok_in_limit, registered_key_id, settings_seen_at)."""
    query = (
        select(
            AccountKey.account_id,
            ApiKey.name.label("account_name"),
            AccountKey.hash,
            AccountKey.name,
            AccountKey.disabled,
            AccountKey.limit,
            AccountKey.limit_reset,
            AccountKey.include_byok_in_limit,
            AccountKey.registered_key_id,
            AccountKey.settings_seen_at,
        )
        .join(ApiKey, ApiKey.id == AccountKey.account_id)
        .where(AccountKey.gone_at.is_(None), ApiKey.is_active.is_(True))
        .order_by(AccountKey.account_id, AccountKey.name, AccountKey.id)
    )
    if account_ids is not None:
        query = query.where(
            AccountKey.account_id.in_(list(account_ids)) if account_ids else false()
        )
    return list(session.execute(query))
