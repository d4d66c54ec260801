"""One live poll: ask OpenRouter for every account's and key's running totals, store what
changed, evaluate the alert rules, then deliver what they raised.

1. Read the registered keys (one short transaction).
2. Accounts (management keys), ``[sync] concurrency`` at a time: ``GET /credits``,
   ``GET /workspaces`` and every ``GET /keys`` page of each workspace. Then each ordinary key
   that no account lists (its SHA-256 is not a listed hash): ``GET /key``. A key an account
   lists costs nothing more: its figures are the account's listing of it.
3. One short transaction per registered key: its subjects' snapshots (only what changed) and
   its poll time or error. No transaction is open during a request.
4. Old snapshots pruned; the rules evaluated and the digest composed, in one transaction that
   also writes the notifications to send (an outbox), and the guards' actions the rules and
   the declared limits call for (:mod:`worker.guards.react`), so a restart neither loses nor
   repeats an alert or an action.
5. After that commit, the guards' pending changes are sent and their due restores made
   (:mod:`worker.guards.send`, enforce mode only), against the keys as this poll listed them;
   then the notifications' outbox is drained (:func:`worker.alerts.deliver.drain`), so an
   alert that acted says what was done. Delivery is bounded in time, and a failure is
   recorded and retried at the next poll; neither ever fails the poll or touches its figures.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from worker.alerts.deliver import DeliveryCounts, Notifier, drain
from worker.alerts.evaluate import evaluate_all
from worker.alerts.fired import Fired
from worker.config import Settings
from worker.core.days import utc_now
from worker.core.logs import bound_contextvars, get_logger
from worker.core.outcomes import describe_failure
from worker.guards.accounts import Account, management_hashes
from worker.guards.react import react
from worker.guards.send import GuardCounts
from worker.guards.send import drain as send_guards
from worker.openrouter import CatalogKey, KeyInfo, OpenRouterClient, Spend
from worker.openrouter.keys import listed_hash
from worker.store import catalogue as catalogue_store
from worker.store import snapshots
from worker.store.db import transaction
from worker.store.locking import Fence, LockLostError, poll_lock
from worker.store.models import KIND_MANAGEMENT
from worker.store.snapshots import SELF, Observation, Source
from worker.vault.crypto import Keyring

log = get_logger(__name__)


@dataclass(slots=True)
class SourceOutcome:
    """What one registered key's poll did."""

    api_key_id: int
    name: str
    scope: str  # account | key | alias (an ordinary key an account lists)
    status: str = "ok"  # ok | failed
    subjects: int = 0
    snapshots: int = 0
    reason: str | None = None
    error: str | None = None


@dataclass(slots=True)
class PollSummary:
    """What a poll did: the command prints it, the daemon logs it."""

    started_at: dt.datetime
    sources: list[SourceOutcome] = field(default_factory=list)
    requests: int = 0
    pruned: int = 0
    fired: list[Fired] = field(default_factory=list)
    actions_planned: int = 0  # guard actions this poll's rules and drift recorded
    guards: GuardCounts = field(default_factory=GuardCounts)
    delivery: DeliveryCounts = field(default_factory=DeliveryCounts)
    duration_s: float = 0.0

    @property
    def failed(self) -> list[SourceOutcome]:
        return [s for s in self.sources if s.status == "failed"]

    @property
    def status(self) -> str:
        """``failed`` when some registered key's poll failed, else ``ok``."""
        return "failed" if self.failed else "ok"

    @property
    def snapshots(self) -> int:
        return sum(s.snapshots for s in self.sources)

    @property
    def subjects(self) -> int:
        return sum(s.subjects for s in self.sources)

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "status": self.status,
            "accounts": sum(1 for s in self.sources if s.scope == "account"),
            "keys_polled": sum(1 for s in self.sources if s.scope == "key"),
            "subjects": self.subjects,
            "snapshots_written": self.snapshots,
            "snapshots_pruned": self.pruned,
            "requests": self.requests,
            "alerts_fired": [f.as_dict() for f in self.fired],
            "notifications": self.delivery.as_dict(),
            "guard_actions": {"planned": self.actions_planned, **self.guards.as_dict()},
            "sources": [
                {
                    "api_key_id": s.api_key_id,
                    "name": s.name,
                    "scope": s.scope,
                    "status": s.status,
                    "subjects": s.subjects,
                    "snapshots_written": s.snapshots,
                    "reason": s.reason,
                    "error": s.error,
                }
                for s in self.sources
            ],
            "duration_s": round(self.duration_s, 3),
        }


# --- fetching -------------------------------------------------------------------------------


def _spend_values(spend: Spend | None) -> dict[str, Any]:
    if spend is None:
        return {}
    return {
        "usage": spend.usage,
        "usage_daily": spend.daily,
        "usage_weekly": spend.weekly,
        "usage_monthly": spend.monthly,
        "byok_usage": spend.byok,
        "byok_usage_daily": spend.byok_daily,
        "byok_usage_weekly": spend.byok_weekly,
        "byok_usage_monthly": spend.byok_monthly,
        "spend_limit": spend.limit,
        "limit_remaining": spend.limit_remaining,
    }


