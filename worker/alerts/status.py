"""What ``alerts list`` shows: every rule's subjects, their value as of the last poll, and
each one's state (read-only: the poll is what evaluates and fires)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from worker.alerts.evaluate import candidates, period_of
from worker.alerts.messages import show
from worker.config import Settings
from worker.core.days import utc_now
from worker.reports.limits import drifted_or_none
from worker.reports.live import figures
from worker.store import alerts as store


@dataclass(frozen=True)
class RuleSubject:
    """One (rule, subject): its current value and which thresholds have fired."""

    rule: str
    metric: str
    subject: str
    subject_name: str
    value: Decimal | None
    thresholds: list[Decimal]
    firing: list[Decimal]  # thresholds fired in the current period or crossing
    fired_at: dt.datetime | None
    unit: str

    @property
    def state(self) -> str:
        if self.value is None:
            return "no data"
        if self.firing:
            return "fired at " + ", ".join(show(t, self.unit) for t in self.firing)
        return "ok"

    @property
    def shown_value(self) -> str:
        return "-" if self.value is None else show(self.value, self.unit)

    @property
    def shown_threshold(self) -> str:
        return ", ".join(show(t, self.unit) for t in self.thresholds)


def rule_status(
    session: Session, settings: Settings, now: dt.datetime | None = None
) -> list[RuleSubject]:
    """Every configured rule's subjects, in the configuration's order."""
    now = now or utc_now()
    found = figures(session, now=now, burn_rate_hours=settings.live.burn_rate_hours)
    failing = store.sync_failures(session)
    drift = drifted_or_none(session, settings.limits)
    states = store.states(session, [r.name for r in settings.alerts])
    rows = []
    for rule in settings.alerts:
        current = period_of(rule, now)
        for candidate in candidates(rule, found, failing, drift):
            firing, last = [], None
            for threshold in rule.thresholds:
                state = states.get((rule.name, candidate.subject.id, f"{threshold:f}"))
                if state is None or state.fired_at is None:
                    continue
                last = max(last or state.fired_at, state.fired_at)
                active = state.firing if rule.period == "crossing" else state.period == current
                if active:
                    firing.append(threshold)
            rows.append(
                RuleSubject(
                    rule=rule.name,
                    metric=rule.metric,
                    subject=candidate.subject.id,
                    subject_name=candidate.subject.label,
                    value=candidate.value,
                    thresholds=list(rule.thresholds),
                    firing=firing,
                    fired_at=last,
                    unit=rule.unit,
                )
            )
    return rows
