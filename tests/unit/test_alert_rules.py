"""[[channels]], [[alerts]], [live] and [digest]: the shape the docs show, and every mistake
reported in one error naming the rule or channel and the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from worker.config import load_settings
from worker.core.errors import ConfigError
from worker.core.logs import mask_text
from worker.store.alerts import subject_key_id

# The shape the issue and the docs give, verbatim.
DOCS = """
[[channels]]
name = "ops"
url = "slack://TokenA/TokenB/TokenC"   # or url_env = "VAR", or url_file = "/path"

[[alerts]]
name = "daily-spend"
metric = "spend_today"        # spend_month, limit_used_percent, balance, runway_days, spike, sync_failing
above = [20, 40]              # or below = 15; one number or a list
per = "key"                   # "key" (each OpenRouter key) or "account"; default "account"
accounts = ["acct-a"]         # optional scope: registered account names; keys = [...], users = [...]
notify = ["ops"]
"""  # noqa: E501 - verbatim, comments included


def load(tmp_path: Path, text: str, **env: str) -> object:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(path, env=env)


def problems(tmp_path: Path, text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **env)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    return message


def test_the_documented_shape_parses(tmp_path: Path) -> None:
    settings = load(tmp_path, DOCS)
    [channel] = settings.channels  # type: ignore[attr-defined]
    [rule] = settings.alerts  # type: ignore[attr-defined]
    assert (channel.name, channel.scheme, channel.origin) == ("ops", "slack", "url")
    assert "Token" not in repr(channel)
    assert (rule.metric, rule.direction, rule.thresholds, rule.per) == (
        "spend_today",
        "above",
        (Decimal(20), Decimal(40)),
        "key",
    )
    assert (rule.accounts, rule.notify) == (("acct-a",), ("ops",))


def test_one_threshold_and_the_default_per(tmp_path: Path) -> None:
    text = DOCS.replace("above = [20, 40]", "below = 15.5").replace('per = "key"', "")
    [rule] = load(tmp_path, text).alerts  # type: ignore[attr-defined]
    assert (rule.direction, rule.thresholds, rule.per) == ("below", (Decimal("15.5"),), "account")
    metric_only_per_key = DOCS.replace("spend_today", "limit_used_percent").replace(
        'per = "key"', ""
    )
    assert load(tmp_path, metric_only_per_key).alerts[0].per == "key"  # type: ignore[attr-defined]


def test_channel_urls_from_the_environment_or_a_private_file_are_masked(tmp_path: Path) -> None:
    secret_file = tmp_path / "hook.url"
    secret_file.write_text("json://hooks.example.com/Webhook-Secret-File-123456\n")
    secret_file.chmod(0o600)
    text = f"""
[[channels]]
name = "env"
url_env = "OPENROUTER_WATCHER_ENV_HOOK"
[[channels]]
name = "file"
url_file = "{secret_file}"
[digest]
channels = ["file"]
"""
    env_url = "discord://1234567890/EnvWebhookTokenAbcdefghij0123456789"
    settings = load(tmp_path, text, OPENROUTER_WATCHER_ENV_HOOK=env_url)
    env_channel, file_channel = settings.channels  # type: ignore[attr-defined]
    assert (
        env_channel.url == env_url and env_channel.origin == "url_env OPENROUTER_WATCHER_ENV_HOOK"
    )
    assert file_channel.url == "json://hooks.example.com/Webhook-Secret-File-123456"
    assert settings.digest.channels == ("file",)  # type: ignore[attr-defined]
    assert mask_text(f"posting to {env_url}") == "posting to [REDACTED]"
    assert "Webhook-Secret-File" not in mask_text(
        "POST https://hooks.example.com/Webhook-Secret-File-123456"
    )

    secret_file.chmod(0o644)
    assert f"url_file {secret_file} is readable by group or others (mode 0644)" in problems(
        tmp_path, text, OPENROUTER_WATCHER_ENV_HOOK=env_url
    )
    assert "url_env names OPENROUTER_WATCHER_ENV_HOOK, which is not set or empty" in problems(
        tmp_path, text.replace('"file"]', '"env"]')
    )


def test_every_mistake_in_one_error_naming_the_rule_or_channel(tmp_path: Path) -> None:
    text = """
[[channels]]
name = "ops"
url = "slack://A/B/C"
colour = "red"

[[channels]]
name = "twice"
url = "json://a/b"
url_env = "X"

[[alerts]]
name = "a"
metric = "balance"
above = 1
below = 2
notify = ["ops"]

[[alerts]]
name = "b"
metric = "balance"
below = ["ten"]
per = "key"
notify = ["pager"]

[[alerts]]
name = "c"
metric = "spend_today"
above = 5
keys = ["bot"]
notify = "ops"
when = "always"

[digest]
channels = ["nowhere"]
"""
    message = problems(tmp_path, text)
    label = tmp_path / "config.toml"
    for expected in (
        f"[[channels]] 'ops' in {label}: unknown key 'colour'",
        f"[[channels]] 'twice' in {label}: give exactly one of url, url_env, url_file",
        f"[[alerts]] rule 'a' in {label}: give exactly one of above, below",
        f"[[alerts]] rule 'b' in {label}: below must be a number or a list of numbers",
        f"[[alerts]] rule 'b' in {label}: metric balance exists per account only: "
        'set per = "account"',
        f"[[alerts]] rule 'b' in {label}: notify names channel 'pager', which no [[channels]]",
        f"[[alerts]] rule 'c' in {label}: unknown key 'when'",
        f"[[alerts]] rule 'c' in {label}: keys = [...] chooses keys: set per = \"key\"",
        "[digest] channels names 'nowhere', which no [[channels]] defines",
    ):
        assert expected in message


def test_live_and_digest_sections_take_environment_overrides(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        DOCS,
        OPENROUTER_WATCHER_LIVE_INTERVAL_MINUTES="5",
        OPENROUTER_WATCHER_DIGEST_CHANNELS="ops",
        OPENROUTER_WATCHER_DIGEST_AT="07:30",
    )
    assert settings.live.interval_minutes == 5  # type: ignore[attr-defined]
    assert settings.digest.channels == ("ops",) and settings.digest.at == "07:30"  # type: ignore[attr-defined]
    assert "must be a UTC time of day as HH:MM" in problems(
        tmp_path, DOCS, OPENROUTER_WATCHER_DIGEST_AT="25:00"
    )


@pytest.mark.parametrize(
    ("subject", "key_id"),
    [
        ("account:7", 7),  # an account: its management key
        ("key:7:" + "ab" * 32, 7),  # a key of that account
        ("key:12", 12),  # an ordinary key polled on its own
        ("registered:3", 3),  # sync_failing
        ("all", None),  # the digest: every account, no one key
        ("account:", None),
        ("other:5", None),
    ],
)
def test_an_alert_belongs_to_the_registered_key_its_subject_names(
    subject: str, key_id: int | None
) -> None:
    assert subject_key_id(subject) == key_id
