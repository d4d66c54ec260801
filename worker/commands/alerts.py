"""``alerts list``, ``alerts test CHANNEL``, ``alerts history``: the rules, their subjects and
state; a test message; what fired and what became of its notifications."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING, Any

from worker.commands.args import day_arg, example
from worker.core.errors import EXIT_RUNTIME, NotFoundError

if TYPE_CHECKING:
    from worker.commands.context import Context


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    from worker.alerts.status import rule_status

    settings = ctx.settings
    with ctx.sessions()() as session:
        rows = rule_status(session, settings)
    if args.json:
        ctx.print_json(
            {
                "rules": [
                    {
                        "name": r.name,
                        "metric": r.metric,
                        "direction": r.direction,
                        "thresholds": list(r.thresholds),
                        "per": r.per,
                        "accounts": list(r.accounts),
                        "keys": list(r.keys),
                        "users": list(r.users),
                        "notify": list(r.notify),
                    }
                    for r in settings.alerts
                ],
                "channels": [{"name": c.name, "scheme": c.scheme} for c in settings.channels],
                "subjects": [
                    {
                        "rule": r.rule,
                        "metric": r.metric,
                        "subject": r.subject,
                        "subject_name": r.subject_name,
                        "value": r.value,
                        "thresholds": r.thresholds,
                        "firing": r.firing,
                        "fired_at": r.fired_at,
                        "state": r.state,
                    }
                    for r in rows
                ],
            }
        )
        return 0
    if not settings.alerts:
        ctx.out("no [[alerts]] rules configured (see config.example.toml)")
        return 0
    ctx.print_table(
        ("RULE", "METRIC", "SUBJECT", "VALUE", "THRESHOLD", "STATE", "LAST FIRED (UTC)"),
        [
            (
                r.rule,
                r.metric,
                r.subject_name,
                r.shown_value,
                r.shown_threshold,
                r.state,
                r.fired_at,
            )
            for r in rows
        ],
    )
    return 0


def cmd_test(ctx: Context, args: argparse.Namespace) -> int:
    from worker.alerts.deliver import DeliveryError, Notifier

    settings = ctx.settings
    if args.channel not in {c.name for c in settings.channels}:
        names = ", ".join(c.name for c in settings.channels) or "none configured"
        raise NotFoundError(f"no channel named {args.channel!r} (channels: {names})")
    notifier = Notifier(settings.channels, settings.live)
    notifier.check()
    title = "[openrouter-watcher] test message"
    body = (
        f"A test message from openrouter-watcher to channel {args.channel!r}: "
        "alerts configured to notify it will arrive like this."
    )
    try:
        attempts = notifier.send(args.channel, title, body)
    except DeliveryError as exc:
        ctx.stderr.write(f"error: {exc}\n")
        return EXIT_RUNTIME
    ctx.out(f"sent a test message to channel {args.channel!r} ({attempts} attempt(s))")
    return 0


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    from worker.store.alerts import history

    since = dt.datetime.combine(args.since, dt.time(), dt.UTC) if args.since else None
    with ctx.sessions()() as session:
        items = history(session, since)
    if args.json:
        ctx.print_json(items)
        return 0
    if not items:
        ctx.out("no alert has fired" + (f" since {args.since}" if args.since else ""))
        return 0
    ctx.print_table(
        ("ID", "FIRED (UTC)", "RULE", "SUBJECT", "VALUE", "DELIVERY"),
        [
            (
                item.id,
                item.fired_at,
                item.rule,
                item.subject_name,
                "-" if item.value is None else f"{item.value.normalize():f}",
                ", ".join(
                    f"{n['channel']} {n['status']} ({n['attempts']})" for n in item.notifications
                ),
            )
            for item in items
        ],
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``alerts list|test|history`` to the command line."""
    alerts = subparsers.add_parser(
        "alerts", help="alert rules, a test message, what fired", epilog=example("alerts list")
    )
    sub = alerts.add_subparsers(dest="alerts_command", metavar="COMMAND")
    sub.required = True
    listing = sub.add_parser(
        "list",
        help="every rule's subjects, current value and state (as of the last poll)",
        epilog=example("alerts list --json"),
    )
    listing.add_argument("--json", action="store_true", help="stable JSON output")
    listing.set_defaults(func=cmd_list)
    test = sub.add_parser(
        "test",
        help="send a test message to a channel; exit 1 if it fails",
        epilog=example("alerts test ops"),
    )
    test.add_argument("channel", metavar="CHANNEL", help="a [[channels]] name")
    test.set_defaults(func=cmd_test)
    history = sub.add_parser(
        "history",
        help="alerts that fired and their deliveries",
        epilog=example("alerts history --since 2026-11-01"),
    )
    history.add_argument("--since", metavar="YYYY-MM-DD", type=day_arg, help="from this UTC day")
    history.add_argument("--json", action="store_true", help="stable JSON output")
    history.set_defaults(func=cmd_history)
