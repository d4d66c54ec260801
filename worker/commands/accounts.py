"""``generate-key``, ``users …``, ``keys …``, ``tokens …``: the operator's account commands.

Handlers parse, call :mod:`worker.vault.accounts` and print. Secrets never come from argv: the
OpenRouter key and the password are read from stdin when it is piped, or from a hidden prompt
on a terminal. Lists print a table, or with ``--json`` a stable JSON array (README documents it).
"""

from __future__ import annotations

import argparse
import getpass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from worker.commands.args import example, key_id
from worker.commands.progress import is_terminal
from worker.core import render
from worker.core.errors import OpenRouterError, UsageError
from worker.core.logs import get_logger, mask_text
from worker.vault.crypto import Keyring, generate_master_key

# worker.vault.accounts (SQLAlchemy, the models) is imported by each handler, not here: building
# the parser for --help, or for another command, must not load the database layer.
if TYPE_CHECKING:
    from worker.commands.context import Context
    from worker.openrouter import KeyInfo

log = get_logger("worker.commands.accounts")


# --- secrets from stdin or a hidden prompt ----------------------------------------------------


def read_secret(ctx: Context, prompt: str) -> str:
    """A secret from piped stdin (all of it) or, on a terminal, a hidden prompt."""
    if is_terminal(ctx.stdin):
        return getpass.getpass(prompt, stream=ctx.stderr)
    return ctx.stdin.read()


def _confirm(ctx: Context, question: str) -> bool:
    ctx.stderr.write(f"{question} [y/N] ")
    ctx.stderr.flush()
    return ctx.stdin.readline().strip().lower() in ("y", "yes")


# --- generate-key ---------------------------------------------------------------------------


def cmd_generate_key(ctx: Context, args: argparse.Namespace) -> int:
    ctx.out(generate_master_key())
    return 0


# --- users ----------------------------------------------------------------------------------


