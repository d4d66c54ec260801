"""Declared limits, made true at OpenRouter: ``limits plan`` says per key what its settings are
and what its ``[[limits]]`` table would change; ``limits apply`` changes them, one
``PATCH /keys/{hash}`` per key that differs, each recorded before it is sent and after.

A plan costs the listing only (``/workspaces`` and the ``/keys`` pages of each account),
nothing per key; an apply adds one request per changed key. A table that names a registered
management key, or a key that two tables match, is a configuration error (exit 2) before
anything is sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from worker.config.limits import LimitTable, table_for
from worker.core.days import utc_now
from worker.core.errors import ConfigError, OpenRouterError
from worker.core.key_settings import KeySettings
from worker.core.logs import get_logger
from worker.core.outcomes import describe_failure
from worker.guards.accounts import Account
from worker.openrouter import CatalogKey, OpenRouterClient
from worker.store import guards as store
from worker.store.db import transaction
from worker.store.models.guards import PENDING

log = get_logger("worker.guards")


@dataclass(frozen=True)
class KeyPlan:
    """One key a table matches: its settings now and what would change."""

    account_id: int
    account: str
    key: CatalogKey
    table: LimitTable
    changes: dict[str, Any]  # field → wanted value, only those that differ

    @property
    def current(self) -> KeySettings:
        return self.key.settings

    def as_dict(self) -> dict[str, Any]:
        """The ``limits plan --json`` entry."""
        return {
            "account_id": self.account_id,
            "account": self.account,
            "key_hash": self.key.hash,
            "key": self.key.name,
            "table": self.table.label,
            "current": self.current.as_dict(),
            "wanted": self.table.wanted(),
            "changes": self.changes,
        }


def plan(
    tables: Sequence[LimitTable], accounts: Sequence[Account], management: set[str]
) -> list[KeyPlan]:
    """Every listed key a table matches, with what would change (nothing for a key already so);
    :class:`ConfigError` for a key two tables match or a registered management key one does."""
    plans = []
    for account in accounts:
        for key in account.keys:
            table = table_for(tables, account.name, key.name)
            if table is None:
                continue
            if key.hash in management:
                raise ConfigError(
                    f"invalid configuration: {table.label} matches key {key.name!r} of account "
                    f"{account.name!r}, a registered management key: the watcher never "
                    "changes one; narrow the table's keys"
                )
            changes = key.settings.changes_to(table.wanted())
            plans.append(KeyPlan(account.id, account.name, key, table, changes))
    return plans


@dataclass(frozen=True)
class Applied:
    """What ``apply`` did to one key."""

    plan: KeyPlan
    action_id: int
    ok: bool
    error: str | None = None
    after: KeySettings | None = None


def before_of(key: CatalogKey) -> dict[str, Any]:
    """What an action records of the key before it: its settings and when OpenRouter last
    changed it (an undo refuses a key changed since)."""
    return {**key.settings.as_dict(), "updated_at": key.updated_at}


def apply(
    factory: sessionmaker[Session],
    client: OpenRouterClient,
    accounts: Sequence[Account],
    plans: Sequence[KeyPlan],
    now: dt.datetime | None = None,
) -> list[Applied]:
    """Make OpenRouter match the plan: per changed key, record the action, send one PATCH
    (retried on 429 and 5xx only), record what OpenRouter answered or why it refused."""
    now = now or utc_now()
    secrets = {account.id: account.secret for account in accounts}
    done = []
    for item in plans:
        if not item.changes:
            continue
        with transaction(factory) as session:
            action_id = _record(session, item, now)
        before = client.http.thread_requests
        try:
            answer = client.update_key(secrets[item.account_id], item.key.hash, item.changes)
        except OpenRouterError as exc:
            reason, message = describe_failure(exc)
            with transaction(factory) as session:
                store.record_failed(
                    session, action_id, f"{reason}: {message}", utc_now(), final=True,
                    attempts=client.http.thread_requests - before,
                )  # fmt: skip
            log.warning("limit_not_applied", action_id=action_id, reason=reason, error=message)
            done.append(Applied(item, action_id, False, f"{reason}: {message}"))
            continue
        after = {**answer.settings.as_dict(), "updated_at": answer.updated_at}
        with transaction(factory) as session:
            store.record_sent(
                session, action_id, after, utc_now(), client.http.thread_requests - before
            )
        log.info("limit_applied", action_id=action_id, account_id=item.account_id)
        done.append(Applied(item, action_id, True, after=answer.settings))
    return done


def _record(session: Session, item: KeyPlan, now: dt.datetime) -> int:
    action_id = store.add(
        session,
        rule=item.table.label,
        source="limits",
        account_id=item.account_id,
        key_hash=item.key.hash,
        key_name=item.key.name,
        action="limit",
        period=f"apply {now.isoformat()}",
        mode="enforce",
        status=PENDING,
        restore="manual",
        before=store.settings_json(before_of(item.key)),
        wanted=store.settings_json(item.changes),
        attempts=0,
        created_at=now,
    )
    assert action_id is not None  # the instant makes the period new
    return action_id
