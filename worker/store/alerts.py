"""The alerts' SQL: states, fired events, the notification outbox, and the sync failures the
``sync_failing`` metric counts. Every function runs in the caller's transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import ColumnElement, false, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from worker.store.models import (
    AlertEvent,
    AlertNotification,
    AlertState,
    ApiKey,
    SyncKeyResult,
    User,
)

OPEN = ("pending", "failed")  # notifications still to deliver
SENDING = "sending"  # claimed by one sender, which records the result next
INTERRUPTED = (
    "interrupted while sending (the sender stopped before recording the result): it may have "
    "reached the receiver, and is sent again"
)


@dataclass(frozen=True, slots=True)
class Failing:
    """A registered key and how many of its latest syncs failed in a row."""

    api_key_id: int
    name: str
    kind: str | None
    user: str
    count: int


def sync_failures(session: Session) -> list[Failing]:
    """Every active registered key with its consecutive failed syncs (0 when the last was ok
    or it never synced)."""
    later = aliased(SyncKeyResult)
    last_ok = (
        select(func.coalesce(func.max(later.id), 0))
        .where(later.api_key_id == SyncKeyResult.api_key_id, later.status == "ok")
        .scalar_subquery()
    )
    counts = dict(
        session.execute(
            select(SyncKeyResult.api_key_id, func.count())
            .where(SyncKeyResult.status == "failed", SyncKeyResult.id > last_ok)
            .group_by(SyncKeyResult.api_key_id)
        ).all()
    )
    rows = session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.kind, User.email)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.is_active.is_(True), User.is_active.is_(True))
        .order_by(ApiKey.id)
    )
    return [Failing(i, n, k, e, int(counts.get(i, 0))) for i, n, k, e in rows]


def states(session: Session, rules: Sequence[str]) -> dict[tuple[str, str, str], AlertState]:
    """The stored states of these rules, by (rule, subject, threshold)."""
    if not rules:
        return {}
    found = session.scalars(select(AlertState).where(AlertState.rule.in_(list(rules))))
    return {(s.rule, s.subject, s.threshold): s for s in found}


def add_event(
    session: Session, event: AlertEvent, channels: Sequence[str], now: dt.datetime
) -> int:
    """Store a fired alert and one pending notification per channel (the outbox)."""
    session.add(event)
    session.flush()
    session.add_all(
        AlertNotification(
            event_id=event.id, channel=name, status="pending", attempts=0, created_at=now
        )
        for name in channels
    )
    return event.id


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notification to send: its channel and what the event says."""

    id: int
    event_id: int
    channel: str
    title: str
    body: str