def _listed(key: CatalogKey) -> dict[str, Any]:
    return {**_spend_values(key.spend), "disabled": key.disabled}


def _info_values(info: KeyInfo) -> dict[str, Any]:
    return {
        "usage": info.usage,
        "spend_limit": info.limit,
        "limit_remaining": info.limit_remaining,
        **_spend_values(info.spend),
    }


@dataclass(slots=True)
class _Answer:
    source: Source
    scope: str
    observations: list[Observation] = field(default_factory=list)
    keys: list[CatalogKey] = field(default_factory=list)
    error: BaseException | None = None
    # An account's management key, decrypted for this poll (the guards send with it).
    secret: str | None = field(default=None, repr=False)


def _account(client: OpenRouterClient, source: Source, secret: str) -> _Answer:
    """``/credits`` and every ``/keys`` page of every workspace: the account and its keys."""
    credits = client.get_credits(secret)
    keys = client.list_account_keys(secret)
    totals = {
        name: sum((v[name] for v in map(_spend_values, (k.spend for k in keys))), Decimal(0))
        for name in (
            "usage_daily",
            "usage_weekly",
            "usage_monthly",
            "byok_usage",
            "byok_usage_daily",
            "byok_usage_weekly",
            "byok_usage_monthly",
        )
    }
    own = {**totals, "usage": credits.total_usage, "balance": credits.balance}
    observations = [Observation(SELF, "account", source.name, own)]
    observations += [Observation(k.hash, "key", k.name, _listed(k)) for k in keys]
    return _Answer(source, "account", observations, keys, secret=secret)


def _fetch(
    client: OpenRouterClient,
    keyring: Keyring,
    source: Source,
    listed: Callable[[str, str | None], CatalogKey | None],
) -> _Answer:
    """One registered key's answer, never raising: an account's, or an ordinary key's own
    (``listed`` finds it in an account's ``/keys`` by hash or label: then no request)."""
    scope = "account" if source.kind == KIND_MANAGEMENT else "key"
    try:
        secret = keyring.decrypt(source.key_encrypted, user_id=source.user_id, key_id=source.id)
        if scope == "account":
            return _account(client, source, secret)
        found = listed(listed_hash(secret), None)
        if found is not None:
            return _Answer(
                source, "alias", [Observation(SELF, "alias", source.name, _listed(found))]
            )
        info = client.get_key(secret)
        if info.is_management_key:  # registered before its kind was known
            return _account(client, source, secret)
        found = listed("", info.label)
        if found is not None:
            return _Answer(
                source, "alias", [Observation(SELF, "alias", source.name, _listed(found))]
            )
        return _Answer(source, "key", [Observation(SELF, "key", source.name, _info_values(info))])
    except Exception as exc:
        return _Answer(source, scope, error=exc)


# --- the poll -------------------------------------------------------------------------------


def _store(
    session_factory: sessionmaker[Session], answer: _Answer, now: dt.datetime
) -> SourceOutcome:
    source = answer.source
    outcome = SourceOutcome(source.id, source.name, answer.scope)
    with bound_contextvars(api_key_id=source.id):
        if answer.error is not None:
            outcome.status = "failed"
            outcome.reason, outcome.error = describe_failure(answer.error)
            trace = {"exc_info": answer.error} if outcome.reason == "unexpected" else {}
            log.warning("poll_key_failed", reason=outcome.reason, error=outcome.error, **trace)
            with transaction(session_factory) as session:
                snapshots.mark_polled(session, source, answer.scope, now, error=outcome.error)
            return outcome
        with transaction(session_factory) as session:
            outcome.snapshots = snapshots.record(
                session, source.id, answer.observations, now, complete=answer.scope == "account"
            )
            snapshots.mark_polled(session, source, answer.scope, now)
            if answer.scope == "account":
                catalogue_store.record_settings(session, source.id, answer.keys, now)
        outcome.subjects = len(answer.observations)
    return outcome


