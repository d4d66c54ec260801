"""``limits plan|apply`` and ``guards list|history|undo``: the declared limits against
OpenRouter, the guards configured, what they did, and undoing one.

``limits plan`` changes nothing (exit 0; with ``--check`` exit 3 when something would change,
like ``git diff --exit-code``). ``limits apply`` and ``guards undo`` change keys at OpenRouter:
``apply`` asks first (``--yes`` when stdin is not a terminal); both hold the poll lock, so the
daemon's guards never act on a key at the same moment.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.commands.args import example, key_id
from worker.commands.progress import is_terminal
from worker.core import render
from worker.core.errors import EXIT_RUNTIME, NotFoundError, UsageError, WatcherError

if TYPE_CHECKING:
    from worker.commands.context import Context
    from worker.guards.accounts import Account
    from worker.guards.limits import KeyPlan
    from worker.openrouter import OpenRouterClient

EXIT_DRIFT = 3  # limits plan --check: something would change


class GuardsBusyError(WatcherError):
    """A live poll is running against this database: try again when it has finished."""


def _shown(settings: dict[str, Any]) -> str:
    """``$25.00 daily +byok`` / ``no limit``: a key's limit settings for people."""
    limit = settings.get("limit")
    text = "no limit" if limit is None else render.dollars(limit)
    if limit is not None:
        text += f" {settings.get('limit_reset') or 'never reset'}"
    if settings.get("include_byok_in_limit"):
        text += " +byok"
    if settings.get("disabled"):
        text += " (disabled)"
    return text


@dataclass(frozen=True)
class _Listed:
    """The accounts as listed now, through ``client``: their keys, the registered management
    keys' hashes (never changed), and the accounts that could not be listed (a line each)."""

    client: OpenRouterClient
    accounts: list[Account]
    management: set[str]
    problems: list[str]


@contextmanager
def _listed(ctx: Context) -> Iterator[_Listed]:
    """Every account's keys now (the listing only); the client closed at the end."""
    from worker.guards.accounts import list_accounts, management_hashes, management_sources
    from worker.openrouter import OpenRouterClient
    from worker.vault.crypto import Keyring

    keyring = Keyring.from_settings(ctx.settings)
    sources = management_sources(ctx.sessions())
    with OpenRouterClient(ctx.settings.openrouter) as client:
        accounts, failed = list_accounts(client, keyring, sources)
        problems = [f"account {s.id} ({s.name}) could not be listed: {why}" for s, why in failed]
        yield _Listed(client, accounts, management_hashes(keyring, sources, accounts), problems)


def _plan(ctx: Context, listed: _Listed) -> list[KeyPlan]:
    from worker.guards.limits import plan

    if not ctx.settings.limits:
        raise UsageError("no [[limits]] tables configured: see docs/guards.md")
    return plan(ctx.settings.limits, listed.accounts, listed.management)


def cmd_plan(ctx: Context, args: argparse.Namespace) -> int:
    with _listed(ctx) as listed:
        plans = _plan(ctx, listed)
    problems = listed.problems
    changing = [p for p in plans if p.changes]
    if args.json:
        ctx.print_json(
            {"keys": [p.as_dict() for p in plans], "changes": len(changing), "problems": problems}
        )
    else:
        ctx.print_table(
            ("ACCOUNT", "KEY", "ON OPENROUTER", "DECLARED", "", "TABLE"),
            [
                (
                    p.account,
                    p.key.name,
                    _shown(p.current.as_dict()),
                    _shown({**p.current.as_dict(), **p.table.wanted()}),
                    "change" if p.changes else "ok",
                    p.table.label,
                )
                for p in plans
            ],
        )
        ctx.out(f"{len(plans):,} key(s) matched, {len(changing):,} would change")
        for line in problems:
            ctx.out(f"warning: {render.safe(line)}")
    if problems:
        return EXIT_RUNTIME
    return EXIT_DRIFT if args.check and changing else 0


