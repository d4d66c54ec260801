"""``poll``: one live poll now (what the daemon does every ``[live] interval_minutes``).

Asks OpenRouter for every account's and key's running totals, stores what changed, evaluates
the ``[[alerts]]`` rules and delivers what fired. Exit 1 when a registered key's poll failed
or another poll holds the poll lock; a delivery that fails does not change the exit code (it
is retried at the next poll: see ``alerts history``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from worker.commands.args import example
from worker.core import render
from worker.core.errors import EXIT_RUNTIME, WatcherError
from worker.vault.crypto import Keyring

if TYPE_CHECKING:
    from worker.commands.context import Context
    from worker.live.poll import PollSummary


class PollBusyError(WatcherError):
    """Another poll is running against this database: try again when it has finished."""


def format_summary(summary: PollSummary) -> list[str]:
    """The poll's summary for people, one fact a line."""
    accounts = sum(1 for s in summary.sources if s.scope == "account")
    keys = sum(1 for s in summary.sources if s.scope == "key")
    delivery = summary.delivery
    lines = [
        f"poll: {'failed' if summary.failed else 'ok'}: {accounts} account(s), "
        f"{keys} key(s) asked with /key, {summary.subjects} figures, "
        f"{summary.snapshots} snapshot(s) written, {summary.requests} request(s)",
        f"alerts: {len(summary.fired)} fired; notifications: {delivery.sent} sent, "
        f"{delivery.failed} failed (retried at the next poll)"
        + (f", {delivery.deferred} deferred" if delivery.deferred else "")
        + (f", {delivery.abandoned} abandoned" if delivery.abandoned else ""),
    ]
    lines += [f"fired: {fired.title}" for fired in summary.fired]
    lines += [
        render.safe(f"failed: key {s.api_key_id} ({s.name!r}): {s.reason}: {s.error}")
        for s in summary.failed
    ]
    return lines


def cmd_poll(ctx: Context, args: argparse.Namespace) -> int:
    from worker.alerts.deliver import Notifier
    from worker.live.poll import locked_poll

    ctx.sessions()  # the schema check
    settings = ctx.settings
    keyring = Keyring.from_settings(settings)
    notifier = Notifier(settings.channels, settings.live)
    notifier.check()  # an unusable channel URL is a configuration error, before any request
    summary = locked_poll(ctx.engine, settings, keyring, notifier=notifier)
    if summary is None:
        raise PollBusyError()
    if args.json:
        ctx.print_json(summary.as_dict())
    else:
        for line in format_summary(summary):
            ctx.out(line)
    return EXIT_RUNTIME if summary.failed else 0


def register(subparsers: Any) -> None:
    """Add ``poll`` to the command line."""
    poll = subparsers.add_parser(
        "poll",
        help="poll live spend, limits and balances now, and evaluate the alerts",
        description="Ask OpenRouter for every account's and key's spend today and this "
        "month, limits and balance (/credits and /keys per management key, /key per other "
        "key), store what changed, evaluate the [[alerts]] rules and deliver what fired. "
        "Exit 1 if a key's poll failed.",
        epilog=example("poll --json"),
    )
    poll.add_argument("--json", action="store_true", help="print the summary as JSON")
    poll.set_defaults(func=cmd_poll)
