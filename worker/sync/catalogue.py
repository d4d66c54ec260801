"""Every key of an account: which ones to fetch this run, and which registered keys they are.

A management key's ``/activity`` is the whole account; its ``/keys`` lists the account's keys,
each with OpenRouter's running totals. A key's own history (``/activity?api_key_hash=``) is
fetched when it can have changed: never fetched yet, its ``usage`` moved since the last fetch,
it had spent that day when last fetched and a day has completed since, or the last fetch is
older than ``[sync] key_refresh_days`` (restatements). An unchanged account therefore costs
its own ``/activity`` and the ``/keys`` pages, nothing per key.

A registered ordinary key (it cannot read ``/activity`` itself) is the catalogued key whose
``hash`` is the SHA-256 of it, or else whose ``label`` equals its ``GET /key`` label, when that
label is unique; no published source confirms how the hash is derived, so both are tried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from worker.openrouter import CatalogKey
from worker.store.catalogue import Entry
from worker.store.keys import ActiveKey


@dataclass(frozen=True, slots=True)
class KeyJob:
    """One catalogued key to fetch, through its account's management key."""

    entry: Entry
    account: ActiveKey
    secret: str  # the account's management key, decrypted for the run; never logged
    listed: CatalogKey | None  # what /keys says now (None: not listed this run)
    registered: ActiveKey | None  # the same key registered as an ordinary key, if it is

    def __repr__(self) -> str:  # keep the secret out of reprs and tracebacks
        return f"KeyJob(entry={self.entry.id}, account={self.account.id})"


def needs_fetch(entry: Entry, listed: CatalogKey | None, today: dt.date, refresh_days: int) -> bool:
    """Whether the key's history may have changed since it was last fetched (module doc)."""
    if entry.fetched_at is None or listed is None:
        return entry.fetched_at is None and listed is not None
    if listed.spend.usage != entry.fetched_usage:
        return True
    fetched_on = entry.fetched_at.date()
    if (entry.fetched_daily or 0) > 0 and fetched_on < today:
        return True  # that day's spend has completed since: it is in the window now
    return (today - fetched_on).days >= refresh_days


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def match_by_hash(entries: Iterable[Entry], secret: str) -> Entry | None:
    """The catalogued key whose hash is the SHA-256 of ``secret``."""
    wanted = sha256_hex(secret)
    return next((entry for entry in entries if entry.hash == wanted), None)


def match_by_label(entries: Sequence[Entry], label: str) -> Entry | None:
    """The one catalogued key with this label (None if none, or several: no guessing)."""
    found = [entry for entry in entries if entry.label == label and not entry.gone]
    return found[0] if len(found) == 1 else None


def jobs_for(
    entries: Sequence[Entry],
    listings: Mapping[int, Sequence[CatalogKey]],
    accounts: Mapping[int, tuple[ActiveKey, str]],
    registered: Mapping[int, ActiveKey],
    *,
    today: dt.date,
    refresh_days: int,
    force: bool = False,
) -> tuple[list[KeyJob], int]:
    """The keys to fetch this run (``force``: every listed key, for a backfill) and how many
    listed keys were left alone as unchanged."""
    jobs: list[KeyJob] = []
    unchanged = 0
    for entry in entries:
        if entry.account_id not in accounts or entry.gone:
            continue
        listed = next((k for k in listings.get(entry.account_id, ()) if k.hash == entry.hash), None)
        if not force and not needs_fetch(entry, listed, today, refresh_days):
            unchanged += listed is not None
            continue
        account, secret = accounts[entry.account_id]
        linked = registered.get(entry.registered_key_id) if entry.registered_key_id else None
        jobs.append(KeyJob(entry, account, secret, listed, linked))
    return jobs, unchanged