def _confirm(ctx: Context, args: argparse.Namespace, count: int) -> bool:
    if args.yes:
        return True
    if not is_terminal(ctx.stdin):
        raise UsageError(
            f"limits apply would change {count} key(s) at OpenRouter: add --yes to confirm "
            "(stdin is not a terminal)"
        )
    ctx.stderr.write(f"Change {count} key(s) at OpenRouter? [y/N] ")
    ctx.stderr.flush()
    return ctx.stdin.readline().strip().lower() in ("y", "yes")


@contextmanager
def _poll_lock(ctx: Context) -> Iterator[Any]:
    from worker.store.locking import poll_lock

    ctx.sessions()  # the schema check
    with poll_lock(ctx.engine) as locked:
        if locked is None:
            raise GuardsBusyError()
        yield locked


def cmd_apply(ctx: Context, args: argparse.Namespace) -> int:
    from worker.guards.limits import apply

    with _listed(ctx) as listed:
        plans = _plan(ctx, listed)
        changing = [p for p in plans if p.changes]
        if listed.problems:
            for line in listed.problems:
                ctx.stderr.write(f"error: {render.safe(line)}\n")
            return EXIT_RUNTIME
        if not changing:
            ctx.out(f"nothing to change: {len(plans):,} key(s) already as declared")
            return 0
        if not _confirm(ctx, args, len(changing)):
            ctx.out("nothing changed")
            return EXIT_RUNTIME
        with _poll_lock(ctx) as locked:
            done = apply(locked, listed.client, listed.accounts, changing)
    failed = [d for d in done if not d.ok]
    if args.json:
        ctx.print_json(
            {
                "changed": [
                    {**d.plan.as_dict(), "action_id": d.action_id, "after": d.after}
                    for d in done
                    if d.ok
                ],
                "failed": [
                    {**d.plan.as_dict(), "action_id": d.action_id, "error": d.error} for d in failed
                ],
                "unchanged": len(plans) - len(changing),
            }
        )
    else:
        for d in done:
            what = (
                f'key "{d.plan.key.name}" of account "{d.plan.account}": '
                f"{_shown(d.plan.current.as_dict())} → "
                f"{_shown({**d.plan.current.as_dict(), **d.plan.changes})} (action #{d.action_id})"
            )
            ctx.out(render.safe(f"changed {what}" if d.ok else f"failed {what}: {d.error}"))
        ctx.out(
            f"{len(done) - len(failed):,} changed, {len(failed):,} failed, "
            f"{len(plans) - len(changing):,} already as declared"
        )
    return EXIT_RUNTIME if failed else 0


def _action_rows(actions: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            a.id,
            a.created_at,
            a.rule,
            a.action,
            f"{a.key_name} ({a.account_name})",
            _shown(a.before),
            _shown({**a.before, **a.wanted}),
            a.mode,
            a.status,
            a.error or "",
        )
        for a in actions
    ]


_HEADERS = ("ID", "AT (UTC)", "RULE", "ACTION", "KEY", "BEFORE", "SETS", "MODE", "STATUS", "NOTE")


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    from worker.store import guards as store

    with ctx.sessions()() as session:
        actions = store.history(session, last=args.last)
    if args.json:
        ctx.print_json(actions)
    elif not actions:
        ctx.out("no guard action yet")
    else:
        ctx.print_table(_HEADERS, _action_rows(actions))
    return 0


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    from worker.store import guards as store
    from worker.store.models.guards import SENT

    settings = ctx.settings
    rules = [r for r in settings.alerts if r.act]
    with ctx.sessions()() as session:
        in_force = [a for a in store.history(session) if a.status == SENT]
    if args.json:
        ctx.print_json(
            {
                "mode": settings.guards.mode,
                "apply_limits": settings.guards.apply_limits,
                "rules": [
                    {
                        "name": r.name,
                        "metric": r.metric,
                        "act": r.act,
                        "restore": r.restore,
                        "at": r.acting_threshold,
                        "accounts": list(r.accounts),
                        "keys": list(r.keys),
                    }
                    for r in rules
                ],
                "limits": settings.limits,
                "in_force": in_force,
            }
        )
        return 0
    ctx.out(f"mode: {settings.guards.mode}; apply_limits: {settings.guards.apply_limits}")
    if rules:
        ctx.print_table(
            ("RULE", "METRIC", "ACT AT", "ACT", "RESTORE", "SCOPE"),
            [
                (
                    r.name,
                    r.metric,
                    f"{r.acting_threshold:f}",
                    r.act,
                    r.restore,
                    ", ".join([*r.accounts, *r.keys]),
                )
                for r in rules
            ],
        )
    else:
        ctx.out('no [[alerts]] rule acts (act = "disable" or "cap"): see docs/guards.md')
    if settings.limits:
        ctx.print_table(
            ("TABLE", "ACCOUNTS", "LIMIT"),
            [
                (
                    t.label,
                    ", ".join(t.accounts) or "every account",
                    _shown(
                        {
                            "limit": t.limit,
                            "limit_reset": t.reset,
                            "include_byok_in_limit": t.include_byok,
                        }
                    ),
                )
                for t in settings.limits
            ],
        )
    ctx.out(f"in force: {len(in_force)} action(s) sent and not undone")
    if in_force:
        ctx.print_table(_HEADERS, _action_rows(in_force))
    return 0


