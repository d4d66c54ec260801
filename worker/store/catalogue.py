"""The account-keys catalogue (``account_keys``): every OpenRouter key of an account, as its
management key lists it, with what the sync has fetched of each."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, aliased

from worker.store.models import AccountKey, ApiKey

if TYPE_CHECKING:
    # Only a type here: importing worker.openrouter would load the HTTP client, which the
    # read-only `account-keys` command never uses.
    from worker.openrouter.keys import CatalogKey


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalogued key, as the sync needs it (never the key itself)."""

    id: int
    account_id: int
    hash: str
    label: str
    gone: bool
    registered_key_id: int | None
    fetched_usage: Decimal | None
    fetched_daily: Decimal | None
    fetched_at: dt.datetime | None
    activity_digest: str | None
    activity_rows: int | None
    history_reached: dt.date | None


def _entry(row: AccountKey) -> Entry:
    return Entry(
        row.id,
        row.account_id,
        row.hash,
        row.label,
        row.gone_at is not None,
        row.registered_key_id,
        row.fetched_usage,
        row.fetched_daily,
        row.fetched_at,
        row.activity_digest,
        row.activity_rows,
        row.history_reached,
    )


@dataclass(frozen=True, slots=True)
class ListingChanges:
    """What one listing changed in an account's catalogue."""

    new: int
    gone: int
    back: int  # listed again after being gone


def record_listing(
    session: Session, account_id: int, listed: Sequence[CatalogKey], now: dt.datetime
) -> ListingChanges:
    """Make the account's catalogue what ``/keys`` just listed: new keys added, listed keys
    refreshed (last seen now), keys no longer listed marked gone (never deleted: their history
    stays)."""
    rows = {
        row.hash: row
        for row in session.scalars(select(AccountKey).where(AccountKey.account_id == account_id))
    }
    new = back = 0
    seen = set()
    for key in listed:
        seen.add(key.hash)
        row = rows.get(key.hash)
        if row is None:
            row = AccountKey(account_id=account_id, hash=key.hash, first_seen_at=now)
            session.add(row)
            new += 1
        elif row.gone_at is not None:
            row.gone_at = None
            back += 1
        row.name = key.name[:255]
        row.label = key.label[:255]
        row.workspace_id = key.workspace_id
        row.disabled = key.disabled
        row.limit = key.spend.limit
        row.limit_reset = key.spend.limit_reset
        row.include_byok_in_limit = key.include_byok_in_limit
        row.settings_seen_at = now
        row.expires_at = key.expires_at
        row.created_upstream_at = key.created_at
        row.updated_upstream_at = key.updated_at
        row.last_seen_at = now
    gone = 0
    for key_hash, row in rows.items():
        if key_hash not in seen and row.gone_at is None:
            row.gone_at = now
            gone += 1
    session.flush()
    return ListingChanges(new=new, gone=gone, back=back)


def record_settings(
    session: Session, account_id: int, listed: Sequence[CatalogKey], now: dt.datetime
) -> int:
    """What a live poll's ``/keys`` said of the keys already catalogued: their settings
    (disabled, limit, limit_reset, include_byok_in_limit), as of ``now``. New and gone keys are
    the sync's to record; returns the keys updated."""
    known = dict(
        session.execute(
            select(AccountKey.hash, AccountKey.id).where(AccountKey.account_id == account_id)
        ).all()
    )
    changes = [
        {
            "id": known[key.hash],
            "disabled": key.disabled,
            "limit": key.spend.limit,
            "limit_reset": key.spend.limit_reset,
            "include_byok_in_limit": key.include_byok_in_limit,
            "settings_seen_at": now,
        }
        for key in listed
        if key.hash in known
    ]
    if changes:
        session.execute(update(AccountKey), changes)
    return len(changes)


def entries(session: Session, account_ids: Iterable[int] | None = None) -> list[Entry]:
    """The catalogue of some accounts (or all), by account then name."""
    query = select(AccountKey).order_by(AccountKey.account_id, AccountKey.name, AccountKey.id)
    if account_ids is not None:
        query = query.where(AccountKey.account_id.in_(list(account_ids)))
    return [_entry(row) for row in session.scalars(query)]


