"""What a poll's guards decide, in the poll's evaluation transaction (with the alerts it fired,
so an action is never lost nor made twice): for each rule with ``act`` that reached its last
threshold for a key, one action; with ``[guards] apply_limits``, one for each key that drifted
from its ``[[limits]]`` table.

An action is recorded ``planned`` in dry-run (announced, never sent) or ``pending`` in enforce
mode (sent after the commit by :mod:`worker.guards.send`); the database's one action per rule,
key and period makes it once. Never planned: a change to a registered management key, or to a
key the rule's scope does not name (the alert's subjects are the scope's).

``cap`` sets the key's limit to what it spent so far in the rule's period (today for
``spend_today`` and ``spike``, this month for ``spend_month``) with the limit resetting daily
or monthly, so OpenRouter refuses its next request until the period turns. A key already
capped as tightly is left as it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from worker.alerts.fired import Fired
from worker.config import Settings
from worker.config.rules import AlertRule
from worker.core.errors import ConfigError
from worker.core.logs import get_logger
from worker.guards.accounts import Account
from worker.guards.limits import before_of, plan
from worker.guards.notes import annotate, note
from worker.openrouter import CatalogKey
from worker.store import guards as store
from worker.store.models.guards import FAILED, PENDING, PLANNED, SENT

log = get_logger("worker.guards")
_RESET_OF_PERIOD = {"day": "daily", "month": "monthly"}


def wanted_of(rule: AlertRule, key: CatalogKey) -> dict[str, Any]:
    """The settings ``rule.act`` gives the key (``cap``: its spend so far in the period)."""
    if rule.act == "disable":
        return {"disabled": True}
    reset = _RESET_OF_PERIOD[rule.period]
    spent = key.spend.daily if reset == "daily" else key.spend.monthly
    current = key.settings
    if current.limit is not None and current.limit <= spent and current.limit_reset == reset:
        return {"limit": current.limit, "limit_reset": reset}  # already as tight: keep it
    return {"limit": spent, "limit_reset": reset}


def _subject(subject: str) -> tuple[int, str] | None:
    """(account id, key hash) of an alert subject ``key:ID:HASH`` (None for another)."""
    kind, _, rest = subject.partition(":")
    account, _, key_hash = rest.partition(":")
    if kind != "key" or not account.isdigit() or not key_hash:
        return None
    return int(account), key_hash


def react(
    session: Session,
    settings: Settings,
    fired: Sequence[Fired],
    accounts: Mapping[int, Account],
    management: set[str],
    now: dt.datetime,
) -> list[int]:
    """Record the actions this poll's alerts and drift call for; the new actions' ids."""
    rules = {rule.name: rule for rule in settings.alerts if rule.act}
    mode = settings.guards.mode
    created = []
    for item in fired:
        rule = rules.get(item.rule)
        if rule is None or item.threshold != rule.acting_threshold:
            continue
        new = _act(session, rule, item, accounts, management, mode, now)
        if new is not None:
            created.append(new)
    if settings.guards.apply_limits and settings.limits:
        try:
            created += _apply_limits(session, settings, list(accounts.values()), management, now)
        except ConfigError as exc:  # two tables on one key, a management key: never guess
            log.error("limits_not_applied", error=str(exc))
    return created


def _act(
    session: Session,
    rule: AlertRule,
    item: Fired,
    accounts: Mapping[int, Account],
    management: set[str],
    mode: str,
    now: dt.datetime,
) -> int | None:
    assert rule.act is not None
    where = _subject(item.subject)
    account = accounts.get(where[0]) if where else None
    key = account.key(where[1]) if account and where else None
    trigger = {
        "metric": rule.metric,
        "threshold": f"{item.threshold:f}",
        "value": item.value,
        "event_id": item.event_id,
    }
    if where is None or account is None or key is None:
        # A key polled on its own (GET /key): no registered management key lists it.
        log.warning("guard_not_possible", rule=rule.name, subject=item.subject)
        annotate(
            session,
            item.event_id,
            "not acted",
            f"Guard: did not {rule.act} {item.subject_name}: no registered management key "
            "of its account lists it, so it cannot be changed.",
        )
        return None
    refused = None
    if key.hash in management:
        refused = "it is a registered management key, which the watcher never changes"
    wanted = wanted_of(rule, key)
    changes = key.settings.changes_to(wanted)
    if refused:
        status = FAILED
    elif mode != "enforce":
        status = PLANNED
    else:
        status = PENDING if changes else SENT
    action_id = store.add(
        session,
        rule=rule.name,
        source="alert",
        account_id=account.id,
        key_hash=key.hash,
        key_name=key.name,
        action=rule.act,
        period=item.period,
        mode=mode,
        status=status,
        restore=rule.restore,
        before=store.settings_json(before_of(key)),
        wanted=store.settings_json(wanted),
        after=store.settings_json(before_of(key)) if status == SENT else None,
        sent_at=now if status == SENT else None,
        error=refused,
        attempts=0,
        created_at=now,
        **trigger,
    )
    if action_id is None:
        return None  # this rule already acted on this key in this period
    state = {PLANNED: "planned", PENDING: "pending", SENT: "already", FAILED: "refused"}[status]
    tag, line = note(
        action_id=action_id, action=rule.act, wanted=wanted, key=key.name,
        account=account.name, state=state, detail=refused or "",
    )  # fmt: skip
    annotate(session, item.event_id, tag, line)
    log.info("guard_action_planned", action_id=action_id, rule=rule.name, status=status,
             account_id=account.id, key_hash=key.hash[:8])  # fmt: skip
    return action_id


def _apply_limits(
    session: Session,
    settings: Settings,
    accounts: list[Account],
    management: set[str],
    now: dt.datetime,
) -> list[int]:
    """One action per key that drifted, unless the last one for it already asks the same."""
    created = []
    status = PENDING if settings.guards.enforce else PLANNED
    for item in plan(settings.limits, accounts, management):
        if not item.changes:
            continue
        last = store.latest(session, item.table.label, item.account_id, item.key.hash)
        if last is not None and last.status in (PLANNED, PENDING, FAILED):
            if last.wanted == store.settings_of(store.settings_json(item.changes)):
                continue  # asked already: sent by the outbox, or refused (no retry loop)
        action_id = store.add(
            session,
            rule=item.table.label,
            source="limits",
            account_id=item.account_id,
            key_hash=item.key.hash,
            key_name=item.key.name,
            action="limit",
            period=f"drift {now.isoformat()}",
            mode=settings.guards.mode,
            status=status,
            restore="manual",
            before=store.settings_json(before_of(item.key)),
            wanted=store.settings_json(item.changes),
            attempts=0,
            created_at=now,
        )
        if action_id is not None:
            created.append(action_id)
    return created
