"""`limits plan|apply` and `guards list|history|undo` end to end, in-process (the ``cli``
fixture), against the fake OpenRouter's account, on a migrated SQLite file: what they print,
their exit codes, what they change at OpenRouter, the requests they cost."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from worker.store import guards as store
from worker.store.db import create_db_engine, make_session_factory
from worker.testing.fake_account import FakeAccount, FakeAccountKey, generate_account, key_hash
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.vault import accounts
from worker.vault.crypto import Keyring

Cli = Callable[..., tuple[int, str, str]]
MANAGEMENT = "sk-or-v1-cli-guards-" + "m" * 44
LIMITS = """
[[limits]]
keys = ["ci-*"]
limit = 25
reset = "daily"

[[limits]]
name = "bots"
keys = ["prod-bot"]
accounts = ["production"]
limit = 100
reset = "monthly"
include_byok = true
"""


@pytest.fixture(autouse=True)
def configured(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, master_key: str, fake: Any
) -> None:
    for name, value in {
        "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
        "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": fake.base_url,
        "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
        "OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS": "2",
        "OPENROUTER_WATCHER_OPENROUTER_BACKOFF_INITIAL": "0",
        "OPENROUTER_WATCHER_LOGGING_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def factory(sqlite_url: str) -> Iterator[Any]:
    engine = create_db_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def account(fake: FakeOpenRouter, factory: Any, keyring: Keyring) -> FakeAccount:
    world = generate_account(today=fake.today, keys=4, days=0)
    for key, name in zip(world.keys, ("ci-main", "ci-docs", "prod-bot", "other"), strict=True):
        key.name = name
    world.keys[0].limit = Decimal(40)  # monthly: to change
    world.keys[1].limit, world.keys[1].limit_reset = Decimal(25), "daily"  # already so
    fake.add_account(MANAGEMENT, world)
    accounts.add_user(factory, "ops@example.com")
    accounts.add_key(factory, keyring, "ops@example.com", "production", MANAGEMENT)
    return world


def write_config(tmp_path: Path, text: str = LIMITS) -> None:
    (tmp_path / "config.toml").write_text(text)


def requests_of(fake: FakeOpenRouter) -> list[str]:
    return [f"{r.path.removeprefix('/api/v1')} {r.status}" for r in fake.requests]


def test_plan_shows_each_key_and_what_would_change_and_changes_nothing(
    cli: Cli, tmp_path: Path, account: FakeAccount, fake: FakeOpenRouter
) -> None:
    write_config(tmp_path)
    code, out, err = cli("limits", "plan")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert any(
        "ci-main" in line and "$40.00 monthly" in line and "change" in line for line in lines
    )
    assert any("ci-docs" in line and " ok " in f"{line} " for line in lines)
    assert any("prod-bot" in line and "$100.00 monthly +byok" in line for line in lines)
    assert "other" not in out  # no table names it
    assert lines[-1] == "3 key(s) matched, 2 would change"
    # The listing only: /workspaces (refused: no workspaces) and the /keys pages.
    assert requests_of(fake) == ["/workspaces 403", "/keys 200", "/keys 200"]
    assert account.keys[0].limit == Decimal(40)
    assert MANAGEMENT not in out + err

    assert cli("limits", "plan", "--check")[0] == 3
    code, out, _ = cli("limits", "plan", "--json")
    document = json.loads(out)
    assert document["changes"] == 2
    by_key = {k["key"]: k for k in document["keys"]}
    assert by_key["ci-main"]["changes"] == {"limit": "25", "limit_reset": "daily"}
    assert by_key["ci-docs"]["changes"] == {}
    assert by_key["prod-bot"]["table"] == "[[limits]] 'bots' (keys 'prod-bot')"


def test_apply_asks_for_yes_without_a_terminal_and_changes_nothing(
    cli: Cli, tmp_path: Path, account: FakeAccount
) -> None:
    write_config(tmp_path)
    code, _, err = cli("limits", "apply")
    assert code == 2
    assert err.strip() == (
        "error: limits apply would change 2 key(s) at OpenRouter: add --yes to confirm "
        "(stdin is not a terminal)"
    )
    assert account.keys[0].limit == Decimal(40)


def test_apply_makes_openrouter_match_one_patch_per_changed_key(
    cli: Cli, tmp_path: Path, account: FakeAccount, fake: FakeOpenRouter, factory: Any
) -> None:
    write_config(tmp_path)
    code, out, err = cli("limits", "apply", "--yes")
    assert (code, err) == (0, "")
    assert 'changed key "ci-main" of account "production": $40.00 monthly → $25.00 daily' in out
    assert out.splitlines()[-1] == "2 changed, 0 failed, 1 already as declared"
    ci, bot = account.keys[0], account.keys[2]
    assert (ci.limit, ci.limit_reset) == (Decimal(25), "daily")
    assert (bot.limit, bot.limit_reset, bot.include_byok_in_limit) == (
        Decimal(100),
        "monthly",
        True,
    )
    patched = [r for r in requests_of(fake) if r.startswith("/keys/")]
    assert len(patched) == 2 and len(requests_of(fake)) == 3 + 2  # the listing, then 2 PATCHes
    with factory() as session:
        done = store.history(session)
    assert [(a.source, a.status, a.key_name) for a in done] == [
        ("limits", "sent", "ci-main"),
        ("limits", "sent", "prod-bot"),
    ]
    assert done[0].before["limit"] == Decimal(40) and done[0].after["limit"] == Decimal(25)

    code, out, _ = cli("limits", "apply", "--yes")
    assert (code, out.strip()) == (0, "nothing to change: 3 key(s) already as declared")
    assert cli("limits", "plan", "--check")[0] == 0


def test_a_refused_apply_exits_1_and_is_recorded_failed(
    cli: Cli, tmp_path: Path, account: FakeAccount, fake: FakeOpenRouter, factory: Any
) -> None:
    write_config(tmp_path)
    fake.fail_changes(Fault(status=403))
    code, out, _ = cli("limits", "apply", "--yes")
    assert code == 1
    assert "failed" in out and "change_refused" in out
    with factory() as session:
        assert {a.status for a in store.history(session)} == {"failed"}
    assert len([r for r in requests_of(fake) if r.startswith("/keys/")]) == 2  # never retried


def test_a_table_naming_a_management_key_or_two_tables_one_key_exit_2(
    cli: Cli, tmp_path: Path, account: FakeAccount
) -> None:
    account.keys.append(
        FakeAccountKey(hash=key_hash(MANAGEMENT), name="ci-admin", label="sk-or-v1-adm...000")
    )
    write_config(tmp_path)
    code, _, err = cli("limits", "plan")
    assert code == 2
    assert "matches key 'ci-admin' of account 'production', a registered management key" in err
    account.keys.pop()

    write_config(tmp_path, LIMITS + '\n[[limits]]\nkeys = ["*-main"]\nlimit = 1\nreset = "none"\n')
    code, _, err = cli("limits", "plan")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "[[limits]] #1 (keys 'ci-*') and [[limits]] #3 (keys '*-main') both match" in err


def test_without_limits_tables_plan_says_where_to_read(cli: Cli, account: FakeAccount) -> None:
    code, _, err = cli("limits", "plan")
    assert (code, err.strip()) == (2, "error: no [[limits]] tables configured: see docs/guards.md")


def test_undo_puts_the_key_back_once_and_refuses_a_changed_key(
    cli: Cli, tmp_path: Path, account: FakeAccount, fake: FakeOpenRouter, factory: Any
) -> None:
    write_config(tmp_path)
    assert cli("limits", "apply", "--yes")[0] == 0
    code, out, err = cli("guards", "undo", "1")
    assert (code, err) == (0, "")
    assert out.strip() == (
        'undid guard action 1: key "ci-main" of account "production" is $40.00 monthly again'
    )
    assert (account.keys[0].limit, account.keys[0].limit_reset) == (Decimal(40), "monthly")
    code, _, err = cli("guards", "undo", "1")
    assert code == 2 and "already undone" in err

    account.keys[2].limit = Decimal(7)  # a person changed the bots' key since
    code, _, err = cli("guards", "undo", "2")
    assert code == 1
    assert "changed since guard action 2" in err and "by hand on OpenRouter" in err
    assert account.keys[2].limit == Decimal(7)
    assert cli("guards", "undo", "99")[0] == 2


def test_history_and_list_show_the_actions(cli: Cli, tmp_path: Path, account: FakeAccount) -> None:
    write_config(tmp_path)
    assert cli("guards", "history")[1].strip() == "no guard action yet"
    cli("limits", "apply", "--yes")
    code, out, _ = cli("guards", "history", "--json")
    assert code == 0
    items = json.loads(out)
    assert [(i["id"], i["key_name"], i["status"]) for i in items] == [
        (1, "ci-main", "sent"),
        (2, "prod-bot", "sent"),
    ]
    assert items[0]["wanted"] == {"limit": "25", "limit_reset": "daily"}
    code, out, _ = cli("guards", "list")
    assert code == 0
    assert out.splitlines()[0] == "mode: dry-run; apply_limits: False"
    assert "in force: 2 action(s) sent and not undone" in out
    assert MANAGEMENT not in out


def test_account_keys_shows_today_the_limit_left_and_the_last_guard_action(
    cli: Cli, tmp_path: Path, account: FakeAccount
) -> None:
    account.keys[0].spend_today = Decimal("3.5")
    write_config(tmp_path)
    assert cli("sync")[0] == 0 and cli("poll")[0] == 0
    cli("limits", "apply", "--yes")
    assert cli("poll")[0] == 0
    code, out, _ = cli("account-keys", "--json")
    assert code == 0
    by_name = {k["name"]: k for k in json.loads(out)}
    ci = by_name["ci-main"]
    assert (ci["today"], ci["limit"], ci["limit_reset"], ci["limit_remaining"]) == (
        "3.500000000",
        "25.000000000",
        "daily",
        "21.500000000",
    )
    assert ci["as_of"] is not None
    assert {k: ci["last_guard_action"][k] for k in ("id", "action", "status")} == {
        "id": 1,
        "action": "limit",
        "status": "sent",
    }
    assert by_name["other"]["last_guard_action"] is None
    code, out, _ = cli("account-keys")
    row = next(line for line in out.splitlines() if "ci-main" in line)
    assert "$25.00 daily" in row and "#1 limit sent" in row and "$3.50" in row


CONFLICT = LIMITS + '\n[[limits]]\nkeys = ["*-main"]\nlimit = 1\nreset = "none"\n'


def test_the_daemon_refuses_to_start_on_tables_that_match_one_key_twice(
    cli: Cli, tmp_path: Path, account: FakeAccount
) -> None:
    write_config(tmp_path, CONFLICT)
    assert cli("sync")[0] == 0  # the catalogue: the keys are known
    code, _, err = cli("run", env={"OPENROUTER_WATCHER_HTTP_LISTEN": ""})
    assert code == 2
    assert "both match key 'ci-main' of account 'production'" in err.splitlines()[-1]


def test_a_poll_with_such_tables_still_evaluates_its_alerts_and_applies_nothing(
    cli: Cli, tmp_path: Path, account: FakeAccount, fake: FakeOpenRouter
) -> None:
    write_config(tmp_path, '[guards]\nmode = "enforce"\napply_limits = true\n' + CONFLICT)
    code, out, err = cli("poll", "--json", env={"OPENROUTER_WATCHER_LOGGING_LEVEL": "ERROR"})
    assert code == 0, err
    assert json.loads(out)["guard_actions"]["planned"] == 0
    assert "limits_not_applied" in err
    assert [r for r in requests_of(fake) if r.startswith("/keys/")] == []


def test_no_secret_in_any_guard_output_log_or_the_database(
    cli: Cli, tmp_path: Path, account: FakeAccount, sqlite_url: str
) -> None:
    hook = "json://127.0.0.1:9/hook-Secret-Token-0123456789abcdef"
    write_config(
        tmp_path,
        '[guards]\nmode = "enforce"\napply_limits = true\n' + LIMITS
        + f'\n[[channels]]\nname = "ops"\nurl = "{hook}"\n'
        + '\n[[alerts]]\nname = "r"\nmetric = "spend_today"\nabove = 0\nper = "key"\n'
        + 'keys = ["ci-*"]\nact = "disable"\nnotify = ["ops"]\n',
    )  # fmt: skip
    loud = {"OPENROUTER_WATCHER_LOGGING_LEVEL": "DEBUG", "OPENROUTER_WATCHER_DATABASE_ECHO": "true"}
    said = []
    for argv in (
        ("sync",),
        ("poll", "--json"),
        ("limits", "plan", "--json"),
        ("limits", "apply", "--yes", "--json"),
        ("guards", "history", "--json"),
        ("guards", "list", "--json"),
        ("guards", "undo", "1"),
        ("account-keys", "--json"),
        ("status", "--json"),
    ):
        _code, out, err = cli(*argv, env=loud)
        said.append(out + err)
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    for secret in (MANAGEMENT, "hook-Secret-Token-0123456789abcdef"):
        assert all(secret not in text for text in said)
        assert secret.encode() not in stored
