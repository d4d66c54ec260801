"""Configuration: a TOML file and the environment → one frozen, validated :class:`Settings`,
its ``[[channels]]``, ``[[alerts]]`` and ``[[limits]]`` tables included.

``sections`` (every option of ``[database]`` … ``[ha]``, with its default, documentation
and check), ``load`` (the file's precedence, the environment overrides, one error naming every
problem), ``rules`` (channels and alert rules), ``limits`` (the declared spend limits). The
names below are the package's public face: ``from worker.config import Settings``.
"""

from worker.config.load import (
    SECTIONS,
    TABLE_ARRAYS,
    Settings,
    describe_options,
    env_name,
    find_config_file,
    load_settings,
)
from worker.config.sections import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    DEFAULT_DATABASE_URL,
    ENV_PREFIX,
    DatabaseSettings,
    DigestSettings,
    EncryptionSettings,
    GuardSettings,
    HaSettings,
    HttpSettings,
    LiveSettings,
    LoggingSettings,
    OpenRouterSettings,
    ScheduleSettings,
    SyncSettings,
    parse_listen,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_DATABASE_URL",
    "ENV_PREFIX",
    "SECTIONS",
    "TABLE_ARRAYS",
    "DatabaseSettings",
    "DigestSettings",
    "EncryptionSettings",
    "GuardSettings",
    "HaSettings",
    "HttpSettings",
    "LiveSettings",
    "LoggingSettings",
    "OpenRouterSettings",
    "ScheduleSettings",
    "Settings",
    "SyncSettings",
    "describe_options",
    "env_name",
    "find_config_file",
    "load_settings",
    "parse_listen",
]
