"""``account-keys`` and ``reconcile``: what the accounts' catalogues hold, and whether
OpenRouter's analytics agree with the stored ``/activity`` rows."""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from worker.commands.args import example, key_id, positive_int
from worker.core import render
from worker.core.days import utc_today
from worker.core.errors import EXIT_RUNTIME, NotFoundError
from worker.reports.choices import HASH_SHOWN

if TYPE_CHECKING:
    from worker.commands.context import Context


def cmd_account_keys(ctx: Context, args: argparse.Namespace) -> int:
    from worker.reports.account_keys import account_keys
    from worker.store.models import ApiKey

    with ctx.sessions()() as session:
        if args.account is not None and session.get(ApiKey, args.account) is None:
            raise NotFoundError(
                f"no API key with id {args.account}: see `openrouter-watcher keys list`"
            )
        keys = account_keys(session, args.account)
    if args.json:
        ctx.print_json(keys)
        return 0
    if not keys:
        ctx.out(
            "no account keys yet: they are listed by the first sync of a registered "
            "management key (see docs/accounts.md)"
        )
        return 0
    ctx.print_table(
        [
            "ACCOUNT", "NAME", "HASH", "DISABLED", "LIMIT", "GONE", "REGISTERED AS", "CREATED",
            "TODAY", "MONTH", "LIMIT LEFT", "LAST GUARD", "AS OF (UTC)",
        ],
        [
            [
                f"{k.account_id} {k.account_name}",
                k.name,
                k.hash[:HASH_SHOWN] + "…",
                "yes" if k.disabled else "",
                _limit(k.limit, k.limit_reset),
                "gone" if k.gone else "",
                k.registered_key_id or "",
                k.created_at,
                k.today,
                k.month,
                k.limit_remaining,
                _guard(k.last_guard_action),
                k.as_of,
            ]
            for k in keys
        ],
    )  # fmt: skip
    return 0


def _limit(limit: Decimal | None, reset: str | None) -> str:
    if limit is None:
        return ""
    return render.dollars(limit) + (f" {reset}" if reset else "")


def _guard(action: dict[str, Any] | None) -> str:
    """``#3 cap sent``: the key's last guard action (guards history has the rest)."""
    return f"#{action['id']} {action['action']} {action['status']}" if action else ""


def cmd_reconcile(ctx: Context, args: argparse.Namespace) -> int:
    from worker.openrouter import OpenRouterClient
    from worker.sync.reconcile import TOLERANCE, accounts_to_check, reconcile, reconcile_days
    from worker.vault.crypto import Keyring

    first, last = reconcile_days(utc_today(), args.days)
    factory = ctx.sessions()
    with factory() as session:
        accounts = accounts_to_check(session, args.account)
    keyring = Keyring.from_settings(ctx.settings)
    with OpenRouterClient(ctx.settings.openrouter) as client:
        checks = reconcile(factory, client, keyring, accounts, first, last)
    exceeding = sum(1 for check in checks for day in check.days if day.exceeds)
    if args.json:
        ctx.print_json(
            {
                "range": {"since": first, "until": last},
                "tolerance": TOLERANCE,
                "accounts": [
                    {
                        "account_id": check.account_id,
                        "account_name": check.account_name,
                        "days_compared": len(check.days),
                        "days_skipped": check.skipped,
                        "differences": [
                            {
                                "date": day.date,
                                "stored_cost": day.stored,
                                "analytics_cost": day.analytics,
                                "difference": day.difference,
                            }
                            for day in check.differences
                        ],
                    }
                    for check in checks
                ],
                "exceeding": exceeding,
            }
        )
    else:
        rows = [
            [
                f"{check.account_id} {check.account_name}",
                day.date,
                f"${day.stored:f}",
                f"${day.analytics:f}",
                f"{day.difference:+f}",
                "EXCEEDS" if day.exceeds else "",
            ]
            for check in checks
            for day in check.differences
        ]
        if rows:
            ctx.print_table(
                ["ACCOUNT", "DAY", "STORED (/activity)", "ANALYTICS", "DIFFERENCE", ""],
                rows,
                align=[render.LEFT] * 2 + [render.RIGHT] * 3 + [render.LEFT],
            )
        compared = sum(len(check.days) for check in checks)
        ctx.out(
            f"{len(checks):,} account(s), {first} … {last}: {compared:,} account-days compared, "
            f"{exceeding:,} differ by more than ${TOLERANCE:f}"
        )
    return EXIT_RUNTIME if exceeding else 0


def register(subparsers: Any) -> None:
    """Add ``account-keys`` and ``reconcile`` to the command line."""
    listed = subparsers.add_parser(
        "account-keys",
        help="every OpenRouter key of the registered accounts, newest first",
        description="The keys each registered management key's account lists (GET /keys), "
        "as the last sync saw them: kept, marked gone, once no longer listed.",
        epilog=example("account-keys --account 1"),
    )
    listed.add_argument("--account", metavar="ID", type=key_id, help="only this management key")
    listed.add_argument("--json", action="store_true", help="print a JSON array")
    listed.set_defaults(func=cmd_account_keys)

    check = subparsers.add_parser(
        "reconcile",
        help="compare OpenRouter's analytics with the stored /activity rows",
        description="For the last N completed days (which /activity also covers), compare "
        "each account's cost per day from /analytics/query with the cost stored from "
        "/activity. Prints the days that differ; exit 1 if any differs by more than "
        "$0.000001. Writes nothing.",
        epilog=example("reconcile --days 7"),
    )
    check.add_argument(
        "--days",
        metavar="N",
        type=positive_int("a positive number of days"),
        default=30,
        help="the last N completed days (1-30, default 30)",
    )
    check.add_argument("--account", metavar="ID", type=key_id, help="only this management key")
    check.add_argument("--json", action="store_true", help="print the comparison as JSON")
    check.set_defaults(func=cmd_reconcile)
