"""What a sync needs to never lose a day: the stored answer's row count.

- ``api_keys.activity_checksum`` (count and sums of the stored rows, re-read on every identical
  answer) gives way to ``api_keys.activity_rows``: the number of (day, model) rows of the last
  whole-window answer stored. An identical answer (same window, same body: the digest) is
  neither validated nor stored again, and reports that many rows unchanged. The digest
  includes the window, so it changes every UTC day and a full sync runs at least daily.

Plain ADD / DROP COLUMN on SQLite too (never a rebuild of a table others reference with
ON DELETE CASCADE, nor of one the reporting views of 0003 read).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("activity_rows", sa.Integer(), nullable=True))
    # recreate="never": SQLite's own DROP COLUMN, never a rebuild of the referenced table.
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.drop_column("activity_checksum")


def downgrade() -> None:
    op.add_column("api_keys", sa.Column("activity_checksum", sa.String(255), nullable=True))
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.drop_column("activity_rows")
    # The digests were recorded with row counts, not checksums: forget them.
    op.execute("UPDATE api_keys SET activity_digest = NULL")