@dataclass(frozen=True, slots=True)
class SharedAccount:
    """Two registered management keys whose listings share keys: a key belongs to one
    OpenRouter account, so both are management keys of that account."""

    first_key_id: int
    second_key_id: int
    shared_keys: int


# Built once: building the aliased self-join costs far more than running it (6.5 ms a call
# against 0.15 ms), and every sync and `status` asks.
_FIRST, _SECOND = aliased(AccountKey), aliased(AccountKey)
_SHARED_PAIRS = (
    select(_FIRST.account_id, _SECOND.account_id, func.count())
    .join(_SECOND, and_(_FIRST.hash == _SECOND.hash, _FIRST.account_id < _SECOND.account_id))
    .where(_FIRST.gone_at.is_(None), _SECOND.gone_at.is_(None))
    .group_by(_FIRST.account_id, _SECOND.account_id)
    .order_by(_FIRST.account_id, _SECOND.account_id)
)


def shared_accounts(session: Session, among: Collection[int]) -> list[SharedAccount]:
    """Every pair of management keys ``among`` these (lower id first) whose current listings
    share keys."""
    wanted = set(among)
    if len(wanted) < 2:
        return []
    return [
        SharedAccount(a, b, n) for a, b, n in session.execute(_SHARED_PAIRS) if {a, b} <= wanted
    ]


def link(session: Session, entry_id: int, registered_key_id: int) -> None:
    """The catalogued key is the registered ordinary key ``registered_key_id``."""
    session.execute(
        update(AccountKey)
        .where(AccountKey.id == entry_id)
        .values(registered_key_id=registered_key_id)
    )


def record_fetch(
    session: Session,
    entry_id: int,
    *,
    usage: Decimal | None,
    daily: Decimal | None,
    at: dt.datetime,
    digest: str | None,
    rows: int | None,
) -> None:
    """A fetch of the key's history was stored: what ``/keys`` said then, and the answer."""
    session.execute(
        update(AccountKey)
        .where(AccountKey.id == entry_id)
        .values(
            fetched_usage=usage,
            fetched_daily=daily,
            fetched_at=at,
            activity_digest=digest,
            activity_rows=rows,
            fetch_error=None,
        )
    )


def record_fetch_error(session: Session, entry_id: int, error: str) -> None:
    session.execute(update(AccountKey).where(AccountKey.id == entry_id).values(fetch_error=error))


def record_history(
    session: Session, entry_id: int, reached: dt.date, done_at: dt.datetime | None
) -> None:
    """The key's history is imported back to ``reached`` (and complete, at ``done_at``)."""
    session.execute(
        update(AccountKey)
        .where(AccountKey.id == entry_id)
        .values(history_reached=reached, history_done_at=done_at)
    )


@dataclass(frozen=True, slots=True)
class AccountKeyView:
    """One catalogued key for ``account-keys`` (its hash identifies it; it is not a secret)."""

    account_id: int
    account_name: str
    name: str
    hash: str
    disabled: bool
    limit: Decimal | None
    gone: bool
    registered_key_id: int | None
    created_at: dt.datetime | None  # OpenRouter's
    last_seen_at: dt.datetime
    fetch_error: str | None


def listing(
    session: Session, account_id: int | None = None, *, user_id: int | None = None
) -> list[AccountKeyView]:
    """The catalogue (of one account, or all), newest key first (OpenRouter's creation time,
    then when the sync first saw it). ``user_id``: only the accounts that user owns (an
    account is its management key, so its owner's)."""
    query = (
        select(AccountKey, ApiKey.name)
        .join(ApiKey, ApiKey.id == AccountKey.account_id)
        .order_by(
            AccountKey.created_upstream_at.desc().nulls_last(),
            AccountKey.first_seen_at.desc(),
            AccountKey.id.desc(),
        )
    )
    if account_id is not None:
        query = query.where(AccountKey.account_id == account_id)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return [
        AccountKeyView(
            row.account_id,
            account_name,
            row.name,
            row.hash,
            row.disabled,
            row.limit,
            row.gone_at is not None,
            row.registered_key_id,
            row.created_upstream_at,
            row.last_seen_at,
            row.fetch_error,
        )
        for row, account_name in session.execute(query)
    ]
