"""Configuration: file, environment overrides, precedence, and every kind of bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import DEFAULT_DATABASE_URL, describe_options, env_name, load_settings
from worker.core.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_when_there_is_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={})
    assert settings.database.url == DEFAULT_DATABASE_URL
    assert settings.sync.concurrency == 8
    assert settings.openrouter.max_attempts == 5
    assert settings.schedule.cron == "20 0 * * *"
    assert settings.source == "built-in defaults"


def test_file_values_are_read_and_typed(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.toml",
        """
[database]
url = "sqlite:///x.db"
[openrouter]
read_timeout = 5
[encryption]
previous_keys = ["a", "b"]
[logging]
level = "debug"
""",
    )
    settings = load_settings(path, env={})
    assert settings.database.url == "sqlite:///x.db"
    assert settings.openrouter.read_timeout == 5.0
    assert isinstance(settings.openrouter.read_timeout, float)
    assert settings.encryption.previous_keys == ("a", "b")
    assert settings.logging.level == "DEBUG"
    assert settings.source == str(path)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.toml", '[sync]\nconcurrency = 4\n[openrouter]\nbase_url = "http://a"\n'
    )
    env = {
        "OPENROUTER_WATCHER_SYNC_CONCURRENCY": "16",
        "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1",
        "OPENROUTER_WATCHER_SCHEDULE_RUN_AT_STARTUP": "no",
        "OPENROUTER_WATCHER_ENCRYPTION_PREVIOUS_KEYS": "k1, k2",
    }
    settings = load_settings(path, env=env)
    assert settings.sync.concurrency == 16
    assert settings.openrouter.base_url == "http://127.0.0.1:9/api/v1"
    assert settings.schedule.run_at_startup is False
    assert settings.encryption.previous_keys == ("k1", "k2")


def test_file_precedence_flag_then_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "config.toml", "[sync]\nconcurrency = 2\n")
    env_file = _write(tmp_path / "env.toml", "[sync]\nconcurrency = 3\n")
    flag_file = _write(tmp_path / "flag.toml", "[sync]\nconcurrency = 4\n")
    env = {"OPENROUTER_WATCHER_CONFIG": str(env_file)}
    assert load_settings(None, env={}).sync.concurrency == 2
    assert load_settings(None, env=env).sync.concurrency == 3
    assert load_settings(flag_file, env=env).sync.concurrency == 4


def test_env_name_rule_is_uniform() -> None:
    assert env_name("database", "url") == "OPENROUTER_WATCHER_DATABASE_URL"
    assert env_name("encryption", "key") == "OPENROUTER_WATCHER_ENCRYPTION_KEY"
    assert env_name("openrouter", "base_url") == "OPENROUTER_WATCHER_OPENROUTER_BASE_URL"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[sync]\nconcurrency = "many"\n', r"\[sync\] concurrency in .* must be a whole number"),
        ("[sync]\nconcurrency = 0\n", r"\[sync\] concurrency in .* must be at least 1"),
        ("[sync]\nconcurrency = true\n", r"must be a whole number"),
        ("[sync]\nspeed = 1\n", r"unknown key \[sync\] speed in .*known: concurrency"),
        ("[nope]\nx = 1\n", r"unknown section \[nope\]"),
        ('[logging]\nformat = "xml"\n', r"must be one of auto, json, console"),
        ('[database]\nurl = "mysql://x"\n', r"must be a sqlite:/// or postgresql"),
        ('[database]\nurl = "postgresql+psycopg2://h/db"\n', r"psycopg 3 driver"),
        ('[schedule]\ncron = "every day"\n', r"not a valid crontab"),
        ('[openrouter]\nbase_url = "ftp://x"\n', r"must start with http"),
        ('[encryption]\nprevious_keys = "k"\n', r"must be a list of strings"),
        ("[sync\n", r"is not valid TOML"),
        (
            "[ha]\nheartbeat_seconds = 30\ntakeover_seconds = 30\n",
            r"\[ha\] heartbeat_seconds \(30\) must be less than takeover_seconds \(30\)",
        ),
        ("[ha]\nheartbeat_seconds = 0.1\n", r"\[ha\] heartbeat_seconds in .* must be at least 0.5"),
    ],
)
def test_bad_file_values_name_the_key_and_file(tmp_path: Path, toml: str, message: str) -> None:
    path = _write(tmp_path / "bad.toml", toml)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(path, env={})
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "OPENROUTER_WATCHER_SYNC_CONCURRENCY",
            "x",
            "environment variable OPENROUTER_WATCHER_SYNC_CONCURRENCY must be a whole number",
        ),
        ("OPENROUTER_WATCHER_OPENROUTER_READ_TIMEOUT", "soon", "must be a number"),
        ("OPENROUTER_WATCHER_SCHEDULE_RUN_AT_STARTUP", "maybe", "must be true or false"),
        ("OPENROUTER_WATCHER_SYNC_CONCURRENCY", "1000", "must be at most 256"),
        (
            "OPENROUTER_WATCHER_SYNC_SPEED",
            "1",
            "unknown environment variable OPENROUTER_WATCHER_SYNC_SPEED",
        ),
    ],
)
def test_bad_env_values_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_settings(None, env={var: value})


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.toml", "[sync]\nconcurrency = 0\n[logging]\nlevel = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "concurrency" in str(info.value) and "level" in str(info.value)


def test_encryption_values_are_never_echoed(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.toml", "[encryption]\nkey = 12345678901\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "12345678901" not in str(info.value)


def test_ha_defaults_beat_well_inside_the_takeover(tmp_path: Path) -> None:
    ha = load_settings(_write(tmp_path / "c.toml", '[ha]\ninstance_name = "host-a"\n'), env={}).ha
    assert (ha.instance_name, ha.heartbeat_seconds, ha.takeover_seconds) == ("host-a", 10.0, 30.0)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})


def test_settings_are_frozen() -> None:
    settings = load_settings(None, env={})
    with pytest.raises(AttributeError):
        settings.sync.concurrency = 3  # type: ignore[misc]
    assert settings.replace("sync", concurrency=3).sync.concurrency == 3


def test_example_file_documents_every_option() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    text = example.read_text()
    for section, key, _default, _doc in describe_options():
        assert f"[{section}]" in text
        assert f"\n{key} =" in text or f"\n# {key} =" in text, f"{section}.{key} undocumented"
    # and the example itself is valid
    load_settings(example, env={})
