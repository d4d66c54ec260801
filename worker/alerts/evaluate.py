"""Evaluate every rule against the live figures after a poll; fire each alert once.

A rule fires once per (rule, subject, threshold, period): the period is the UTC day for
``spend_today`` and ``spike``, the month for ``spend_month``, and the crossing itself for
``balance``, ``runway_days``, ``limit_used_percent`` and ``sync_failing``, which re-arm when
the value goes back across the threshold by :data:`~worker.config.rules.HYSTERESIS` (5 %).
"Above" is at or above, "below" at or below. The state of every (rule, subject, threshold) is
stored with its last value (``alert_states``), so a restart fires nothing new; a fired alert
is stored with one pending notification per channel in the same transaction (the outbox).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from worker.alerts.digest import maybe_digest
from worker.alerts.fired import Fired
from worker.alerts.messages import Subject, compose, subject_of
from worker.config import Settings
from worker.config.rules import HYSTERESIS, AlertRule
from worker.core.logs import get_logger
from worker.reports.limits import Drift, drifted_or_none
from worker.reports.live import Figures, figures
from worker.store import alerts as store
from worker.store.models import KIND_MANAGEMENT, AlertEvent, AlertState, to_money

log = get_logger(__name__)

_VALUE = {
    "spend_today": "today",
    "spend_month": "month",
    "limit_used_percent": "limit_used_percent",
    "balance": "balance",
    "runway_days": "runway_days",
    "spike": "spike_percent",
}


@dataclass(frozen=True)
class Candidate:
    """A subject a rule applies to, with its current value (None: cannot be computed now)."""

    subject: Subject
    value: Decimal | None
    figures: Figures | None = None


def _in_scope(rule: AlertRule, account: str | None, key: str | None, user: str | None) -> bool:
    return (
        (not rule.accounts or account in rule.accounts)
        and (not rule.keys or key in rule.keys)
        and (not rule.users or user in rule.users)
    )


def candidates(
    rule: AlertRule,
    found: list[Figures],
    failing: list[store.Failing],
    drift: Sequence[Drift] = (),
) -> Iterator[Candidate]:
    """The subjects of a rule (its ``per`` and scope) and their values."""
    if rule.metric == "sync_failing":
        for item in failing:
            account = item.name if item.kind == KIND_MANAGEMENT else None
            if _in_scope(rule, account, item.name, item.user):
                label = f'registered key "{item.name}" (id {item.api_key_id})'
                yield Candidate(
                    Subject(f"registered:{item.api_key_id}", label, item.user), Decimal(item.count)
                )
        return
    for fig in found:
        if fig.scope != rule.per:
            continue
        account = fig.name if fig.scope == "account" else fig.account
        if not _in_scope(rule, account, fig.name if fig.scope == "key" else None, fig.user):
            continue
        if rule.metric == "limits_drift":
            value = sum(
                1
                for d in drift
                if d.account_id == fig.api_key_id
                and (fig.scope == "account" or d.key_hash == fig.key_hash)
            )
            yield Candidate(subject_of(fig), Decimal(value), fig)
        else:
            yield Candidate(subject_of(fig), getattr(fig, _VALUE[rule.metric]), fig)


def period_of(rule: AlertRule, now: dt.datetime) -> str:
    """The period a rule fires once in: the UTC day, the month, or the crossing itself."""
    if rule.period == "day":
        return now.date().isoformat()
    if rule.period == "month":
        return f"{now:%Y-%m}"
    return "crossing"


def _reached(rule: AlertRule, value: Decimal, threshold: Decimal) -> bool:
    return value >= threshold if rule.direction == "above" else value <= threshold


def _rearmed(rule: AlertRule, value: Decimal, threshold: Decimal) -> bool:
    """Back across the threshold by the hysteresis (5 % of it)."""
    margin = abs(threshold) * HYSTERESIS
    if rule.direction == "above":
        return value < threshold - margin
    return value > threshold + margin


def evaluate_all(session: Session, settings: Settings, now: dt.datetime) -> list[Fired]:
    """Evaluate every rule (and the daily digest) in the caller's transaction."""
    fired: list[Fired] = []
    if settings.alerts:
        found = figures(session, now=now, burn_rate_hours=settings.live.burn_rate_hours)
        needs_syncs = any(r.metric == "sync_failing" for r in settings.alerts)
        failing = store.sync_failures(session) if needs_syncs else []
        needs_drift = any(r.metric == "limits_drift" for r in settings.alerts)
        drift = drifted_or_none(session, settings.limits) if needs_drift else []
        known = store.states(session, [r.name for r in settings.alerts])
        for rule in settings.alerts:
            for candidate in candidates(rule, found, failing, drift):
                if candidate.value is not None:
                    fired += _evaluate(session, rule, candidate, known, now)
    digest = maybe_digest(session, settings, now)
    if digest is not None:
        fired.append(digest)
    for item in fired:
        log.info(
            "alert_fired",
            rule=item.rule,
            metric=item.metric,
            subject=item.subject,
            threshold=str(item.threshold),
            value=str(item.value),
            period=item.period,
            event_id=item.event_id,
        )
    return fired


def _evaluate(
    session: Session,
    rule: AlertRule,
    candidate: Candidate,
    known: dict[tuple[str, str, str], AlertState],
    now: dt.datetime,
) -> list[Fired]:
    value = to_money(candidate.value)
    assert value is not None
    period = period_of(rule, now)
    fired = []
    for threshold in rule.thresholds:
        key = (rule.name, candidate.subject.id, f"{threshold:f}")
        state = known.get(key)
        if state is None:
            state = AlertState(
                rule=rule.name,
                subject=candidate.subject.id,
                threshold=key[2],
                subject_name=candidate.subject.label,
                firing=False,
            )
            session.add(state)
            known[key] = state
        state.value, state.evaluated_at = value, now
        state.subject_name = candidate.subject.label
        reached = _reached(rule, value, threshold)
        if period == "crossing":
            if state.firing:
                state.firing = not _rearmed(rule, value, threshold)
                continue
            fire = reached
        else:
            fire = reached and state.period != period
        if not reached and period != "crossing":
            state.firing = False
        if not fire:
            continue
        state.firing, state.period, state.fired_at = True, period, now
        title, body = compose(rule, candidate.subject, value, threshold, period, candidate.figures)
        event_id = store.add_event(
            session,
            AlertEvent(
                rule=rule.name,
                metric=rule.metric,
                subject=candidate.subject.id,
                subject_name=candidate.subject.label,
                threshold=key[2],
                value=value,
                period=period,
                fired_at=now,
                title=title,
                body=body,
            ),
            rule.notify,
            now,
        )
        subject = candidate.subject
        fired.append(
            Fired(
                event_id=event_id,
                rule=rule.name,
                metric=rule.metric,
                subject=subject.id,
                subject_name=subject.label,
                threshold=threshold,
                value=value,
                period=period,
                title=title,
            )
        )
    return fired
