"""The daily digest: yesterday's spend per account, its top keys and models, against the mean
of the 7 days before, sent once per UTC day to ``[digest] channels`` at or after ``[digest]
at`` (by the first poll from then: a daemon that was down at that time sends it later).

Yesterday's spend and models come from the stored daily history of the account's management
key (exact; the sync stores yesterday at 00:20 UTC by default, so keep ``at`` after it); the
top keys from the live snapshots (usage at 00:00 today − usage at 00:00 yesterday).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.alerts.fired import Fired
from worker.alerts.messages import PREFIX
from worker.config import Settings
from worker.core.logs import mask_text
from worker.core.render import dollars, safe
from worker.reports.live import spend_between
from worker.reports.report import sum_money
from worker.store import alerts as store
from worker.store.models import KIND_MANAGEMENT, AlertEvent, AlertState, ApiKey, UsageStats, User

RULE = "(digest)"
SUBJECT = "all"
TOP = 3


def _due(settings: Settings, now: dt.datetime) -> bool:
    return bool(settings.digest.channels) and now.time() >= settings.digest.time


def compose(session: Session, today: dt.date) -> tuple[str, str]:
    """(title, body) of the digest for the day before ``today``."""
    yesterday = today - dt.timedelta(days=1)
    dialect = session.get_bind().dialect
    accounts = session.execute(
        select(ApiKey.id, ApiKey.name)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.kind == KIND_MANAGEMENT, ApiKey.is_active.is_(True), User.is_active.is_(True))
        .order_by(ApiKey.id)
    ).all()
    cost = sum_money(UsageStats.cost, dialect)
    lines = []
    total = Decimal(0)
    start = dt.datetime.combine(yesterday, dt.time(), dt.UTC)
    for key_id, name in accounts:
        spent = session.scalar(
            select(cost).where(UsageStats.api_key_id == key_id, UsageStats.date == yesterday)
        ) or Decimal(0)
        before = session.scalar(
            select(cost).where(
                UsageStats.api_key_id == key_id,
                UsageStats.date >= yesterday - dt.timedelta(days=7),
                UsageStats.date < yesterday,
            )
        ) or Decimal(0)
        mean = before / 7
        total += spent
        versus = f"{(spent / mean * 100):.0f} % of" if mean else "no spend in"
        lines.append(
            f'Account "{safe(name)}": {dollars(spent)} ({versus} the 7-day mean {dollars(mean)}).'
        )
        models = session.execute(
            select(UsageStats.model, cost.label("cost"))
            .where(UsageStats.api_key_id == key_id, UsageStats.date == yesterday)
            .group_by(UsageStats.model)
            .order_by(func.sum(UsageStats.cost).desc(), UsageStats.model)
            .limit(TOP)
        ).all()
        if models:
            lines.append("  top models: " + ", ".join(f"{safe(m)} {dollars(c)}" for m, c in models))
        keys = spend_between(session, key_id, start, start + dt.timedelta(days=1))[:TOP]
        if keys:
            lines.append("  top keys: " + ", ".join(f'"{safe(n)}" {dollars(c)}' for n, c in keys))
    if not lines:
        lines.append("No account is registered.")
    title = f"{PREFIX} spend on {yesterday} (UTC): {dollars(total)} over {len(accounts)} account(s)"
    return mask_text(title), mask_text("\n".join(lines))


def maybe_digest(session: Session, settings: Settings, now: dt.datetime) -> Fired | None:
    """Compose and queue today's digest when it is due and not sent yet (in the caller's
    transaction: the state row makes it once per day, restarts included)."""
    if not _due(settings, now):
        return None
    period = now.date().isoformat()
    state = session.scalars(
        select(AlertState).where(AlertState.rule == RULE, AlertState.subject == SUBJECT)
    ).first()
    if state is not None and state.period == period:
        return None
    if state is None:
        state = AlertState(rule=RULE, subject=SUBJECT, threshold="", subject_name="every account")
        session.add(state)
    state.evaluated_at, state.firing, state.period, state.fired_at = now, True, period, now
    title, body = compose(session, now.date())
    event = AlertEvent(
        rule=RULE,
        metric="digest",
        subject=SUBJECT,
        subject_name="every account",
        threshold="",
        value=None,
        period=period,
        fired_at=now,
        title=title,
        body=body,
    )
    event_id = store.add_event(session, event, settings.digest.channels, now)
    return Fired(
        event_id, RULE, "digest", SUBJECT, "every account", Decimal(0), Decimal(0), period, title
    )
