"""`make demo` and `make dashboard`: the whole pipeline, offline.

``python -m worker.demo`` (`make demo`, one shot) starts the bundled fake OpenRouter on
127.0.0.1 with a few keys' worth of realistic 30-day activity, then drives the real command
line against a throw-away SQLite database in ``./data/demo/`` (recreated on every run, its
master key beside it): migrate, add users (alice an admin), add keys (verified against the
fake's ``/key``), sync, and report. Then a live poll, whose alert rule fires and is delivered
to a local webhook receiver (Apprise's ``json://``), which prints what it got: the rule is a
guard in dry-run, so the alert says it would cap the key, and nothing is changed. Then a
declared limit, planned and enforced at the fake (``limits apply --yes``), and the guards'
audit trail. Production differs only in the base URL and the channel's URL.

``python -m worker.demo dashboard`` (`make dashboard`) serves that database's dashboard, API
and metrics until Ctrl-C: the real daemon (``openrouter-watcher run``) against the fake
OpenRouter, after printing the URL and a fresh API token for alice.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import shutil
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path

from worker.cli import main as cli_main
from worker.core.days import utc_today
from worker.testing.activity_data import generate_activity
from worker.testing.fake_account import generate_account
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.receivers import WebhookReceiver
from worker.vault.crypto import create_key_file

DEMO_DIR = Path("data/demo")
DATABASE = DEMO_DIR / "demo.db"
MASTER_KEY = DEMO_DIR / "master.key"
ADMIN = "alice@example.com"  # the demo user `make dashboard` prints a token for
DEFAULT_LISTEN = "127.0.0.1:8787"

# (user, key name, fake key, models, endpoints per model, spend scale, seed)
DEMO_KEYS = [
    (
        "alice@example.com",
        "production",
        "sk-or-v1-demo-production-000000000000000000000001",
        6,
        2,
        Decimal("3"),
        1,
    ),
    (
        "alice@example.com",
        "staging",
        "sk-or-v1-demo-staging-00000000000000000000000000002",
        3,
        1,
        Decimal("0.2"),
        2,
    ),
    (
        "bob@example.com",
        "research",
        "sk-or-v1-demo-research-0000000000000000000000000003",
        4,
        1,
        Decimal("1"),
        3,
    ),
]


def _run(*argv: str, stdin: str | None = None) -> int:
    """Run one real CLI command in-process, echoing it the way a user would type it."""
    shown = "openrouter-watcher " + " ".join(shlex.quote(a) for a in argv)
    if stdin is not None:
        shown = "echo $OPENROUTER_KEY | " + shown
    print(f"\n$ {shown}", flush=True)
    code = cli_main(list(argv), stdin=io.StringIO(stdin) if stdin is not None else None)
    sys.stdout.flush()
    return code


DEMO_ACCOUNT = (
    "alice@example.com",
    "team",
    "sk-or-v1-demo-team-account-00000000000000000000000004",
)
DEMO_RULES = """\
[[channels]]
name = "demo-webhook"
url_env = "DEMO_WEBHOOK_URL"

# A guard in dry-run ([guards] mode is "dry-run" unless set to "enforce"): "key 2" spent past
# $5 today, so the alert says it would cap the key at what it spent; nothing is sent.
[[alerts]]
name = "daily-spend"
metric = "spend_today"
above = 5
per = "key"
keys = ["key 2"]
act = "cap"
notify = ["demo-webhook"]

