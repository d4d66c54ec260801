"""An alert that fired in one evaluation (a rule's threshold, or the daily digest): what the
poll reports, logs and counts."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Fired:
    """An alert that fired in this evaluation."""

    event_id: int
    rule: str
    metric: str
    subject: str
    subject_name: str
    threshold: Decimal
    value: Decimal
    period: str
    title: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "rule": self.rule,
            "metric": self.metric,
            "subject": self.subject,
            "subject_name": self.subject_name,
            "threshold": self.threshold,
            "value": self.value,
            "period": self.period,
            "title": self.title,
        }
