"""An admin flag on users: an admin's API token sees every user's keys and accounts.

- ``users.is_admin``: NOT NULL, false by default, so every existing user stays an ordinary one
  (``openrouter-watcher users admin EMAIL`` makes one an admin).

Plain ADD / DROP COLUMN on SQLite too: ``users`` is referenced by ``api_keys`` and
``api_tokens`` with ON DELETE CASCADE and read by the reporting views of 0003, so it is never
rebuilt.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # recreate="never": SQLite's own DROP COLUMN, never a rebuild of the referenced table.
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.drop_column("is_admin")
