"""The daemons sharing a database (migration 0011): each records itself, its role and its
heartbeat, so every instance, ``status`` and ``/metrics`` can tell who leads."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models.base import Base, UTCDateTime

LEADER, STANDBY, STOPPED = "leader", "standby", "stopped"


class Instance(Base):
    """One ``openrouter-watcher run`` daemon, by its ``[ha] instance_name``."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    version: Mapped[str] = mapped_column(String(40), nullable=False)
    revision: Mapped[str] = mapped_column(String(40), nullable=False)  # the schema it expects
    role: Mapped[str] = mapped_column(String(10), nullable=False)  # leader | standby | stopped
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    role_since: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    # PostgreSQL: the backend of the leader's lock connection (a standby ends it on takeover).
    backend_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
