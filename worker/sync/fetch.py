"""Fetching one subject of a run on a pool thread: a registered key's window (and, for a
management key, its account's catalogue) or one catalogued key's window. Never raises: an
error is handed to the writer with the requests it cost.

A whole-window answer is the full truth for the days of OpenRouter's window as our clock sees
it when the answer arrives (a run may cross midnight). Its rows are written for those days; a
stored model it no longer reports is deleted only on the days the run's window and the
answer's share, never before the first day the answer reports (a server whose clock turned
before ours no longer lists the oldest day), and the whole answer is held back if it would
delete more than ``[sync] max_delete_fraction`` of the rows there, until the same answer comes
again ``confirm_delete_after_hours`` later. A backfill's answers are the truth for its days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from worker.config import SyncSettings
from worker.core.days import span, utc_now
from worker.core.errors import InvalidResponseError, OpenRouterError
from worker.core.logs import bound_contextvars, get_logger
from worker.core.outcomes import describe_failure
from worker.openrouter import Activity, CatalogKey, OpenRouterClient, daily_totals
from worker.store.keys import ActiveKey
from worker.store.models import KIND_ORDINARY
from worker.store.usage_write import KEY_USAGE_STATS, USAGE_STATS, KeyRows, UsageTable
from worker.sync.catalogue import KeyJob
from worker.vault.crypto import Keyring

log = get_logger("worker.fetch")  # the name its lines have always had


@dataclass(slots=True)
class Fetched:
    """One subject's fetch: what to write, or the error that stopped it."""

    subject: ActiveKey | KeyJob
    write: KeyRows | None  # None when the fetch failed
    requests: int
    accepted: bool  # OpenRouter answered 200 at least once
    error: BaseException | None = None
    # A whole-window answer's digest (None for a backfill) and its body's digest;
    # ``unchanged``: the digest of the answer stored last, so nothing was parsed or needs
    # writing.
    digest: str | None = None
    body_digest: str | None = None
    unchanged: bool = False
    listing: list[CatalogKey] | None = None  # a management key's account keys (/keys)

    @property
    def size(self) -> int:
        return len(self.write.rows) if self.write is not None else 0

    @property
    def table(self) -> UsageTable:
        """Where the rows go: a registered key's in usage_stats, a catalogued key's own in
        key_usage_stats (unless it is a registered key too)."""
        subject = self.subject
        if isinstance(subject, KeyJob) and subject.entry.registered_key_id is None:
            return KEY_USAGE_STATS
        return USAGE_STATS


def _window_write(
    owner_id: int,
    activity: Activity,
    run_days: Sequence[dt.date],
    *,
    confirmed: bool,
    max_delete_fraction: float,
) -> KeyRows:
    rows = daily_totals(activity.rows)
    answered = frozenset(span(*activity.window))
    return KeyRows(
        owner_id,
        rows,
        answered,
        delete_days=answered.intersection(run_days),
        keep_before=None if confirmed else (rows[0].date if rows else dt.date.max),
        max_delete_fraction=None if confirmed else max_delete_fraction,
    )


def confirms_held_back(key: ActiveKey, body_digest: str, settings: SyncSettings) -> bool:
    """The answer is the one held back for this key, seen long enough ago: apply it now."""
    since = key.suspicious_since
    return (
        key.suspicious_digest == body_digest
        and since is not None
        and utc_now() - since >= dt.timedelta(hours=settings.confirm_delete_after_hours)
    )


