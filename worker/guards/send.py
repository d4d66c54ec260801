"""The guards' outbox: each pending change sent once, each sent one undone when its period is
over (``restore = "next_period"``), and ``guards undo``.

After the poll's evaluation is committed, :func:`drain` takes the pending actions (enforce
mode only). A key already as wanted is recorded sent without a request, which is what makes a
change sent just before a crash count once: the next poll sees it in place. A refusal (400,
401, 403, 404) fails the action for good, with its reason; an outage (429, 5xx, no answer)
leaves it pending for the next poll, until ``[live] give_up_hours`` abandon it.

Undoing puts back the settings the action changed, from before it, and only when the key still
has what the watcher set and OpenRouter has not changed it since (its ``updated_at``): a key a
person changed, or disabled, is left as they made it (recorded ``kept``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.core.days import utc_now
from worker.core.errors import (
    BadRequestError,
    ConflictError,
    KeyChangeRefusedError,
    OpenRouterError,
    UnknownKeyError,
    UsageError,
    WatcherError,
)
from worker.core.logs import get_logger
from worker.core.outcomes import describe_failure
from worker.guards.accounts import Account
from worker.guards.notes import annotate, note
from worker.openrouter import CatalogKey, OpenRouterClient
from worker.store import guards as store
from worker.store.db import transaction
from worker.store.guards import Action
from worker.store.models.guards import KEPT, PLANNED, RESTORED, SENT

log = get_logger("worker.guards")
_FINAL = (KeyChangeRefusedError, UnknownKeyError, BadRequestError)


class KeyChangedError(WatcherError):
    """The key changed since the watcher's action: change it by hand on OpenRouter."""


@dataclass(slots=True)
class GuardCounts:
    """What one drain did."""

    sent: int = 0
    already: int = 0
    failed: int = 0
    waiting: int = 0  # left pending: OpenRouter unavailable, or the account not listed
    restored: int = 0
    kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "already": self.already,
            "failed": self.failed,
            "waiting": self.waiting,
            "restored": self.restored,
            "kept": self.kept,
        }


def _after(key: CatalogKey) -> dict[str, object]:
    return {**key.settings.as_dict(), "updated_at": key.updated_at}


def _changed_since(action: Action, key: CatalogKey) -> str | None:
    """Why the key is not as the action left it (None: it is)."""
    current = key.settings
    differs = current.changes_to({name: action.after.get(name) for name in action.wanted})
    if differs:
        name = next(iter(differs))
        return f"its {name} is now {getattr(current, name)}, not {differs[name]} as set"
    then, now = action.after.get("updated_at"), key.updated_at
    if then is not None and now is not None and now > then:
        return f"OpenRouter changed it at {now:%Y-%m-%d %H:%M} UTC, after the watcher"
    return None


def _send(
    session_factory: sessionmaker[Session],
    client: OpenRouterClient,
    action: Action,
    account: Account,
    counts: GuardCounts,
) -> None:
    key = account.key(action.key_hash)
    if key is None:
        _finish_failed(session_factory, action, "the key is no longer listed by its account", 0)
        counts.failed += 1
        return
    if not key.settings.changes_to(action.wanted):
        with transaction(session_factory) as session:
            store.record_sent(session, action.id, _after(key), utc_now(), 0)
            _note(session, action, "already")
        counts.already += 1
        return
    before = client.http.thread_requests
    try:
        answer = client.update_key(account.secret, key.hash, action.wanted)
    except OpenRouterError as exc:
        reason, message = describe_failure(exc)
        sent = client.http.thread_requests - before
        if isinstance(exc, _FINAL):
            _finish_failed(session_factory, action, f"{reason}: {message}", sent)
            counts.failed += 1
        else:
            with transaction(session_factory) as session:
                store.record_failed(
                    session, action.id, f"{reason}: {message}", utc_now(), final=False,
                    attempts=sent,
                )  # fmt: skip
            counts.waiting += 1
        log.warning("guard_action_failed", action_id=action.id, reason=reason, error=message)
        return
    with transaction(session_factory) as session:
        store.record_sent(
            session, action.id, _after(answer), utc_now(), client.http.thread_requests - before
        )
        _note(session, action, "sent")
    counts.sent += 1
    log.info("guard_action_sent", action_id=action.id, action=action.action,
             account_id=action.account_id, key_hash=action.key_hash[:8])  # fmt: skip


def _finish_failed(
    session_factory: sessionmaker[Session], action: Action, error: str, attempts: int
) -> None:
    with transaction(session_factory) as session:
        store.record_failed(session, action.id, error, utc_now(), final=True, attempts=attempts)
        _note(session, action, "failed", error)


