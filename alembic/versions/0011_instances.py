"""Two daemons, one database: the instances and their roles, and which one ran each sync.

- ``instances``: every ``openrouter-watcher run`` daemon sharing the database, by its
  ``[ha] instance_name``: host, pid, version, the schema revision its code expects, its role
  (``leader``, ``standby``, ``stopped``) and since when, its last heartbeat, and on PostgreSQL
  the backend of the leader's lock connection.
- ``sync_runs.instance``: the daemon that ran the sync (NULL: a command).
- ``alert_states.version``: a counter every update of a state compares and moves, so two
  daemons evaluating the same alert at once cannot both fire it (the second's transaction
  fails and rolls back, its event and notifications with it).

A new table and two columns added in place (no table rebuilt).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("revision", sa.String(40), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("role_since", UTC, nullable=False),
        sa.Column("heartbeat_at", UTC, nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("name", name=op.f("uq_instances_name")),
    )
    op.add_column("sync_runs", sa.Column("instance", sa.String(200), nullable=True))
    op.add_column(
        "alert_states",
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
    )


def downgrade() -> None:
    with op.batch_alter_table("alert_states", recreate="never") as batch:
        batch.drop_column("version")
    with op.batch_alter_table("sync_runs", recreate="never") as batch:
        batch.drop_column("instance")
    op.drop_table("instances")