# A declared limit, enforced by `limits apply --yes`: "key 1" may spend $10 a day.
[[limits]]
keys = ["key 1"]
limit = 10
reset = "daily"
"""


def _show_received(hook: WebhookReceiver) -> None:
    for message in hook.received:
        print(f"\n[local webhook receiver got] {message['json']['title']}")
        for line in str(message["json"]["message"]).splitlines():
            print(f"    {line}")


@contextlib.contextmanager
def demo_openrouter(**settings: str) -> Iterator[tuple[FakeOpenRouter, WebhookReceiver]]:
    """The fake OpenRouter serving the demo keys, and this process configured for the demo
    database only (``settings``: more ``OPENROUTER_WATCHER_*`` variables)."""
    today = utc_today()
    with FakeOpenRouter(today=today) as fake, WebhookReceiver() as hook:
        # An account with keys of its own (listed by its management key, each with 30 days of
        # history); one of them has spent $7.42 today, which the alert rule notices.
        world = fake.add_account(
            DEMO_ACCOUNT[2], generate_account(today=today, keys=4, days=30, models=3, seed=4)
        )
        world.keys[2].spend_today = Decimal("7.42")
        world.keys[1].spend_today = Decimal("1.10")
        for _user, _name, key, models, endpoints, scale, seed in DEMO_KEYS:
            fake.add_key(
                key,
                management=True,
                rows=generate_activity(
                    today=today, days=30, models=models, endpoints=endpoints, seed=seed, scale=scale
                ),
            )
        for var in [v for v in os.environ if v.startswith("OPENROUTER_WATCHER_")]:
            del os.environ[var]  # the demo must not touch a configured production database
        config = DEMO_DIR / "config.toml"
        config.write_text(DEMO_RULES)
        os.environ.update(
            {
                "OPENROUTER_WATCHER_CONFIG": str(config),
                "DEMO_WEBHOOK_URL": hook.url("/openrouter-alerts"),
                "OPENROUTER_WATCHER_DATABASE_URL": f"sqlite:///{DATABASE}",
                "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": fake.base_url,
                "OPENROUTER_WATCHER_ENCRYPTION_KEY_FILE": str(MASTER_KEY),
                "OPENROUTER_WATCHER_LOGGING_LEVEL": "WARNING",
                "OPENROUTER_WATCHER_LOGGING_FORMAT": "console",
                **settings,
            }
        )
        yield fake, hook


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    # Kept beside the database, so `make dashboard` can run the daemon on it later.
    create_key_file(MASTER_KEY)
    with demo_openrouter() as (fake, hook):
        print(f"fake OpenRouter listening on {fake.base_url}; database {DATABASE}")
        steps: list[tuple[tuple[str, ...], str | None]] = [(("migrate",), None)]
        for email in dict.fromkeys(user for user, *_ in DEMO_KEYS):
            admin = ("--admin",) if email == ADMIN else ()
            steps.append((("users", "add", email, *admin), None))
        registered = [(user, name, str(key)) for user, name, key, *_ in DEMO_KEYS]
        for user, name, key in [*registered, DEMO_ACCOUNT]:
            steps.append((("keys", "add", "--user", user, "--name", name), key + "\n"))
        steps += [
            (("keys", "list"), None),
            (("sync",), None),
            (("account-keys",), None),
            (("report", "--by", "day", "--last", "7"), None),
            (("report", "--by", "model"), None),
            (("report", "--by", "key"), None),
            (("poll",), None),
            (("status",), None),
            (("alerts", "list"), None),
            (("limits", "plan"), None),
            (("limits", "apply", "--yes"), None),
            (("guards", "history"), None),
        ]
        for argv, stdin in steps:
            code = _run(*argv, stdin=stdin)
            if code != 0:
                print(f"demo step failed with exit code {code}", file=sys.stderr)
                return code
            if argv == ("poll",):
                _show_received(hook)
    print(
        "\nThe demo database stays until the next `make demo`; query it with e.g.\n"
        f"  OPENROUTER_WATCHER_DATABASE_URL=sqlite:///{DATABASE} "
        ".venv/bin/openrouter-watcher report --by model\n"
        "and look at it in a browser with  make dashboard"
    )
    return 0


def dashboard(listen: str) -> int:
    """Serve the demo database's dashboard, API and metrics until Ctrl-C (`make dashboard`)."""
    if not (DATABASE.exists() and MASTER_KEY.exists()):
        print(f"no demo database in {DEMO_DIR}: running the demo first")
        code = main()
        if code:
            return code
    with demo_openrouter(OPENROUTER_WATCHER_HTTP_LISTEN=listen):
        quiet = io.StringIO()
        # The database may predate the current schema; the token is new on every run.
        if cli_main(["migrate"], stdout=quiet) != 0:
            return 2
        if (
            cli_main(
                ["tokens", "create", "--user", ADMIN, "--name", "make dashboard"],
                stdout=quiet,
                stderr=io.StringIO(),
            )
            != 0
        ):
            print(f"cannot create a token for {ADMIN}: run `make demo` again", file=sys.stderr)
            return 1
        token = quiet.getvalue().strip().splitlines()[-1]
        url = f"http://{listen}/"
        print(
            f"\ndashboard  {url}\n"
            f"token      {token}\n"
            f"           (for {ADMIN}, an admin: it sees every demo user's keys; paste it into "
            "the page, or\n"
            f"            curl -H 'Authorization: Bearer {token}' {url}api/v1/usage)\n"
            f"metrics    {url}metrics\n"
            f"health     {url}healthz\n"
            "Ctrl-C stops it.\n",
            flush=True,
        )
        return cli_main(["run"])


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.demo", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("dashboard", help="serve the demo database's dashboard until Ctrl-C")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    if args.command == "dashboard":
        return dashboard(args.listen)
    return main()


if __name__ == "__main__":
    raise SystemExit(cli())
