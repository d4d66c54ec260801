"""The last stored ``/activity`` answer of each key, so an identical answer is not stored again.

- ``api_keys.activity_digest``: SHA-256 of the window and the body of the last whole-window
  ``/activity`` answer whose rows were stored;
- ``api_keys.activity_checksum``: the count and sums of that key's stored rows in that window,
  read right after storing them. A sync skips validating and storing an identical answer only
  when the same aggregate query still returns this checksum, so a change made to the stored
  rows in the meantime is still repaired.

Both are plain ``ADD COLUMN`` on SQLite too (no batch rebuild: other tables reference
``api_keys`` with ON DELETE CASCADE, and the reporting views of 0003 refer to it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("activity_digest", sa.String(64), nullable=True))
    op.add_column("api_keys", sa.Column("activity_checksum", sa.String(255), nullable=True))


def downgrade() -> None:
    # recreate="never": SQLite's own DROP COLUMN, never a rebuild of the referenced table.
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.drop_column("activity_checksum")
        batch.drop_column("activity_digest")
