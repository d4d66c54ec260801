"""The keys a sync polls, and what OpenRouter said about them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from worker.models import KIND_MANAGEMENT, KIND_ORDINARY, ApiKey, User

_KEYS: Table = ApiKey.__table__  # type: ignore[assignment]
_MARK = update(_KEYS).where(_KEYS.c.id == bindparam("key_id"))


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """A key to poll: its ids, its label and its ciphertext (never the plaintext)."""

    id: int
    user_id: int
    name: str
    key_encrypted: str
    # The last whole-window answer stored: its digest and (day, model) rows (worker.sync).
    activity_digest: str | None = None
    activity_rows: int | None = None

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
        )
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.is_active.is_(True), User.is_active.is_(True))
        .order_by(ApiKey.id)
    )
    if key_ids is not None:
        stmt = stmt.where(ApiKey.id.in_(list(key_ids)))
    return [ActiveKey(*row) for row in session.execute(stmt)]


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


def remember_answers(
    session: Session, answers: Sequence[tuple[int, str | None, int | None]]
) -> None:
    """For each (key id, digest, rows) just stored: the answer an identical one is compared
    with next time; (key id, None, None) forgets it (the stored rows changed otherwise)."""
    if answers:
        session.execute(
            _MARK,
            [
                {"key_id": key_id, "activity_digest": digest, "activity_rows": rows}
                for key_id, digest, rows in answers
            ],
        )


def mark_ordinary(session: Session, key_id: int) -> None:
    """OpenRouter refused ``/activity`` for this key (403): an ordinary (inference) key."""
    session.execute(_MARK, {"key_id": key_id, "kind": KIND_ORDINARY})
