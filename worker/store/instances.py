"""The daemons sharing the database (``instances``): each records itself and beats; who leads,
and since when. Every function runs in the caller's transaction.

Times are the database's own clock (:func:`db_now`), so daemons on two hosts whose clocks
differ still agree on how old a heartbeat is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, case, select, text, update
from sqlalchemy.orm import Session

from worker.store.models import Instance, UTCDateTime
from worker.store.models.ha import LEADER, STANDBY, STOPPED

__all__ = ["LEADER", "STANDBY", "STOPPED", "InstanceView"]


@dataclass(frozen=True)
class InstanceView:
    """One daemon as the database last heard of it."""

    name: str
    host: str
    pid: int
    version: str
    revision: str
    role: str
    started_at: dt.datetime
    role_since: dt.datetime
    heartbeat_at: dt.datetime
    backend_pid: int | None


def _view(row: Instance) -> InstanceView:
    return InstanceView(
        row.name,
        row.host,
        row.pid,
        row.version,
        row.revision,
        row.role,
        row.started_at,
        row.role_since,
        row.heartbeat_at,
        row.backend_pid,
    )


def db_now(session: Session | Connection) -> dt.datetime:
    """The database server's current time, as an aware UTC datetime."""
    bind = session.get_bind() if isinstance(session, Session) else session
    if bind.dialect.name == "postgresql":
        value = session.execute(text("SELECT statement_timestamp()")).scalar_one()
    else:
        value = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return UTCDateTime().process_result_value(value, None)  # type: ignore[arg-type]


def register(
    session: Session, *, name: str, host: str, pid: int, version: str, revision: str
) -> int:
    """This daemon, as a standby, at its start (a name used before is taken over: the same
    daemon restarted); its id."""
    now = db_now(session)
    row = session.scalars(select(Instance).where(Instance.name == name)).first()
    if row is None:
        row = Instance(name=name)
        session.add(row)
    row.host, row.pid, row.version, row.revision = host, pid, version, revision
    row.role, row.started_at, row.role_since, row.heartbeat_at = STANDBY, now, now, now
    row.backend_pid = None
    session.flush()
    return row.id


def beat(
    session: Session | Connection, instance_id: int, role: str, *, backend_pid: int | None = None
) -> None:
    """The daemon is alive, in ``role`` (``role_since`` moves when the role changes)."""
    now = db_now(session)
    values: dict[str, object] = {
        "heartbeat_at": now,
        "role": role,
        "role_since": case((Instance.role == role, Instance.role_since), else_=now),
    }
    if role == LEADER:
        values["backend_pid"] = backend_pid
    session.execute(update(Instance).where(Instance.id == instance_id).values(**values))


def stopped(session: Session, instance_id: int) -> None:
    """The daemon stopped cleanly: it neither leads nor waits to."""
    now = db_now(session)
    session.execute(
        update(Instance)
        .where(Instance.id == instance_id)
        .values(role=STOPPED, role_since=now, heartbeat_at=now, backend_pid=None)
    )


def every(session: Session) -> list[InstanceView]:
    """Every daemon recorded, newest heartbeat first."""
    rows = session.scalars(select(Instance).order_by(Instance.heartbeat_at.desc(), Instance.id))
    return [_view(row) for row in rows]


def leader(session: Session) -> InstanceView | None:
    """The daemon recorded as leader with the newest heartbeat (maybe a dead one: see its
    ``heartbeat_at``), or None."""
    row = session.scalars(
        select(Instance).where(Instance.role == LEADER).order_by(Instance.heartbeat_at.desc())
    ).first()
    return _view(row) if row is not None else None
