"""``sync`` and ``backfill``: run one sync cycle now, or re-fetch chosen days.

Both hold the database's sync lock (:mod:`worker.store.locking`) so they never overlap the daemon or
each other, print a summary (or with ``--json`` a stable JSON object) and exit 1 when any key
failed, 0 otherwise. On a terminal, a live progress line on stderr shows how far the run has
got (:mod:`worker.commands.progress`). Days OpenRouter cannot report (more than 365 days
back, today, the future) are refused with exit code 2 before anything is fetched.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING, Any

from worker.commands.args import day_arg, example, key_id
from worker.commands.progress import ProgressLine, is_terminal
from worker.core import render
from worker.core.days import backfill_days, utc_today
from worker.core.errors import EXIT_RUNTIME, WatcherError
from worker.vault.crypto import Keyring

if TYPE_CHECKING:
    from worker.commands.context import Context
    from worker.core.usage import WriteCounts
    from worker.sync.summary import RunSummary


class SyncBusyError(WatcherError):
    """Another sync is running against this database: try again when it has finished."""


def format_summary(summary: RunSummary) -> list[str]:
    """The human-readable summary, one line per fact."""
    days = summary.days
    span = f"{days[0]} … {days[-1]}, {len(days)} day{'s' if len(days) != 1 else ''}"
    counts = summary.counts
    lines = [
        f"{summary.trigger} run {summary.run_id} ({span}): {summary.status}",
        f"keys: {summary.keys_ok:,} ok, {summary.keys_failed:,} failed"
        + (f", {summary.keys_skipped:,} not started" if summary.keys_skipped else ""),
        f"rows: {counts.inserted:,} inserted, {counts.updated:,} updated, "
        f"{counts.unchanged:,} unchanged, {counts.deleted:,} deleted"
        + (f", {counts.kept:,} kept (no longer reported, see docs/sync.md)" if counts.kept else ""),
        f"requests: {summary.requests:,}",
    ]
    catalogue = summary.catalogue
    if catalogue.listed or catalogue.linked:
        lines.append(
            f"account keys: {catalogue.listed:,} listed, {catalogue.fetched:,} fetched, "
            f"{catalogue.unchanged:,} unchanged, {catalogue.failed:,} failed"
            + (f", {catalogue.linked:,} linked" if catalogue.linked else "")
            + f"; rows: {_rows(catalogue.counts)}"
        )
    history = summary.history
    if history.requests or history.pending or history.unknown:
        lines.append(
            f"history: {history.accounts:,} account(s) and {history.keys:,} key(s) imported, "
            f"{history.pending:,} pending; rows: {_rows(history.counts)}"
            + (
                f"; {history.rate_limit_seconds:,.0f} s waiting on OpenRouter's rate limit"
                if history.rate_limit_seconds >= 1
                else ""
            )
            + (
                f"; not known to analytics (deleted keys?): {', '.join(history.unknown)}"
                if history.unknown
                else ""
            )
        )
    if summary.stopped:
        lines.append(f"stopped: {summary.stopped}")
    for key in summary.keys:
        if key.status in ("failed", "warning"):
            lines.append(
                render.safe(
                    f"{key.status}: key {key.api_key_id} ({key.name!r}, user {key.user_id}): "
                    f"{key.reason}: {key.error}"
                )
            )
    return lines


def _rows(counts: WriteCounts) -> str:
    return f"{counts.inserted:,} inserted, {counts.updated:,} updated, {counts.deleted:,} deleted"


def _run(
    ctx: Context,
    args: argparse.Namespace,
    *,
    trigger: str,
    days: list[dt.date] | None,
) -> int:
    from worker.sync.run import locked_sync

    ctx.sessions()  # the schema check
    keyring = Keyring.from_settings(ctx.settings)
    progress = None
    if is_terminal(ctx.stderr) and not args.json:
        progress = ProgressLine(ctx.stderr, trigger)
        # Logs go through it: a log line erases the progress line, which is then redrawn.
        ctx.setup_logging(stream=progress.stream)
    try:
        summary = locked_sync(
            ctx.engine,
            ctx.settings,
            keyring,
            trigger=trigger,
            days=days,
            key_ids=args.key,
            progress=progress,
        )
    finally:
        if progress is not None:
            progress.clear()  # before the summary or an error
    if summary is None:
        raise SyncBusyError()
    if args.json:
        ctx.print_json(summary.as_dict())
    else:
        for line in format_summary(summary):
            ctx.out(line)
    return EXIT_RUNTIME if summary.keys_failed or summary.status == "interrupted" else 0


def cmd_sync(ctx: Context, args: argparse.Namespace) -> int:
    """One full cycle now: the whole 30-day window, one request per key."""
    return _run(ctx, args, trigger="sync", days=None)


def cmd_backfill(ctx: Context, args: argparse.Namespace) -> int:
    """Re-fetch the given days only: one request per key and day."""
    # Validated before the database or the network is touched: exit 2 on a bad range.
    days = backfill_days(utc_today(), days=args.days, since=args.since, until=args.until)
    return _run(ctx, args, trigger="backfill", days=days)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        metavar="ID",
        type=key_id,
        action="append",
        help="only this key id (repeatable); default: every active key",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def register(subparsers: Any) -> None:
    """Add ``sync`` and ``backfill`` to the command line."""
    sync = subparsers.add_parser(
        "sync",
        help="fetch OpenRouter's last 30 completed days for every active key now",
        description="Fetch the last 30 completed UTC days of every active key and of every "
        "key its account lists, and continue an account's year-of-history import. Exit 1 if "
        "any key failed.",
        epilog=example("sync --key 1"),
    )
    _common(sync)
    sync.set_defaults(func=cmd_sync)

    backfill = subparsers.add_parser(
        "backfill",
        help="re-fetch chosen days, up to 365 days back",
        description="Re-fetch chosen completed UTC days: the last 30 from /activity (one "
        "request per key and day), older ones from /analytics/query. Days more than 365 days "
        "back, today and future days are refused (exit 2). Exit 1 if any key failed.",
        epilog=example("backfill --since 2026-11-01 --until 2026-11-07"),
    )
    which = backfill.add_mutually_exclusive_group(required=True)
    which.add_argument("--days", metavar="N", type=int, help="the last N completed days (1-365)")
    which.add_argument("--since", metavar="YYYY-MM-DD", type=day_arg, help="first day to fetch")
    backfill.add_argument(
        "--until",
        metavar="YYYY-MM-DD",
        type=day_arg,
        help="last day to fetch (with --since; default: yesterday)",
    )
    _common(backfill)
    backfill.set_defaults(func=cmd_backfill)
