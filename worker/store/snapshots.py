"""The live poll's SQL: the keys it polls, the subjects it watches and their snapshots.

A snapshot is written only when one of a subject's figures changed since its newest one, so an
idle key costs nothing but the comparison; the subject's row points at its newest snapshot.
Every function runs in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, exists, insert, select, update
from sqlalchemy.orm import Session, aliased

from worker.store.models import ApiKey, LiveSnapshot, LiveSubject, User, to_money

# The figures a snapshot holds, in the order of LiveSnapshot's columns.
FIGURES = (
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
    "spend_limit",
    "limit_remaining",
    "balance",
    "disabled",
)
SELF = ""  # key_hash of the registered key's own subject (an account, or an ordinary key)
CHUNK = 500
NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Source:
    """A registered key the poll asks OpenRouter about (never its plaintext)."""

    id: int
    user_id: int
    name: str
    kind: str | None
    key_encrypted: str

    def __repr__(self) -> str:  # keep the ciphertext out of reprs and tracebacks
        return f"Source(id={self.id}, name={self.name!r}, kind={self.kind!r})"


@dataclass(frozen=True, slots=True)
class Observation:
    """One subject's figures in one poll (``values`` keyed by :data:`FIGURES`)."""

    key_hash: str
    scope: str  # account | key
    name: str
    values: dict[str, Any]


def poll_sources(session: Session) -> list[Source]:
    """Active keys of active users, by id: the accounts and keys a poll asks about."""
    stmt = (
        select(ApiKey.id, ApiKey.user_id, ApiKey.name, ApiKey.kind, ApiKey.key_encrypted)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.is_active.is_(True), User.is_active.is_(True))
        .order_by(ApiKey.id)
    )
    return [Source(*row) for row in session.execute(stmt)]


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, Decimal) or isinstance(new, Decimal):
        return to_money(old) == to_money(new)
    return bool(old == new)


def record(
    session: Session,
    api_key_id: int,
    observations: Sequence[Observation],
    now: dt.datetime,
    *,
    complete: bool,
) -> int:
    """Store one registered key's observations; returns the snapshots written.

    New subjects are created, renamed ones renamed, and a snapshot is added for each subject
    whose figures differ from its newest snapshot. ``complete``: the observations are every
    key ``/keys`` lists for the account, so a known key missing from them is marked unlisted
    (deleted on OpenRouter) and leaves the account's figures.
    """
    known = {
        row.key_hash: row
        for row in session.execute(
            select(
                LiveSubject.id,
                LiveSubject.key_hash,
                LiveSubject.name,
                LiveSubject.listed,
                LiveSubject.snapshot_id,
            ).where(LiveSubject.api_key_id == api_key_id)
        )
    }
    newest = _snapshots(session, [r.snapshot_id for r in known.values() if r.snapshot_id])
    changes: list[dict[str, Any]] = []
    new_subjects: list[LiveSubject] = []
    pending: list[tuple[Any, Observation]] = []
    for obs in observations:
        name = obs.name[:NAME_LENGTH]
        row = known.get(obs.key_hash)
        if row is None:
            subject = LiveSubject(
                api_key_id=api_key_id,
                key_hash=obs.key_hash,
                scope=obs.scope,
                name=name,
                listed=True,
                first_seen_at=now,
            )
            new_subjects.append(subject)
            pending.append((subject, obs))
            continue
        if row.name != name or not row.listed:
            changes.append({"id": row.id, "name": name, "listed": True})
        old = newest.get(row.snapshot_id) if row.snapshot_id else None
        if old is None or not all(_same(old[f], obs.values.get(f)) for f in FIGURES):
            pending.append((row.id, obs))
    if complete:
        seen = {obs.key_hash for obs in observations}
        changes += [
            {"id": row.id, "listed": False}
            for key_hash, row in known.items()
            if key_hash != SELF and key_hash not in seen and row.listed
        ]
    if new_subjects:
        session.add_all(new_subjects)
        session.flush()
    rows = [
        {
            "subject_id": subject if isinstance(subject, int) else subject.id,
            "taken_at": now,
            **{f: obs.values.get(f) for f in FIGURES},
        }
        for subject, obs in pending
    ]
    if rows:
        ids = session.scalars(
            insert(LiveSnapshot).returning(LiveSnapshot.id, sort_by_parameter_order=True), rows
        ).all()
        pointers = {row["subject_id"]: snapshot for row, snapshot in zip(rows, ids, strict=True)}
        merged = {c["id"]: c for c in changes}
        for subject_id, snapshot in pointers.items():
            merged.setdefault(subject_id, {"id": subject_id})["snapshot_id"] = snapshot
        changes = list(merged.values())
    for group in _by_keys(changes):
        session.execute(update(LiveSubject), group)
    return len(rows)


def _by_keys(changes: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Bulk UPDATE by primary key needs the same columns in every row of one statement."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for change in changes:
        groups.setdefault(tuple(sorted(change)), []).append(change)
    return groups.values()


def _snapshots(session: Session, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    columns = [getattr(LiveSnapshot, f) for f in FIGURES]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for row in session.execute(
            select(LiveSnapshot.id, *columns).where(LiveSnapshot.id.in_(chunk))
        ):
            found[row[0]] = dict(zip(FIGURES, row[1:], strict=True))
    return found


def mark_polled(
    session: Session,
    source: Source,
    scope: str,
    now: dt.datetime,
    *,
    error: str | None = None,
) -> None:
    """The registered key's own subject: polled successfully ``now``, or failed with ``error``
    (then the last success stays as it was). Creates the subject when needed."""
    row = session.scalars(
        select(LiveSubject).where(LiveSubject.api_key_id == source.id, LiveSubject.key_hash == SELF)
    ).first()
    if row is None:
        row = LiveSubject(
            api_key_id=source.id,
            key_hash=SELF,
            scope=scope,
            name=source.name[:NAME_LENGTH],
            listed=True,
            first_seen_at=now,
        )
        session.add(row)
    row.scope = scope
    row.poll_error = error
    if error is None:
        row.polled_at = now
    session.flush()


def prune(session: Session, cutoff: dt.datetime) -> int:
    """Delete snapshots older than ``cutoff``, except each subject's newest one before it:
    its figures were still true at ``cutoff``, so every figure since stays computable."""
    newer = aliased(LiveSnapshot)
    result = session.execute(
        delete(LiveSnapshot).where(
            LiveSnapshot.taken_at < cutoff,
            exists().where(
                and_(
                    newer.subject_id == LiveSnapshot.subject_id,
                    newer.taken_at < cutoff,
                    newer.id > LiveSnapshot.id,
                )
            ),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
