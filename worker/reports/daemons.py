"""The daemons sharing the database as ``status``, ``/healthz`` and ``/metrics`` show them:
each one's role, who leads, and whether the database has gone without a leader for longer
than a takeover may take (``[ha] takeover_seconds`` plus one heartbeat): a problem.

Ages are measured on the database's clock (the heartbeats are written with it), so a host
whose clock is off does not make a live leader look dead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from worker.config import HaSettings
from worker.store import instances
from worker.store.instances import LEADER, STOPPED, InstanceView

SILENT = "silent"  # recorded as leader or standby, not heard from within the bound
FORGOTTEN_AFTER = dt.timedelta(days=7)  # a daemon killed and never back counts no more


@dataclass(frozen=True)
class Daemon:
    """One daemon: ``role`` is ``leader``, ``standby``, ``stopped`` or ``silent``."""

    name: str
    host: str
    pid: int
    version: str
    role: str
    since: dt.datetime
    heartbeat_at: dt.datetime
    heartbeat_age_seconds: float


@dataclass(frozen=True)
class Daemons:
    """Every daemon recorded, and the database's leadership."""

    daemons: tuple[Daemon, ...]
    leader: str | None  # the live leader's name
    bound_seconds: float  # longest a takeover may take
    # How long no live daemon has led while some daemon expected one (None: one leads, or
    # every daemon stopped cleanly).
    leaderless_seconds: float | None

    @property
    def problem(self) -> str | None:
        """The line for ``status`` when the database has gone too long without a leader."""
        if self.leaderless_seconds is None or self.leaderless_seconds <= self.bound_seconds:
            return None
        return (
            f"no daemon has led for {self.leaderless_seconds:.0f} s (a takeover takes at most "
            f"{self.bound_seconds:.0f} s): nothing is syncing, polling or alerting; start "
            "`openrouter-watcher run` on a host, or see the logs of the daemons listed"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "leader": self.leader,
            "leaderless_seconds": self.leaderless_seconds,
            "takeover_bound_seconds": self.bound_seconds,
            "instances": list(self.daemons),
        }


def bound(ha: HaSettings) -> float:
    """Longest a takeover may take: the standby notices within a heartbeat of the takeover
    time."""
    return ha.takeover_seconds + ha.heartbeat_seconds


def daemons(session: Session, ha: HaSettings) -> Daemons | None:
    """The daemons as the database knows them; None when no daemon ever recorded itself (a
    database only commands use)."""
    now = instances.db_now(session)
    seen = [i for i in instances.every(session) if now - i.heartbeat_at < FORGOTTEN_AFTER]
    if not seen:
        return None
    limit = bound(ha)

    def role(item: InstanceView) -> str:
        age = (now - item.heartbeat_at).total_seconds()
        return item.role if item.role == STOPPED or age <= limit else SILENT

    shown = tuple(
        Daemon(
            i.name,
            i.host,
            i.pid,
            i.version,
            role(i),
            i.role_since,
            i.heartbeat_at,
            round(max(0.0, (now - i.heartbeat_at).total_seconds()), 1),
        )
        for i in seen
    )
    live = [d for d, i in zip(shown, seen, strict=True) if d.role == LEADER]
    leaderless: float | None = None
    if not live and any(i.role != STOPPED for i in seen):
        # Since the last change: a leader last heard of, a daemon that stepped down, stopped
        # or started (a standby that started waits for a leader from then: a standby that
        # restarts while none leads moves this; it takes the lead within a heartbeat, or
        # is reported once the bound has passed again).
        since = max(
            [i.heartbeat_at for i in seen if i.role == LEADER] + [i.role_since for i in seen]
        )
        leaderless = round(max(0.0, (now - since).total_seconds()), 1)
    return Daemons(shown, live[0].name if live else None, limit, leaderless)
