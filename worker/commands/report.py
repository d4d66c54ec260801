"""``openrouter-watcher report``: spend by day, model, account, key or user, as a table, CSV or
JSON."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from worker.commands.args import day_arg, example, key_id, positive_int
from worker.core.days import WINDOW_DAYS, resolve_range, utc_today
from worker.reports.choices import DIMENSIONS, FORMATS

if TYPE_CHECKING:
    from worker.commands.context import Context

DESCRIPTION = f"""\
Spend from the database, grouped in SQL by one dimension, with a total.
Range: UTC days, both ends included; by default the last {WINDOW_DAYS} completed days
(ending yesterday). Tables show dollars to the cent; CSV and JSON give exact amounts
(9 decimals). --by day tables add a bar proportional to each day's cost.

--by account is one row per registered management key (its account's whole spend); --by key
one row per OpenRouter key of each account, plus an "(unattributed)" row per account for
what its keys do not explain (deleted keys, keys not fetched). No grouping ever adds an
account's spend to its keys' spend: every total is the accounts' total."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="spend by day, model, account, key or user (table, CSV or JSON)",
        description=DESCRIPTION,
        epilog=example("report --by day --last 7"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--since", type=day_arg, metavar="DATE", help="first day (YYYY-MM-DD)")
    start.add_argument(
        "--last",
        type=positive_int("a positive number of days"),
        metavar="N",
        help=f"the N days ending at --until (default {WINDOW_DAYS})",
    )
    parser.add_argument(
        "--until", type=day_arg, metavar="DATE", help="last day, included (default: yesterday, UTC)"
    )
    parser.add_argument(
        "--by", choices=DIMENSIONS, default="model", help="group by this dimension (default: model)"
    )
    parser.add_argument("--user", metavar="EMAIL", help="only this user's keys")
    parser.add_argument(
        "--key",
        type=key_id,
        metavar="ID",
        help="only this registered key: a management key's account, or an ordinary key",
    )
    parser.add_argument("--model", metavar="SLUG", help="only this model, e.g. openai/gpt-4o")
    parser.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table)"
    )
    parser.add_argument(
        "--output", metavar="FILE", help="write to FILE (replaced atomically) instead of stdout"
    )
    parser.set_defaults(func=cmd_report, logging=True)


def cmd_report(ctx: Context, args: argparse.Namespace) -> int:
    """Build the report in SQL and print it (or write it to --output)."""
    from worker.reports.formats import empty_message, format_report, write_atomically
    from worker.reports.report import Filters, build_report

    date_range = resolve_range(
        since=args.since, until=args.until, last=args.last, today=utc_today()
    )
    filters = Filters(user_email=args.user, key_id=args.key, model=args.model)
    with ctx.sessions()() as session:
        report = build_report(session, args.by, date_range, filters)
    text = format_report(report, args.format)
    if report.empty and args.format != "table":
        # CSV/JSON stay parseable (header only / no rows); the human note goes to stderr.
        print(empty_message(report), file=ctx.stderr)
    if args.output:
        write_atomically(args.output, text)
        print(f"report written to {args.output}", file=ctx.stderr)
    else:
        ctx.out(text.removesuffix("\n"))
    return 0