def cmd_users_add(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    password: str | None = None
    if args.password_stdin:
        # One line, like `docker login --password-stdin`: the trailing newline is not part of it.
        password = ctx.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin given but stdin held no password")
    user = accounts.add_user(ctx.sessions(), args.email, password, admin=args.admin)
    log.info("user_added", user_id=user.id, admin=user.admin)
    kind = "with a password" if password else "without a password (cannot log in)"
    role = "admin " if user.admin else ""
    ctx.out(f"added {role}user {user.id} {user.email} {kind}")
    return 0


def cmd_users_list(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    users = accounts.list_users(ctx.sessions())
    if args.json:
        ctx.print_json(users)
    else:
        ctx.print_table(
            ["ID", "EMAIL", "ACTIVE", "ADMIN", "PASSWORD", "KEYS", "TOKENS", "CREATED"],
            [
                [
                    u.id,
                    u.email,
                    u.active,
                    u.admin,
                    u.has_password,
                    f"{u.keys:,}",
                    f"{u.tokens:,}",
                    u.created_at,
                ]
                for u in users
            ],
        )
    return 0


def _cmd_users_set(active: bool) -> Any:
    def handler(ctx: Context, args: argparse.Namespace) -> int:
        from worker.vault import accounts

        changed = accounts.set_user_active(ctx.sessions(), args.email, active)
        state = "enabled" if active else "disabled"
        email = accounts.normalize_email(args.email)
        log.info(f"user_{state}", email=email, changed=changed)
        ctx.out(f"user {email} {state}" if changed else f"user {email} was already {state}")
        return 0

    return handler


def cmd_users_admin(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    admin = not args.revoke
    changed = accounts.set_user_admin(ctx.sessions(), args.email, admin)
    email = accounts.normalize_email(args.email)
    log.info("user_admin_set" if admin else "user_admin_revoked", email=email, changed=changed)
    if admin:
        said = "is now an admin" if changed else "was already an admin"
    else:
        said = "is no longer an admin" if changed else "was not an admin"
    ctx.out(f"user {email} {said}")
    return 0


# --- keys -----------------------------------------------------------------------------------


def _money(value: Decimal | None) -> str:
    return "none" if value is None else render.dollars(value)


def _verify(ctx: Context, secret: str) -> KeyInfo:
    from worker.openrouter import OpenRouterClient

    try:
        with OpenRouterClient(ctx.settings.openrouter) as client:
            return client.get_key(secret)
    except OpenRouterError as exc:
        raise type(exc)(
            f"cannot verify the key with OpenRouter: {exc}; nothing was stored "
            "(--no-verify stores a key without checking it)"
        ) from exc


def cmd_keys_add(ctx: Context, args: argparse.Namespace) -> int:
    from worker.store.models import KIND_MANAGEMENT, KIND_ORDINARY
    from worker.vault import accounts

    keyring = Keyring.from_settings(ctx.settings)  # before asking for the secret
    factory = ctx.sessions()
    email, name = accounts.check_new_key(factory, args.user, args.name)
    secret = accounts.check_openrouter_key(read_secret(ctx, "OpenRouter key (hidden): "))
    accounts.check_not_registered(factory, keyring, secret)  # before asking OpenRouter
    info = None if args.no_verify else _verify(ctx, secret)
    kind = None
    if info is not None:
        kind = KIND_MANAGEMENT if info.is_management_key else KIND_ORDINARY
    key = accounts.add_key(factory, keyring, email, name, secret, kind)
    log.info(
        "key_added", api_key_id=key.id, user_id=key.user_id, kind=kind, master_key_id=keyring.key_id
    )
    ctx.out(
        f"added key {key.id} {key.name!r} for {key.user}, encrypted with master key "
        f"{keyring.key_id}"
    )
    if info is None:
        ctx.out("not verified (--no-verify): its kind is learned on the first sync")
    elif info.is_management_key:
        ctx.out(
            f"management key {mask_text(info.label)!r}: per-model history available; limit "
            f"{_money(info.limit)}, remaining {_money(info.limit_remaining)}, "
            f"usage {_money(info.usage)}"
        )
    else:
        ctx.out(
            f"ordinary key {mask_text(info.label)!r}: limit {_money(info.limit)}, remaining "
            f"{_money(info.limit_remaining)}, usage {_money(info.usage)}; per-model "
            "history needs a management key"
        )
    return 0


def cmd_keys_list(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    keys = accounts.list_keys(ctx.sessions(), args.user)
    if args.json:
        ctx.print_json(keys)
    else:
        ctx.print_table(
            ["ID", "USER", "NAME", "ACTIVE", "KIND", "MASTER KEY", "CREATED", "LAST USED"],
            [
                [
                    k.id,
                    k.user,
                    k.name,
                    k.active,
                    k.kind,
                    k.master_key_id,
                    k.created_at,
                    k.last_used_at,
                ]
                for k in keys
            ],
        )
    return 0


def _cmd_keys_set(active: bool) -> Any:
    def handler(ctx: Context, args: argparse.Namespace) -> int:
        from worker.vault import accounts

        changed = accounts.set_key_active(ctx.sessions(), args.id, active)
        state = "enabled" if active else "disabled"
        log.info(f"key_{state}", api_key_id=args.id, changed=changed)
        ctx.out(f"key {args.id} {state}" if changed else f"key {args.id} was already {state}")
        return 0

    return handler


def cmd_keys_remove(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    factory = ctx.sessions()
    key = accounts.get_key(factory, args.id)
    if not args.yes:
        if not is_terminal(ctx.stdin):
            raise UsageError(
                f"keys remove {args.id} deletes the key and its usage history: "
                "add --yes to confirm when not on a terminal"
            )
        if not _confirm(
            ctx, f"delete key {key.id} {key.name!r} of {key.user} and all its usage rows?"
        ):
            ctx.out("nothing deleted")
            return 0
    usage = accounts.remove_key(factory, args.id)
    log.info("key_removed", api_key_id=args.id, usage_rows=usage)
    ctx.out(f"removed key {key.id} {key.name!r} of {key.user} and {usage:,} usage rows")
    return 0


def cmd_keys_rotate_master(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    keyring = Keyring.from_settings(ctx.settings)
    result = accounts.rotate_master(ctx.sessions(), keyring)
    log.info(
        "master_key_rotated",
        rotated=result.rotated,
        unchanged=result.unchanged,
        master_key_id=result.master_key_id,
    )
    ctx.out(
        f"re-encrypted {result.rotated:,} keys under master key {result.master_key_id} "
        f"({result.unchanged:,} already were)"
    )
    if result.rotated:
        ctx.out("every key now uses the current master key: previous_keys can be removed")
    return 0


# --- tokens ---------------------------------------------------------------------------------


def cmd_tokens_create(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    view, token = accounts.create_token(ctx.sessions(), args.user, args.name)
    log.info("token_created", token_id=view.id, user_id=view.user_id)
    # The token alone on stdout (so `TOKEN=$(… tokens create …)` works), the note on stderr.
    ctx.out(token)
    print(
        f"created token {view.id} {view.name!r} for {view.user}: it is shown only once, "
        "store it now",
        file=ctx.stderr,
    )
    return 0


def cmd_tokens_list(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    toks = accounts.list_tokens(ctx.sessions(), args.user)
    if args.json:
        ctx.print_json(toks)
    else:
        ctx.print_table(
            ["ID", "USER", "NAME", "ACTIVE", "CREATED", "LAST USED"],
            [[t.id, t.user, t.name, t.active, t.created_at, t.last_used_at] for t in toks],
        )
    return 0


def cmd_tokens_revoke(ctx: Context, args: argparse.Namespace) -> int:
    from worker.vault import accounts

    was_active = accounts.revoke_token(ctx.sessions(), args.id)
    log.info("token_revoked", token_id=args.id, changed=was_active)
    ctx.out(f"token {args.id} revoked" if was_active else f"token {args.id} was already revoked")
    return 0


# --- registration ---------------------------------------------------------------------------


def _group(sub: Any, name: str, help_text: str, shown: str) -> Any:
    parser = sub.add_parser(name, help=help_text, description=help_text, epilog=example(shown))
    inner = parser.add_subparsers(
        dest=f"{name}_command", metavar="COMMAND", parser_class=type(parser)
    )
    inner.required = True
    return inner


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add generate-key, users, keys and tokens to the command line."""
    gen = subparsers.add_parser(
        "generate-key",
        help="print a new random base64 master key",
        epilog=example("generate-key > data/master.key"),
    )
    gen.set_defaults(func=cmd_generate_key, logging=False)

    users = _group(subparsers, "users", "manage users", "users list")
    p = users.add_parser(
        "add",
        help="add a user (no password: it cannot log in)",
        epilog=example("users add alice@example.com"),
    )
    p.add_argument("email")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin",
    )
    p.add_argument(
        "--admin",
        action="store_true",
        help="its API tokens see every user's keys and accounts, not only its own",
    )
    p.set_defaults(func=cmd_users_add)
    p = users.add_parser("list", help="list users", epilog=example("users list --json"))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_users_list)
    for verb, active in (("enable", True), ("disable", False)):
        p = users.add_parser(
            verb, help=f"{verb} a user", epilog=example(f"users {verb} alice@example.com")
        )
        p.add_argument("email")
        p.set_defaults(func=_cmd_users_set(active))
    p = users.add_parser(
        "admin",
        help="make a user an admin: its API tokens see every user's keys and accounts",
        epilog=example("users admin alice@example.com"),
    )
    p.add_argument("email")
    p.add_argument("--revoke", action="store_true", help="make the user an ordinary one again")
    p.set_defaults(func=cmd_users_admin)

    keys = _group(subparsers, "keys", "manage stored OpenRouter keys", "keys list")
    p = keys.add_parser(
        "add",
        help="store an OpenRouter key, read from stdin or a hidden prompt",
        epilog=example("keys add --user alice@example.com --name production"),
    )
    p.add_argument("--user", required=True, metavar="EMAIL")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="do not call OpenRouter's GET /key to check the key first",
    )
    p.set_defaults(func=cmd_keys_add)
    p = keys.add_parser(
        "list",
        help="list keys (never the key itself)",
        epilog=example("keys list --user alice@example.com"),
    )
    p.add_argument("--user", metavar="EMAIL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_keys_list)
    for verb, active in (("enable", True), ("disable", False)):
        p = keys.add_parser(
            verb,
            help=f"{verb} a key (disabled keys are not synced)",
            epilog=example(f"keys {verb} 3"),
        )
        p.add_argument("id", type=key_id)
        p.set_defaults(func=_cmd_keys_set(active))
    p = keys.add_parser(
        "remove", help="delete a key and its usage rows", epilog=example("keys remove 3 --yes")
    )
    p.add_argument("id", type=key_id)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_keys_remove)
    p = keys.add_parser(
        "rotate-master",
        help="re-encrypt every key under the current master key",
        epilog=example("keys rotate-master"),
    )
    p.set_defaults(func=cmd_keys_rotate_master)

    toks = _group(subparsers, "tokens", "manage API tokens", "tokens list")
    p = toks.add_parser(
        "create",
        help="create a token (printed once, only its hash is stored)",
        epilog=example("tokens create --user alice@example.com --name dashboard"),
    )
    p.add_argument("--user", required=True, metavar="EMAIL")
    p.add_argument("--name", required=True)
    p.set_defaults(func=cmd_tokens_create)
    p = toks.add_parser(
        "list", help="list tokens", epilog=example("tokens list --user alice@example.com --json")
    )
    p.add_argument("--user", metavar="EMAIL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_tokens_list)
    p = toks.add_parser("revoke", help="revoke a token", epilog=example("tokens revoke 1"))
    p.add_argument("id", type=key_id)
    p.set_defaults(func=cmd_tokens_revoke)