def cmd_undo(ctx: Context, args: argparse.Namespace) -> int:
    from worker.guards.accounts import account_of
    from worker.guards.send import undo
    from worker.store import guards as store

    with ctx.sessions()() as session:
        action = store.get(session, args.id)
    if action is None:
        raise NotFoundError(f"no guard action {args.id}: see `openrouter-watcher guards history`")
    with _listed(ctx) as listed, _poll_lock(ctx) as locked:
        if listed.problems and not any(a.id == action.account_id for a in listed.accounts):
            raise WatcherError(listed.problems[0])
        account = account_of(listed.accounts, action.account_id)
        answer = undo(locked, listed.client, action, account)
    ctx.out(
        render.safe(
            f'undid guard action {action.id}: key "{action.key_name}" of account '
            f'"{action.account_name}" is {_shown(answer.settings.as_dict())} again'
        )
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``limits plan|apply`` and ``guards list|history|undo`` to the command line."""
    limits = subparsers.add_parser(
        "limits",
        help="the declared [[limits]] against OpenRouter: plan, apply",
        epilog=example("limits plan"),
    )
    sub = limits.add_subparsers(dest="limits_command", metavar="COMMAND")
    sub.required = True
    plan = sub.add_parser(
        "plan",
        help="each matched key's limit on OpenRouter and what apply would change (changes "
        "nothing; --check exits 3 when something would change)",
        epilog=example("limits plan --check"),
    )
    plan.add_argument("--check", action="store_true", help="exit 3 when a key would change")
    plan.add_argument("--json", action="store_true", help="stable JSON output")
    plan.set_defaults(func=cmd_plan)
    do = sub.add_parser(
        "apply",
        help="make OpenRouter match the plan: one PATCH per key that differs",
        epilog=example("limits apply --yes"),
    )
    do.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    do.add_argument("--json", action="store_true", help="stable JSON output")
    do.set_defaults(func=cmd_apply)

    guards = subparsers.add_parser(
        "guards",
        help="the guards configured, what they did, undoing one",
        epilog=example("guards history"),
    )
    sub = guards.add_subparsers(dest="guards_command", metavar="COMMAND")
    sub.required = True
    listing = sub.add_parser(
        "list",
        help="the rules that act, the [[limits]] tables, the actions in force",
        epilog=example("guards list"),
    )
    listing.add_argument("--json", action="store_true", help="stable JSON output")
    listing.set_defaults(func=cmd_list)
    history = sub.add_parser(
        "history", help="every guard action, oldest first", epilog=example("guards history --json")
    )
    history.add_argument("--last", metavar="N", type=key_id, help="only the newest N")
    history.add_argument("--json", action="store_true", help="stable JSON output")
    history.set_defaults(func=cmd_history)
    undo = sub.add_parser(
        "undo",
        help="put a key back as it was before a guard action (refused when it changed since)",
        epilog=example("guards undo 3"),
    )
    undo.add_argument("id", metavar="ID", type=key_id, help="the action's id (guards history)")
    undo.set_defaults(func=cmd_undo)
