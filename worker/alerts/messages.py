"""What a notification says: what happened, how much, against what threshold, for which key
or account, and what to do; one line (the title) plus details. Never a secret: names are
OpenRouter's (already masked) or the operator's, and every text passes the log masking."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from worker.config.rules import METRICS, AlertRule
from worker.core.logs import mask_text
from worker.core.render import dollars, safe
from worker.reports.live import Figures

PREFIX = "[openrouter-watcher]"

_WHAT = {
    "spend_today": "spent {value} today (UTC)",
    "spend_month": "spent {value} this month (UTC)",
    "limit_used_percent": "has used {value} of its limit",
    "balance": "has a credit balance of {value}",
    "runway_days": "has {value} of runway left at its 7-day mean spend",
    "spike": "is spending at {value} of its 7-day mean for this time of day",
    "sync_failing": "has failed {value} in a row",
    "limits_drift": "has {value} whose settings differ from their [[limits]] table",
}
_TODO = {
    "spend_today": "check what the key runs (openrouter-watcher report --by model), and set or "
    "lower its limit on OpenRouter if the spend is unexpected",
    "spend_month": "check what the key runs (openrouter-watcher report --by model), and set or "
    "lower its limit on OpenRouter if the spend is unexpected",
    "spike": "check what the key runs right now; set or lower its limit on OpenRouter if the "
    "spend is unexpected",
    "limit_used_percent": "raise the key's limit on OpenRouter before its requests start "
    "failing, or find out what uses it",
    "balance": "buy credits on OpenRouter (or turn on auto top-up) before requests start failing",
    "runway_days": "buy credits on OpenRouter (or turn on auto top-up), or slow the spend, "
    "before requests start failing",
    "sync_failing": "run `openrouter-watcher status` to see the error, fix it, then "
    "`openrouter-watcher sync`",
    "limits_drift": "see `openrouter-watcher limits plan`; `limits apply` makes OpenRouter "
    "match the declared limits again (or change the [[limits]] table if the change was meant)",
}


def show(value: Decimal, unit: str) -> str:
    """A metric's value for people: $1,234.57, 83.5 %, 4.5 days, 3 syncs."""
    if unit == "usd":
        return dollars(value)
    if unit == "percent":
        return f"{value.normalize():f} %"
    if unit == "days":
        return f"{value.normalize():f} days"
    count = int(value)
    noun = "key" if unit == "keys" else "sync"
    return f"{count} {noun}{'s' if count != 1 else ''}"


@dataclass(frozen=True)
class Subject:
    """Who an alert is about, for people: ``key "bot" of account "production"``."""

    id: str
    label: str
    user: str | None = None


def subject_of(figures: Figures) -> Subject:
    name = safe(figures.name)
    if figures.scope == "account":
        label = f'account "{name}"'
    elif figures.account is not None:
        label = f'key "{name}" of account "{safe(figures.account)}"'
    else:
        label = f'key "{name}"'
    return Subject(figures.subject, label, figures.user)


def compose(
    rule: AlertRule,
    subject: Subject,
    value: Decimal,
    threshold: Decimal,
    period: str,
    figures: Figures | None = None,
) -> tuple[str, str]:
    """(title, body) of a fired alert."""
    unit = rule.unit
    side = "at or above" if rule.direction == "above" else "at or below"
    what = _WHAT[rule.metric].format(value=show(value, unit))
    title = f"{PREFIX} {rule.name}: {subject.label} {what}, {side} {show(threshold, unit)}"
    owner = f" (user {subject.user})" if subject.user else ""
    lines = [
        f"{subject.label[0].upper()}{subject.label[1:]}{owner} {what}: {side} the "
        f'{show(threshold, unit)} threshold of rule "{rule.name}" '
        f"({METRICS[rule.metric][0]}; period {period}).",
    ]
    if figures is not None:
        facts = [
            ("today", figures.today, "usd"),
            ("month to date", figures.month, "usd"),
            ("projected month end", figures.month_end_projection, "usd"),
            ("7-day mean", figures.mean_daily, "usd"),
            ("limit left", figures.limit_remaining, "usd"),
            ("balance", figures.balance, "usd"),
            ("runway", figures.runway_days, "days"),
        ]
        shown = [f"{label}: {show(v, u)}" for label, v, u in facts if v is not None]
        if shown:
            lines.append("; ".join(shown) + ".")
    lines.append(f"What to do: {_TODO[rule.metric]}.")
    return mask_text(title), mask_text("\n".join(lines))
