"""The sync ledger: every run (``sync_runs``) and every key's outcome in it
(``sync_key_results``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from worker.core.outcomes import KeyOutcome
from worker.store.models import SyncKeyResult, SyncRun, UTCDateTime, utcnow

TRIGGERS = ("sync", "backfill", "schedule")
RUN_STATUSES = ("ok", "failed", "interrupted")
_RESULTS: Table = SyncKeyResult.__table__  # type: ignore[assignment]


def start_run(
    session: Session,
    trigger: str,
    *,
    started_at: dt.datetime | None = None,
    instance: str | None = None,
) -> int:
    """Create a ``sync_runs`` row in status ``running``; returns its id. ``instance``: the
    daemon running it (None: a command)."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r} (expected one of {', '.join(TRIGGERS)})")
    run = SyncRun(
        trigger=trigger, status="running", started_at=started_at or utcnow(), instance=instance
    )
    session.add(run)
    session.flush()
    return run.id


def record_outcomes(session: Session, run_id: int, outcomes: Sequence[KeyOutcome]) -> None:
    """Add one ``sync_key_results`` row per outcome, in one executemany."""
    if not outcomes:
        return
    finished_at = utcnow()
    session.execute(
        insert(_RESULTS),
        [
            {
                "run_id": run_id,
                "api_key_id": outcome.api_key_id,
                "status": outcome.status,
                "rows_inserted": outcome.counts.inserted,
                "rows_updated": outcome.counts.updated,
                "rows_unchanged": outcome.counts.unchanged,
                "rows_deleted": outcome.counts.deleted,
                "http_requests": outcome.http_requests,
                "error": outcome.error,
                "reason": outcome.reason,
                "finished_at": finished_at,
            }
            for outcome in outcomes
        ],
    )


def finish_run(
    session: Session, run_id: int, *, status: str, keys_ok: int, keys_failed: int
) -> None:
    """Close a run: ``ok``, ``failed`` (some key failed) or ``interrupted``."""
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id)
        .values(status=status, keys_ok=keys_ok, keys_failed=keys_failed, finished_at=utcnow())
    )


def interrupt_stale_runs(session: Session) -> list[int]:
    """Mark every run still ``running`` as ``interrupted``; returns their ids.

    Call it only while holding the sync lock (:mod:`worker.store.locking`): then no other process is
    syncing, so a run still marked running was cut short (killed, machine lost).
    """
    stale = list(
        session.scalars(select(SyncRun.id).where(SyncRun.status == "running").order_by(SyncRun.id))
    )
    for run_id in stale:
        outcomes = list(
            session.scalars(select(SyncKeyResult.status).where(SyncKeyResult.run_id == run_id))
        )
        finish_run(
            session,
            run_id,
            status="interrupted",
            keys_ok=outcomes.count("ok"),
            keys_failed=outcomes.count("failed"),
        )
    return stale


def last_success(session: Session, api_key_id: int, before_run: int) -> dt.datetime | None:
    """When the key's last successful sync before run ``before_run`` finished (None: never)."""
    return session.scalar(
        select(func.max(SyncKeyResult.finished_at, type_=UTCDateTime())).where(
            SyncKeyResult.api_key_id == api_key_id,
            SyncKeyResult.status == "ok",
            SyncKeyResult.run_id < before_run,
        )
    )