def fetch_registered(
    key: ActiveKey,
    *,
    client: OpenRouterClient,
    keyring: Keyring,
    settings: SyncSettings,
    run_days: Sequence[dt.date],
    whole_window: bool,
    run_id: int,
) -> Fetched:
    """A registered key: its whole window (one request) or the run's days (one each); for a
    management key, also its account's keys (``/workspaces`` and ``/keys`` pages)."""
    with bound_contextvars(run_id=run_id, api_key_id=key.id, user_id=key.user_id):
        requests = 0
        accepted = False
        try:
            secret = keyring.decrypt(key.key_encrypted, user_id=key.user_id, key_id=key.id)
            if whole_window:
                activity = client.get_activity(secret, unless_digest=key.activity_digest)
                requests, accepted = activity.requests, True
                write = _window_write(
                    key.id,
                    activity,
                    run_days,
                    confirmed=confirms_held_back(key, activity.body_digest, settings),
                    max_delete_fraction=settings.max_delete_fraction,
                )
            else:
                answers = []
                for day in run_days:
                    answers.append(client.get_activity(secret, day=day))
                    requests += answers[-1].requests
                    accepted = True
                rows = daily_totals(row for answer in answers for row in answer.rows)
                write = KeyRows(key.id, rows, frozenset(run_days))
            listing, listed_requests = _listing(client, secret)
            del secret
            fetched = Fetched(key, write, requests + listed_requests, True, listing=listing)
            if whole_window:
                fetched.digest = activity.digest
                fetched.body_digest = activity.body_digest
                fetched.unchanged = activity.unchanged
            return fetched
        except Exception as exc:
            # A failed call's attempts count too (the client sets them on its errors), and an
            # invalid answer was still a 200: the key is a management key.
            requests += exc.requests if isinstance(exc, OpenRouterError) else 0
            accepted = accepted or isinstance(exc, InvalidResponseError)
            return Fetched(key, None, requests, accepted, error=exc)


def _listing(client: OpenRouterClient, secret: str) -> tuple[list[CatalogKey] | None, int]:
    """Every key of the account, across its workspaces (the default one when the account has
    none to list), and the requests that cost; None when ``/workspaces`` or ``/keys`` failed."""
    before = client.http.thread_requests
    try:
        keys = client.list_account_keys(secret)
    except OpenRouterError as exc:
        # An account's sync must not fail for want of its key list: a /workspaces or /keys
        # outage (5xx, 429 after the retries) would otherwise discard the window just
        # fetched. Its keys are not listed this run rather than listed in part, which would
        # mark the keys not seen gone.
        reason, message = describe_failure(exc)
        log.warning("account_keys_not_listed", reason=reason, error=message)
        return None, client.http.thread_requests - before
    return keys, client.http.thread_requests - before


def fetch_catalogued(
    job: KeyJob,
    *,
    client: OpenRouterClient,
    settings: SyncSettings,
    run_days: Sequence[dt.date],
    whole_window: bool,
    run_id: int,
) -> Fetched:
    """One key of an account, through the account's management key (``api_key_hash``): its
    whole window, of which a backfill keeps only its days."""
    entry = job.entry
    owner = entry.registered_key_id or entry.id
    with bound_contextvars(run_id=run_id, account_id=entry.account_id, key_hash=entry.hash[:8]):
        try:
            activity = client.get_activity(
                job.secret,
                key_hash=entry.hash,
                unless_digest=entry.activity_digest if whole_window else None,
            )
            if whole_window:
                write = _window_write(
                    owner,
                    activity,
                    run_days,
                    confirmed=False,
                    max_delete_fraction=settings.max_delete_fraction,
                )
            else:
                wanted = frozenset(run_days)
                rows = [row for row in daily_totals(activity.rows) if row.date in wanted]
                write = KeyRows(owner, rows, wanted)
            fetched = Fetched(job, write, activity.requests, True)
            fetched.digest = activity.digest if whole_window else None
            fetched.unchanged = activity.unchanged
            return fetched
        except Exception as exc:
            requests = exc.requests if isinstance(exc, OpenRouterError) else 0
            return Fetched(job, None, requests, isinstance(exc, InvalidResponseError), error=exc)


def is_ordinary(key: ActiveKey) -> bool:
    """A registered key known to be ordinary: /activity would refuse it (403)."""
    return key.kind == KIND_ORDINARY
