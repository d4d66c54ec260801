"""The keys a sync polls, and what OpenRouter said about them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from worker.store.models import KIND_MANAGEMENT, KIND_ORDINARY, ApiKey, User

_KEYS: Table = ApiKey.__table__  # type: ignore[assignment]
_MARK = update(_KEYS).where(_KEYS.c.id == bindparam("key_id"))


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """A key to poll: its ids, its label and its ciphertext (never the plaintext)."""

    id: int
    user_id: int
    name: str
    key_encrypted: str
    # The last whole-window answer stored: its digest and (day, model) rows (worker.sync.run).
    activity_digest: str | None = None
    activity_rows: int | None = None
    # An answer held back because it would delete too much: its body digest and since when.
    suspicious_digest: str | None = None
    suspicious_since: dt.datetime | None = None
    kind: str | None = None  # management | ordinary | None (not known yet)
    history_reached: dt.date | None = None  # how far the year of history is imported

    def __repr__(self) -> str:  # keep the ciphertext out of reprs and tracebacks
        return f"ActiveKey(id={self.id}, user_id={self.user_id}, name={self.name!r})"


def active_keys(session: Session, key_ids: Iterable[int] | None = None) -> list[ActiveKey]:
    """Active keys of active users, by id; only those in ``key_ids`` when it is given."""
    stmt = (
        select(
            ApiKey.id,
            ApiKey.user_id,
            ApiKey.name,
            ApiKey.key_encrypted,
            ApiKey.activity_digest,
            ApiKey.activity_rows,
            ApiKey.suspicious_digest,
            ApiKey.suspicious_since,
            ApiKey.kind,
            ApiKey.history_reached,
        )
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.is_active.is_(True), User.is_active.is_(True))
        .order_by(ApiKey.id)
    )
    if key_ids is not None:
        stmt = stmt.where(ApiKey.id.in_(list(key_ids)))
    return [ActiveKey(**row._mapping) for row in session.execute(stmt)]


def mark_accepted(session: Session, key_ids: Sequence[int], at: dt.datetime) -> None:
    """OpenRouter answered ``/activity`` for these keys: they are management keys, used ``at``.

    One executemany for the whole group: one statement per key cost about a quarter of a small
    key's write transaction (measured).
    """
    if key_ids:
        session.execute(
            _MARK,
            [{"key_id": key_id, "kind": KIND_MANAGEMENT, "last_used_at": at} for key_id in key_ids],
        )


def remember_answer(session: Session, key_id: int, digest: str | None, rows: int | None) -> None:
    """An answer was just applied: remember its digest and (day, model) rows, so an identical
    one is not stored again (None, None: forget it, e.g. after a backfill), and forget any
    answer held back before."""
    session.execute(
        _MARK,
        {
            "key_id": key_id,
            "activity_digest": digest,
            "activity_rows": rows,
            "suspicious_digest": None,
            "suspicious_since": None,
        },
    )


def forget_held_back(session: Session, key_id: int) -> None:
    """A good answer came after one held back: a later sighting of that answer starts its
    wait again (an upstream that flaps must not delete history)."""
    session.execute(_MARK, {"key_id": key_id, "suspicious_digest": None, "suspicious_since": None})


def hold_back(session: Session, key_id: int, body_digest: str, since: dt.datetime) -> None:
    """An answer was held back (it would delete too much): remember it and since when."""
    session.execute(
        _MARK, {"key_id": key_id, "suspicious_digest": body_digest, "suspicious_since": since}
    )


def record_history(
    session: Session, key_id: int, reached: dt.date, done_at: dt.datetime | None
) -> None:
    """The account's history is imported back to ``reached`` (complete, at ``done_at``)."""
    session.execute(
        _MARK, {"key_id": key_id, "history_reached": reached, "history_done_at": done_at}
    )


def mark_ordinary(session: Session, key_id: int) -> None:
    """OpenRouter refused ``/activity`` for this key (403): an ordinary (inference) key."""
    session.execute(_MARK, {"key_id": key_id, "kind": KIND_ORDINARY})