def abandon_stale(session: Session, before: dt.datetime) -> int:
    """Give up notifications still undelivered since before ``before``."""
    result = session.execute(
        update(AlertNotification)
        .where(AlertNotification.status.in_(OPEN), AlertNotification.created_at < before)
        .values(status="abandoned")
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def reclaim_interrupted(session: Session, before: dt.datetime) -> int:
    """Hand back for sending the notifications claimed before ``before`` and never recorded
    (their sender died mid-send): the one case where a receiver may see a message twice."""
    result = session.execute(
        update(AlertNotification)
        .where(AlertNotification.status == SENDING, AlertNotification.last_attempt_at < before)
        .values(status="failed", error=INTERRUPTED)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claim(session: Session, notification_id: int, at: dt.datetime) -> bool:
    """Take one notification for sending, if no other sender has: the UPDATE's own WHERE is
    the check, so of two senders (say, two daemons around a failover) exactly one wins."""
    result = session.execute(
        update(AlertNotification)
        .where(AlertNotification.id == notification_id, AlertNotification.status.in_(OPEN))
        .values(status=SENDING, last_attempt_at=at)
    )
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


def outgoing(session: Session) -> list[Outgoing]:
    """Notifications still to deliver, oldest first."""
    rows = session.execute(
        select(
            AlertNotification.id,
            AlertNotification.event_id,
            AlertNotification.channel,
            AlertEvent.title,
            AlertEvent.body,
        )
        .join(AlertEvent, AlertEvent.id == AlertNotification.event_id)
        .where(AlertNotification.status.in_(OPEN))
        .order_by(AlertNotification.id)
    )
    return [Outgoing(*row) for row in rows]


def record_attempts(
    session: Session,
    notification_id: int,
    *,
    attempts: int,
    at: dt.datetime,
    status: str,
    error: str | None,
) -> None:
    """Record a delivery's attempts and their result (``sent``, ``failed``, ``abandoned``),
    ending its claim."""
    values: dict[str, object] = {
        "attempts": AlertNotification.attempts + attempts,
        "last_attempt_at": at,
        "status": status,
        "error": error,
    }
    if status == "sent":
        values["sent_at"] = at
    session.execute(
        update(AlertNotification).where(AlertNotification.id == notification_id).values(values)
    )


@dataclass(frozen=True)
class HistoryItem:
    """A fired alert and what became of its notifications."""

    id: int
    fired_at: dt.datetime
    rule: str
    metric: str
    subject: str
    subject_name: str
    threshold: str
    value: Decimal | None
    period: str
    title: str
    notifications: list[dict[str, object]]


_KEYED_SUBJECTS = ("account", "key", "registered")


def subject_key_id(subject: str) -> int | None:
    """The registered key (``api_keys.id``) an alert's subject belongs to, or None.

    Subjects name it first: ``account:ID`` (an account: its management key),
    ``key:ID:HASH`` (a key of that account), ``key:ID`` (an ordinary key polled on its own),
    ``registered:ID`` (``sync_failing``). The daily digest's ``all`` belongs to no key.
    """
    kind, _, rest = subject.partition(":")
    head = rest.partition(":")[0]
    return int(head) if kind in _KEYED_SUBJECTS and head.isdigit() else None


def _about_keys(key_ids: Sequence[int]) -> ColumnElement[bool]:
    """Alert subjects that name one of these registered keys (see :func:`subject_key_id`)."""
    exact = [f"{kind}:{key_id}" for key_id in key_ids for kind in _KEYED_SUBJECTS]
    listed = [AlertEvent.subject.like(f"key:{key_id}:%") for key_id in key_ids]
    return or_(AlertEvent.subject.in_(exact), *listed) if key_ids else false()


def history(
    session: Session,
    since: dt.datetime | None = None,
    *,
    user_id: int | None = None,
    last: int | None = None,
) -> list[HistoryItem]:
    """Fired alerts (and digests), oldest first, with each channel's delivery.

    ``user_id``: only the alerts about that user's keys and accounts (the owner of the
    registered key the subject names); never a digest, which covers every account. ``last``:
    only the newest so many (the dashboard's panel), still oldest first.
    """
    stmt = select(AlertEvent)
    if since is not None:
        stmt = stmt.where(AlertEvent.fired_at >= since)
    if user_id is not None:
        owned = list(session.scalars(select(ApiKey.id).where(ApiKey.user_id == user_id)))
        stmt = stmt.where(_about_keys(owned))
    if last is not None:
        newest = stmt.order_by(AlertEvent.fired_at.desc(), AlertEvent.id.desc()).limit(last)
        events = list(session.scalars(newest))[::-1]
    else:
        events = list(session.scalars(stmt.order_by(AlertEvent.fired_at, AlertEvent.id)))
    sent: dict[int, list[dict[str, object]]] = {}
    ids = [e.id for e in events]
    for start in range(0, len(ids), 500):
        for n in session.scalars(
            select(AlertNotification)
            .where(AlertNotification.event_id.in_(ids[start : start + 500]))
            .order_by(AlertNotification.id)
        ):
            sent.setdefault(n.event_id, []).append(
                {
                    "channel": n.channel,
                    "status": n.status,
                    "attempts": n.attempts,
                    "last_attempt_at": n.last_attempt_at,
                    "sent_at": n.sent_at,
                    "error": n.error,
                }
            )
    return [
        HistoryItem(
            e.id,
            e.fired_at,
            e.rule,
            e.metric,
            e.subject,
            e.subject_name,
            e.threshold,
            e.value,
            e.period,
            e.title,
            sent.get(e.id, []),
        )
        for e in events
    ]