def run_poll(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    *,
    client: OpenRouterClient | None = None,
    notifier: Notifier | None = None,
    stop: threading.Event | None = None,
) -> PollSummary:
    """One poll of every active registered key, the alerts, the deliveries; see the module."""
    started = time.monotonic()
    now = utc_now()
    summary = PollSummary(started_at=now)
    stop = stop or threading.Event()
    with transaction(session_factory) as session:
        sources = snapshots.poll_sources(session)
    own_client = client is None
    if client is None:
        client = OpenRouterClient(settings.openrouter)
    before = client.requests_made
    try:
        workers = max(1, min(settings.sync.concurrency, len(sources)))
        by_hash: dict[str, CatalogKey] = {}
        by_label: dict[str, CatalogKey] = {}

        def listed(key_hash: str, label: str | None) -> CatalogKey | None:
            return by_label.get(label) if label is not None else by_hash.get(key_hash)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
            accounts = [s for s in sources if s.kind == KIND_MANAGEMENT]
            others = [s for s in sources if s.kind != KIND_MANAGEMENT]
            answers: list[_Answer] = []
            for batch in (accounts, others):
                if stop.is_set():
                    break
                found = list(pool.map(lambda s: _fetch(client, keyring, s, listed), batch))
                for answer in found:
                    for key in answer.keys:
                        by_hash.setdefault(key.hash, key)
                        by_label.setdefault(key.label, key)
                answers += found
        summary.sources = [_store(session_factory, answer, now) for answer in answers]
        summary.sources.sort(key=lambda s: s.api_key_id)
        listed_accounts = {
            a.source.id: Account(a.source, a.secret, a.keys)
            for a in answers
            if a.scope == "account" and a.error is None and a.secret is not None
        }
        # Every registered management key: known as one, or answering as one now.
        management = (
            management_hashes(keyring, sources, listed_accounts.values())
            if _guarded(settings)
            else set()
        )
        _evaluate(session_factory, settings, summary, listed_accounts, management, now)
        summary.guards = _guard(session_factory, client, settings, listed_accounts, now)
    finally:
        summary.requests = client.requests_made - before
        if own_client:
            client.close()
    summary.delivery = _deliver(session_factory, settings, notifier)
    summary.duration_s = time.monotonic() - started
    log.info(
        "poll_finished",
        status=summary.status,
        sources=len(summary.sources),
        failed_key_ids=[s.api_key_id for s in summary.failed],
        subjects=summary.subjects,
        snapshots_written=summary.snapshots,
        snapshots_pruned=summary.pruned,
        alerts_fired=len(summary.fired),
        guard_actions_planned=summary.actions_planned,
        **{f"guard_actions_{k}": v for k, v in summary.guards.as_dict().items() if v},
        **{f"notifications_{k}": v for k, v in summary.delivery.as_dict().items()},
        requests=summary.requests,
        duration_s=round(summary.duration_s, 3),
    )
    return summary


def _evaluate(
    session_factory: sessionmaker[Session],
    settings: Settings,
    summary: PollSummary,
    accounts: dict[int, Account],
    management: set[str],
    now: dt.datetime,
) -> None:
    """Prune, evaluate the alerts and plan the guards' actions, in one transaction. Another
    daemon evaluating the same states at the same moment (around a failover) makes this
    transaction fail whole (the states' version counters, the unique constraints): what it
    fired is then the other's, and nothing here is kept twice."""
    cutoff = now - dt.timedelta(days=settings.live.retention_days)
    try:
        with transaction(session_factory) as session:
            summary.pruned = snapshots.prune(session, cutoff)
            summary.fired = evaluate_all(session, settings, now)
            if _guarded(settings):
                summary.actions_planned = len(
                    react(session, settings, summary.fired, accounts, management, now)
                )
    except (StaleDataError, IntegrityError) as exc:
        summary.pruned, summary.fired, summary.actions_planned = 0, [], 0
        log.warning("alerts_evaluated_elsewhere", error=f"{type(exc).__name__}: {exc}"[:300])


def _guarded(settings: Settings) -> bool:
    """Whether a rule acts or the daemon applies the declared limits."""
    return any(rule.act for rule in settings.alerts) or bool(
        settings.guards.apply_limits and settings.limits
    )


def _guard(
    session_factory: sessionmaker[Session],
    client: OpenRouterClient,
    settings: Settings,
    accounts: dict[int, Account],
    now: dt.datetime,
) -> GuardCounts:
    """Send the guards' pending changes and due restores; the poll's figures stand whatever."""
    try:
        return send_guards(session_factory, client, settings, accounts, now)
    except LockLostError:
        raise  # no further write: the poll stops
    except Exception:
        log.exception("guard_actions_failed")
        return GuardCounts()


def _deliver(
    session_factory: sessionmaker[Session], settings: Settings, notifier: Notifier | None
) -> DeliveryCounts:
    """Drain the outbox; whatever happens, the poll's figures and alerts stand."""
    if not settings.channels:
        return DeliveryCounts()
    try:
        return drain(
            session_factory, settings, notifier or Notifier(settings.channels, settings.live)
        )
    except LockLostError:
        raise  # no further write: the poll stops
    except Exception:
        log.exception("alert_delivery_failed")
        return DeliveryCounts()


def locked_poll(
    engine: Engine,
    settings: Settings,
    keyring: Keyring,
    *,
    fences: Sequence[Fence] = (),
    **kwargs: Any,
) -> PollSummary | None:
    """:func:`run_poll` while holding the database's poll lock; None if another poll holds it
    (a poll never waits for a sync: the two locks are separate). ``fences``: checked before
    every transaction too (the daemon's: that it still leads)."""
    with poll_lock(engine, heartbeat=settings.ha.heartbeat_seconds, fences=fences) as locked:
        if locked is None:
            log.info("poll_skipped", reason="another poll is running against this database")
            return None
        return run_poll(locked, settings, keyring, **kwargs)