def _note(session: Session, action: Action, state: str, detail: str = "") -> None:
    if action.source != "alert":
        return
    if state == "sent" and action.restore == "next_period":
        detail = ", until the period is over"
    elif state == "sent":
        detail = f", until `openrouter-watcher guards undo {action.id}`"
    tag, line = note(
        action_id=action.id, action=action.action, wanted=action.wanted, key=action.key_name,
        account=action.account_name, state=state, detail=detail,
    )  # fmt: skip
    annotate(session, action.event_id, tag, line)


def drain(
    session_factory: sessionmaker[Session],
    client: OpenRouterClient,
    settings: Settings,
    accounts: Mapping[int, Account],
    now: dt.datetime | None = None,
) -> GuardCounts:
    """Send the pending actions and undo those whose period is over, against the keys as
    ``accounts`` listed them in this poll. Nothing is sent in dry-run mode."""
    counts = GuardCounts()
    if not settings.guards.enforce:
        return counts
    now = now or utc_now()
    cutoff = now - dt.timedelta(hours=settings.live.give_up_hours)
    with session_factory() as session:
        pending, restorable = store.outgoing(session), store.restorable(session)
    for action in pending:
        account = accounts.get(action.account_id)
        if action.created_at < cutoff:
            with transaction(session_factory) as session:
                store.record_abandoned(session, action.id, "not sent within give_up_hours")
            counts.failed += 1
        elif account is None:
            counts.waiting += 1  # not listed in this poll: tried again at the next one
        else:
            _send(session_factory, client, action, account, counts)
    for action in restorable:
        account = accounts.get(action.account_id)
        if account is not None and _period_over(action.period, now):
            _restore(session_factory, client, action, account, counts, now)
    return counts


def _period_over(period: str, now: dt.datetime) -> bool:
    """Whether ``now`` lies past a rule's period (a UTC day ``YYYY-MM-DD`` or month
    ``YYYY-MM``)."""
    current = now.date().isoformat() if len(period) == 10 else f"{now:%Y-%m}"
    return current > period


def _restore(
    session_factory: sessionmaker[Session],
    client: OpenRouterClient,
    action: Action,
    account: Account,
    counts: GuardCounts,
    now: dt.datetime,
) -> None:
    key = account.key(action.key_hash)
    why = "the key is no longer listed" if key is None else _changed_since(action, key)
    if why is not None:
        with transaction(session_factory) as session:
            store.record_kept(session, action.id, f"not restored: {why}")
        counts.kept += 1
        log.info("guard_restore_skipped", action_id=action.id, reason=why)
        return
    assert key is not None
    back = {name: action.before.get(name) for name in action.wanted}
    if back == {name: action.after.get(name) for name in action.wanted}:
        with transaction(session_factory) as session:
            store.record_kept(session, action.id, "nothing to undo: the key was already so")
        counts.kept += 1
        return
    try:
        answer = client.update_key(account.secret, key.hash, back)
    except OpenRouterError as exc:
        reason, message = describe_failure(exc)
        with transaction(session_factory) as session:
            if isinstance(exc, _FINAL):
                store.record_kept(session, action.id, f"not restored: {reason}: {message}")
                counts.kept += 1
            else:
                store.record_restore_failed(session, action.id, f"{reason}: {message}")
        log.warning("guard_restore_failed", action_id=action.id, reason=reason)
        return
    with transaction(session_factory) as session:
        store.record_restored(session, action.id, _after(answer), now)
    counts.restored += 1
    log.info("guard_action_restored", action_id=action.id, account_id=action.account_id)


def undo(
    session_factory: sessionmaker[Session],
    client: OpenRouterClient,
    action: Action,
    account: Account,
) -> CatalogKey:
    """Put the key back as it was before ``action``; a one-line refusal when there is nothing
    to undo or the key changed since."""
    if action.status == PLANNED:
        raise UsageError(
            f"guard action {action.id} was a dry run: nothing was sent, nothing to undo"
        )
    if action.status == RESTORED:
        raise ConflictError(f"guard action {action.id} was already undone at {action.restored_at}")
    if action.status not in (SENT, KEPT):
        raise UsageError(
            f"guard action {action.id} is {action.status}: it changed nothing at OpenRouter"
        )
    key = account.key(action.key_hash)
    if key is None:
        raise KeyChangedError(
            f"key {action.key_name!r} is no longer listed by account {account.name!r}: "
            "nothing to undo"
        )
    why = _changed_since(action, key)
    if why is not None:
        raise KeyChangedError(
            f"key {action.key_name!r} changed since guard action {action.id} ({why}): change "
            "it by hand on OpenRouter"
        )
    back = {name: action.before.get(name) for name in action.wanted}
    answer = client.update_key(account.secret, key.hash, back)
    with transaction(session_factory) as session:
        store.record_restored(session, action.id, _after(answer), utc_now())
    log.info("guard_action_undone", action_id=action.id, account_id=action.account_id)
    return answer
