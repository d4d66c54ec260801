"""Every key of an account: which ones to fetch this run, and which registered keys they are.

A management key's ``/activity`` is the whole account; its ``/keys`` lists the account's keys,
each with OpenRouter's running totals. A key's own history (``/activity?api_key_hash=``) is
fetched when it can have changed: never fetched yet, its ``usage`` moved since the last fetch,
it had spent that day when last fetched and a day has completed since, or the last fetch is
older than ``[sync] key_refresh_days`` (restatements). An unchanged account therefore costs
its own ``/activity`` and the ``/keys`` pages, nothing per key.

A registered ordinary key (it cannot read ``/activity`` itself) is the catalogued key whose
``hash`` is the SHA-256 of it, or else whose ``label`` equals its ``GET /key`` label, when that
label is unique; no published source confirms how the hash is derived, so both are tried
(:func:`link_ordinary`, the run's second step). One that no account lists is reported once as
``needs_management_key``: a warning, not a failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from worker.core.errors import OpenRouterError
from worker.core.logs import bound_contextvars, get_logger
from worker.core.outcomes import KeyOutcome, describe_failure
from worker.openrouter import CatalogKey, OpenRouterClient
from worker.openrouter.keys import listed_hash
from worker.store import catalogue as catalogue_store
from worker.store import keys as key_store
from worker.store import ledger
from worker.store.catalogue import Entry
from worker.store.db import transaction
from worker.store.keys import ActiveKey
from worker.sync.summary import RunSummary
from worker.vault.crypto import Keyring

log = get_logger("worker.sync")


@dataclass(frozen=True, slots=True)
class KeyJob:
    """One catalogued key to fetch, through its account's management key."""

    entry: Entry
    secret: str  # the account's management key, decrypted for the run; never logged
    listed: CatalogKey | None  # what /keys says now (None: not listed this run)
    registered: ActiveKey | None  # the same key registered as an ordinary key, if it is

    def __repr__(self) -> str:  # keep the secret out of reprs and tracebacks
        return f"KeyJob(entry={self.entry.id}, account={self.entry.account_id})"


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


def match_by_hash(entries: Iterable[Entry], secret: str) -> Entry | None:
    """The catalogued key whose hash is the SHA-256 of ``secret``."""
    wanted = listed_hash(secret)
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
        _account, secret = accounts[entry.account_id]
        linked = registered.get(entry.registered_key_id) if entry.registered_key_id else None
        jobs.append(KeyJob(entry, secret, listed, linked))
    return jobs, unchanged


# --- linking registered ordinary keys (the run's second step) ----------------------------------

NEEDS_MANAGEMENT_KEY = (
    "an ordinary key cannot read its own history: register the management key of its "
    "account (https://openrouter.ai/settings/management-keys) and its history comes through it"
)


def link_ordinary(
    factory: sessionmaker[Session],
    client: OpenRouterClient,
    keyring: Keyring,
    summary: RunSummary,
    ordinary: Sequence[ActiveKey],
    refused_requests: Mapping[int, int],
) -> None:
    """Link each registered ordinary key to its catalogue entry; report the others.

    ``refused_requests``: the requests of this run's /activity calls that found a key
    ordinary, counted with the key's outcome (or with the catalogue's, once linked).
    """
    if not ordinary:
        return
    with transaction(factory) as session:
        for key in ordinary:
            key_store.mark_ordinary(session, key.id)
        entries = catalogue_store.entries(session)
    known = {entry.registered_key_id for entry in entries if entry.registered_key_id}
    for key in ordinary:
        requests = refused_requests.get(key.id, 0)
        if key.id in known:
            summary.catalogue.requests += requests
            continue
        before = client.http.thread_requests
        entry = _find(client, keyring, key, entries)
        requests += client.http.thread_requests - before
        if entry is None:
            _needs_management_key(factory, summary, key, requests)
            continue
        summary.catalogue.requests += requests
        with transaction(factory) as session:
            catalogue_store.link(session, entry.id, key.id)
        summary.catalogue.linked += 1
        log.info("account_key_linked", api_key_id=key.id, account_id=entry.account_id)


def _find(
    client: OpenRouterClient, keyring: Keyring, key: ActiveKey, entries: Sequence[Entry]
) -> Entry | None:
    """The free catalogue entry that is this key: by its hash, else by its ``/key`` label."""
    free = [entry for entry in entries if entry.registered_key_id is None]
    secret = keyring.decrypt(key.key_encrypted, user_id=key.user_id, key_id=key.id)
    try:
        found = match_by_hash(free, secret)
        if found is None and free:
            try:
                found = match_by_label(free, client.get_key(secret).label)
            except OpenRouterError as exc:
                log.warning("key_label_unknown", api_key_id=key.id, reason=describe_failure(exc)[0])
        return found
    finally:
        del secret


def _needs_management_key(
    factory: sessionmaker[Session], summary: RunSummary, key: ActiveKey, requests: int
) -> None:
    # A warning, not a failure (the key itself is fine); status says what to do.
    outcome = KeyOutcome(
        key.id, key.user_id, key.name, "warning", reason="needs_management_key",
        error=NEEDS_MANAGEMENT_KEY, http_requests=requests,
    )  # fmt: skip
    with transaction(factory) as session:
        ledger.record_outcomes(session, summary.run_id, [outcome])
    summary.keys.append(outcome)
    with bound_contextvars(api_key_id=key.id, user_id=key.user_id):
        log.warning("key_needs_management_key", error=NEEDS_MANAGEMENT_KEY)
