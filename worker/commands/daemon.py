"""`run` (the scheduler daemon) and `status` (per-key health, usable as a health check)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from worker.commands.args import example
from worker.core import render
from worker.core.logs import get_logger
from worker.vault.crypto import CREDENTIAL_NAME, Keyring, create_key_file

if TYPE_CHECKING:
    from worker.commands.context import Context
    from worker.reports.daemons import Daemons
    from worker.reports.status import LiveFigures, Status


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="run the scheduler daemon in the foreground (systemd: "
        "deploy/openrouter-watcher.service)",
        epilog=example("run --local-key-file ./data/master.key"),
    )
    run.add_argument(
        "--local-key-file",
        metavar="PATH",
        help="local runs only: when no master key is configured, use this key file, "
        "creating it (mode 0600) on the first run",
    )
    run.set_defaults(func=cmd_run, logging=False)

    status = sub.add_parser(
        "status",
        help="per-key sync health; exit 1 if the last sync of an active key failed",
        epilog=example("status --json"),
    )
    status.add_argument("--json", action="store_true", help="stable JSON output")
    status.set_defaults(func=cmd_status)


def register_migrate(sub: argparse._SubParsersAction) -> None:
    """``migrate``, registered before every other command (it is the first one to run)."""
    migrate = sub.add_parser(
        "migrate",
        help="bring the database schema to the latest revision",
        epilog=example("migrate"),
    )
    migrate.set_defaults(func=cmd_migrate, logging=True)


def _master_key_configured(ctx: Context) -> bool:
    settings = ctx.settings
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    return bool(
        settings.encryption.key
        or settings.encryption.key_file
        or (credentials and (Path(credentials) / CREDENTIAL_NAME).exists())
    )


def _local_keyring(ctx: Context, path: Path) -> Keyring:
    """Use (creating if needed) a local key file when nothing else is configured."""
    log = get_logger("worker.daemon")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        create_key_file(path)
        log.warning(
            "master_key_created",
            path=str(path),
            note="LOCAL USE ONLY: back this file up; without it the stored OpenRouter "
            "keys cannot be decrypted. Production must configure a key "
            "(OPENROUTER_WATCHER_ENCRYPTION_KEY, [encryption] key_file or a systemd "
            "credential).",
        )
        print(
            f"*** created a new master key in {path} (mode 0600) for this local run. "
            f"Other commands need it too: export OPENROUTER_WATCHER_ENCRYPTION_KEY_FILE={path}",
            file=sys.stderr,
        )
    ctx.override_settings(ctx.settings.replace("encryption", key_file=str(path)))
    return Keyring.from_settings(ctx.settings)


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from worker.daemon.service import SyncDaemon

    # Start-up checks that no retry can fix come first, each a one-line error with exit code 2:
    # configuration (loading the settings), master key. The database is then awaited (it may
    # start after us: a run-time condition the daemon retries) and its schema checked (exit 2).
    settings = ctx.settings
    # Under systemd stdout goes to the journal; on a terminal the console renderer is used.
    ctx.setup_logging(stream=sys.stdout)
    if args.local_key_file and not _master_key_configured(ctx):
        keyring = _local_keyring(ctx, Path(args.local_key_file))
        settings = ctx.settings
    else:
        keyring = Keyring.from_settings(settings)
    factory = ctx.sessions(check=False)  # the daemon checks the schema once the database answers
    notice = ctx.stderr if ctx.stderr.isatty() else None
    daemon = SyncDaemon(settings, ctx.engine, factory, keyring, notice=notice)
    # Claimed before the database wait, so a taken address fails now (exit 2), not later.
    daemon.serve_http()
    return daemon.run()


def cmd_migrate(ctx: Context, args: argparse.Namespace) -> int:
    from worker.store.db import check_schema, init_db

    engine = ctx.engine
    init_db(engine)
    check_schema(engine)
    url = engine.url.render_as_string(hide_password=True)
    ctx.out(f"database {url} is at the latest schema revision")
    return 0


def _format_status(status: Status) -> list[str]:
    headers = ("ID", "USER", "NAME", "KIND", "ACTIVE", "LAST OK (UTC)", "LAST", "ROWS", "NEWEST")
    live = ("TODAY", "MONTH", "LIMIT LEFT", "BALANCE", "RUNWAY")
    lines = render.table(
        (*headers, *live),
        [
            (
                k.api_key_id,
                k.user,
                k.name,
                k.kind,
                k.active,
                k.last_success_at,
                k.last_status or "never",
                f"{k.rows:,}",
                k.newest_date,
                *_live_cells(k.live),
            )
            for k in status.keys
        ],
        align=[render.LEFT] * len(headers) + [render.RIGHT] * len(live),
    )
    for k in status.keys:
        if k.last_status == "failed" and k.last_error:
            lines.append(f"key {k.api_key_id} last error: {render.safe(k.last_error)}")
        if k.live is not None and k.live.poll_error:
            # The row keeps the last good poll's figures: say they are not current, and why.
            as_of = f"{render.cell(k.live.as_of)} UTC" if k.live.as_of else "no poll ever succeeded"
            lines.append(
                f"key {k.api_key_id} last poll failed: {render.safe(k.live.poll_error)} "
                f"(figures as of {as_of})"
            )
    lines += [f"warning: {render.safe(line)}" for line in status.warnings]
    if status.daemons is not None:
        lines += _format_daemons(status.daemons)
    if status.cut_short is not None:
        lines.append(status.problems[-1])
    run = status.last_run
    if run:
        lines.append(
            f"last run: #{run.id} {run.trigger} {run.status}, started "
            f"{render.cell(run.started_at)}, {run.keys_ok:,} ok / {run.keys_failed:,} failed"
        )
    else:
        lines.append("last run: never")
    lines.append(f"next scheduled run: {render.cell(status.next_run_at)} UTC")
    return lines


def _format_daemons(daemons: Daemons) -> list[str]:
    """The daemons sharing the database, who leads, and the problem when none has for too
    long."""
    lines = render.table(
        ("DAEMON", "HOST", "PID", "VERSION", "ROLE", "SINCE (UTC)", "LAST HEARD"),
        [
            (d.name, d.host, d.pid, d.version, d.role, d.since, f"{d.heartbeat_age_seconds} s ago")
            for d in daemons.daemons
        ],
    )
    lines.append(f"leader: {render.safe(daemons.leader) if daemons.leader else 'none'}")
    if daemons.problem is not None:
        lines.append(daemons.problem)
    return lines


def _live_cells(live: LiveFigures | None) -> tuple[object, ...]:
    """TODAY, MONTH, LIMIT LEFT, BALANCE, RUNWAY (from the last live poll)."""
    if live is None:
        return (None,) * 5
    runway = None if live.runway_days is None else f"{live.runway_days:,f} d"
    return (live.today, live.month, live.limit_remaining, live.balance, runway)


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    from worker.reports.status import collect_status
    from worker.store.locking import lock_is_held

    factory = ctx.sessions()
    with factory() as session:
        status = collect_status(
            session,
            ctx.settings.schedule,
            sync_running=lock_is_held(ctx.engine),
            limits=ctx.settings.limits,
            ha=ctx.settings.ha,
        )
    if args.json:
        ctx.print_json(status.to_json())
    else:
        for line in _format_status(status):
            ctx.out(line)
    return 0 if status.healthy else 1
