"""What a sync needs to never lose a day, never double count a key, and never overflow.

- ``api_keys.activity_checksum`` (count and sums of the stored rows, re-read on every identical
  answer) gives way to ``api_keys.activity_rows``: the number of (day, model) rows of the last
  whole-window answer stored. An identical answer (same window, same body: the digest) is
  neither validated nor stored again, and reports that many rows unchanged. The digest
  includes the window, so it changes every UTC day and a full comparison runs at least daily.
- ``api_keys.suspicious_digest`` / ``suspicious_since``: an answer that would delete too much
  of a key's stored history is held back; the same answer (body digest) seen again long
  enough later is applied.
- ``api_keys.fingerprint``: a keyed fingerprint (HMAC under a key derived from the master key)
  of the OpenRouter key, so the same key cannot be registered twice; never a plain hash.
- ``sync_key_results.reason``: the stable reason code of a failed key (``unauthorized``, …).
- ``usage_stats.requests_count`` becomes BIGINT on PostgreSQL, like the token counts (SQLite's
  INTEGER is 64-bit already). The reporting views of 0003 depend on the column: they are
  dropped and re-created around the change, with their definitions frozen here.

Plain ADD / DROP COLUMN on SQLite (never a rebuild of a table others reference with ON DELETE
CASCADE, nor of one the reporting views read).

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

# 0003's view definitions, frozen: a migration must not change when the code does.
V_USAGE_DAILY = """
CREATE VIEW v_usage_daily AS
SELECT
    u.email AS user_email,
    k.id AS key_id,
    k.name AS key_name,
    s.date AS date,
    s.model AS model,
    COALESCE(s.requests_count, 0) AS requests,
    COALESCE(s.tokens_input, 0) AS tokens_input,
    COALESCE(s.tokens_output, 0) AS tokens_output,
    COALESCE(s.tokens_reasoning, 0) AS tokens_reasoning,
    COALESCE(s.cost, 0) AS cost,
    COALESCE(s.byok_cost, 0) AS byok_cost
FROM usage_stats AS s
JOIN api_keys AS k ON k.id = s.api_key_id
JOIN users AS u ON u.id = k.user_id
"""

V_SPEND_DAILY = """
CREATE VIEW v_spend_daily AS
SELECT
    u.email AS user_email,
    k.id AS key_id,
    k.name AS key_name,
    s.date AS date,
    COUNT(*) AS models,
    COALESCE(SUM(s.requests_count), 0) AS requests,
    COALESCE(SUM(s.tokens_input), 0) AS tokens_input,
    COALESCE(SUM(s.tokens_output), 0) AS tokens_output,
    COALESCE(SUM(s.tokens_reasoning), 0) AS tokens_reasoning,
    CAST(COALESCE(SUM(ROUND(s.cost * 1000000000)), 0) / 1000000000 AS NUMERIC(18, 9)) AS cost,
    CAST(COALESCE(SUM(ROUND(s.byok_cost * 1000000000)), 0) / 1000000000 AS NUMERIC(18, 9))
        AS byok_cost
FROM usage_stats AS s
JOIN api_keys AS k ON k.id = s.api_key_id
JOIN users AS u ON u.id = k.user_id
GROUP BY u.email, k.id, k.name, s.date
"""


def _requests_count(kind: type[sa.types.TypeEngine[int]]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP VIEW v_spend_daily")
    op.execute("DROP VIEW v_usage_daily")
    op.alter_column("usage_stats", "requests_count", type_=kind(), existing_nullable=True)
    op.execute(V_USAGE_DAILY)
    op.execute(V_SPEND_DAILY)


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("activity_rows", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("suspicious_digest", sa.String(64), nullable=True))
    op.add_column(
        "api_keys", sa.Column("suspicious_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("api_keys", sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_index(op.f("ix_api_keys_fingerprint"), "api_keys", ["fingerprint"])
    # recreate="never": SQLite's own DROP COLUMN, never a rebuild of the referenced table.
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.drop_column("activity_checksum")
    op.add_column("sync_key_results", sa.Column("reason", sa.String(40), nullable=True))
    _requests_count(sa.BigInteger)


def downgrade() -> None:
    _requests_count(sa.Integer)
    with op.batch_alter_table("sync_key_results", recreate="never") as batch:
        batch.drop_column("reason")
    op.add_column("api_keys", sa.Column("activity_checksum", sa.String(255), nullable=True))
    op.drop_index(op.f("ix_api_keys_fingerprint"), table_name="api_keys")
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.drop_column("fingerprint")
        batch.drop_column("suspicious_since")
        batch.drop_column("suspicious_digest")
        batch.drop_column("activity_rows")
    # The digests were recorded with row counts, not checksums: forget them.
    op.execute("UPDATE api_keys SET activity_digest = NULL")
