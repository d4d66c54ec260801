"""`make demo`: the whole pipeline, offline, in one command.

Starts the bundled fake OpenRouter on 127.0.0.1 with a few keys' worth of realistic 30-day
activity, then drives the real command line against a throw-away SQLite database in
``./data/demo/`` (recreated on every run): migrate, add users, add keys (verified against the
fake's ``/key``), sync, and report. Then a live poll, whose alert rule fires and is delivered
to a local webhook receiver (Apprise's ``json://``), which prints what it got. Production
differs only in the base URL and the channel's URL.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import sys
from decimal import Decimal
from pathlib import Path

from worker.cli import main as cli_main
from worker.crypto import generate_master_key
from worker.days import utc_today
from worker.testing.activity_data import generate_activity
from worker.testing.fake_account import generate_account
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.receivers import WebhookReceiver

DEMO_DIR = Path("data/demo")

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

[[alerts]]
name = "daily-spend"
metric = "spend_today"
above = [5, 50]
per = "key"
notify = ["demo-webhook"]
"""


def _show_received(hook: WebhookReceiver) -> None:
    for message in hook.received:
        print(f"\n[local webhook receiver got] {message['json']['title']}")
        for line in str(message["json"]["message"]).splitlines():
            print(f"    {line}")


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    database = DEMO_DIR / "demo.db"
    today = utc_today()
    with FakeOpenRouter(today=today) as fake, WebhookReceiver() as hook:
        # An account with keys of its own: one of them has spent $7.42 today.
        world = fake.add_account(DEMO_ACCOUNT[2], generate_account(today=today, keys=4, days=0))
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
                "OPENROUTER_WATCHER_DATABASE_URL": f"sqlite:///{database}",
                "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": fake.base_url,
                "OPENROUTER_WATCHER_ENCRYPTION_KEY": generate_master_key(),
                "OPENROUTER_WATCHER_LOGGING_LEVEL": "WARNING",
                "OPENROUTER_WATCHER_LOGGING_FORMAT": "console",
            }
        )
        print(f"fake OpenRouter listening on {fake.base_url}; database {database}")
        steps: list[tuple[tuple[str, ...], str | None]] = [(("migrate",), None)]
        for email in dict.fromkeys(user for user, *_ in DEMO_KEYS):
            steps.append((("users", "add", email), None))
        registered = [(user, name, str(key)) for user, name, key, *_ in DEMO_KEYS]
        for user, name, key in [*registered, DEMO_ACCOUNT]:
            steps.append((("keys", "add", "--user", user, "--name", name), key + "\n"))
        steps += [
            (("keys", "list"), None),
            (("sync",), None),
            (("status",), None),
            (("report", "--by", "day"), None),
            (("report", "--by", "model"), None),
            (("poll",), None),
            (("status",), None),
            (("alerts", "list"), None),
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
        f"  OPENROUTER_WATCHER_DATABASE_URL=sqlite:///{database} "
        ".venv/bin/openrouter-watcher report --by model"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
