"""The guards' configuration: ``[guards]``, ``act``/``restore`` on ``[[alerts]]`` and the
``[[limits]]`` tables; each mistake one line of the one configuration error (exit 2)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from worker.config import load_settings
from worker.config.limits import LimitTable, table_for
from worker.core.errors import ConfigError

CHANNEL = '[[channels]]\nname = "ops"\nurl = "json://localhost/hook"\n'


def _load(tmp_path: Path, text: str, **env: str) -> object:
    path = tmp_path / "config.toml"
    path.write_text(CHANNEL + text)
    return load_settings(path, env=env)


def _problem(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.exit_code == 2
    return message


ACTING = """
[[alerts]]
name = "runaway"
metric = "spend_today"
above = [20, 50]
per = "key"
keys = ["ci-*"]
notify = ["ops"]
"""


def test_guards_default_to_dry_run_and_report_drift_only(tmp_path: Path) -> None:
    settings = load_settings(None, env={})
    assert (settings.guards.mode, settings.guards.enforce) == ("dry-run", False)
    assert settings.guards.apply_limits is False
    assert settings.limits == ()


def test_enforce_and_apply_limits_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        env={
            "OPENROUTER_WATCHER_GUARDS_MODE": "enforce",
            "OPENROUTER_WATCHER_GUARDS_APPLY_LIMITS": "true",
        },
    )
    assert settings.guards.enforce and settings.guards.apply_limits


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    assert "must be one of dry-run, enforce" in _problem(tmp_path, '[guards]\nmode = "on"\n')


def test_a_rule_acts_at_its_last_threshold_and_restores_next_period(tmp_path: Path) -> None:
    settings = _load(tmp_path, ACTING + 'act = "cap"\n')
    (rule,) = settings.alerts  # type: ignore[attr-defined]
    assert (rule.act, rule.restore, rule.acting_threshold) == ("cap", "next_period", Decimal(50))
    below = _load(
        tmp_path,
        ACTING.replace("spend_today", "spend_month") + 'act = "disable"\nrestore = "manual"\n',
    )
    assert below.alerts[0].restore == "manual"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ('act = "delete"\n', 'act must be "disable" or "cap"'),
        ('act = "cap"\nrestore = "never"\n', 'restore must be "next_period" or "manual"'),
        ('restore = "manual"\n', "restore goes with act"),
    ],
)
def test_a_wrong_act_or_restore_is_one_line(tmp_path: Path, change: str, needle: str) -> None:
    assert needle in _problem(tmp_path, ACTING + change)


def test_act_on_a_rule_per_account_is_refused(tmp_path: Path) -> None:
    text = ACTING.replace('per = "key"\nkeys = ["ci-*"]\n', 'accounts = ["production"]\n')
    assert 'act works on one key at a time: set per = "key"' in _problem(
        tmp_path, text + 'act = "disable"\n'
    )


def test_act_on_a_crossing_metric_is_refused(tmp_path: Path) -> None:
    text = ACTING.replace("spend_today", "limit_used_percent")
    assert "act needs a metric counted per day or month" in _problem(
        tmp_path, text + 'act = "cap"\n'
    )


def test_a_rule_that_acts_names_its_keys_or_accounts(tmp_path: Path) -> None:
    text = ACTING.replace('keys = ["ci-*"]\n', "")
    assert "must name its keys or accounts" in _problem(tmp_path, text + 'act = "disable"\n')


LIMIT = """
[[limits]]
keys = ["ci-*", "batch"]
accounts = ["production"]
limit = 25.5
reset = "daily"
"""


def test_a_limits_table_is_parsed(tmp_path: Path) -> None:
    settings = _load(tmp_path, LIMIT + "include_byok = true\n")
    (table,) = settings.limits  # type: ignore[attr-defined]
    assert (table.keys, table.accounts, table.limit, table.reset) == (
        ("ci-*", "batch"),
        ("production",),
        Decimal("25.5"),
        "daily",
    )
    assert table.wanted() == {
        "limit": Decimal("25.5"),
        "limit_reset": "daily",
        "include_byok_in_limit": True,
    }
    assert _load(tmp_path, LIMIT.replace('"daily"', '"none"')).limits[0].reset is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (("limit = 25.5", "limit = 0"), "limit must be more than 0"),
        (("limit = 25.5", "limit = -3"), "limit must be more than 0"),
        (("limit = 25.5", 'limit = "25"'), "limit must be a number of USD"),
        (('reset = "daily"', 'reset = "hourly"'), 'reset must be "daily", "weekly", "monthly"'),
        (('keys = ["ci-*", "batch"]', "keys = []"), "keys must name keys or globs"),
        (('reset = "daily"', 'reset = "daily"\nowner = "me"'), "unknown key 'owner'"),
    ],
)
def test_a_wrong_limits_table_is_one_line(
    tmp_path: Path, change: tuple[str, str], needle: str
) -> None:
    assert needle in _problem(tmp_path, LIMIT.replace(*change))


def test_two_tables_naming_the_same_glob_are_refused_at_load(tmp_path: Path) -> None:
    message = _problem(tmp_path, LIMIT + LIMIT.replace("25.5", "10"))
    assert "[[limits]] #1" in message and "[[limits]] #2" in message and "'batch'" in message


def _table(label: str, *keys: str, accounts: tuple[str, ...] = ()) -> LimitTable:
    return LimitTable(label, keys, accounts, Decimal(10), "daily", None)


def test_a_key_that_two_tables_match_is_an_error_naming_both() -> None:
    tables = [_table("[[limits]] #1", "ci-*"), _table("[[limits]] #2", "*-nightly")]
    assert table_for(tables, "production", "batch") is None
    assert table_for(tables, "production", "ci-main") is tables[0]
    with pytest.raises(ConfigError, match=r"#1.*and.*#2.*'ci-nightly'.*'production'"):
        table_for(tables, "production", "ci-nightly")


def test_a_table_of_some_accounts_leaves_the_others_alone() -> None:
    tables = [_table("[[limits]] #1", "ci-*", accounts=("staging",))]
    assert table_for(tables, "production", "ci-main") is None
    assert table_for(tables, "staging", "ci-main") is tables[0]
    assert not tables[0].matches("staging", "CI-MAIN")  # globs are case-sensitive
