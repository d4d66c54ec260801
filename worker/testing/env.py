"""Environments for running the worker as a subprocess in tests, the demo and the benchmark."""

from __future__ import annotations

import os


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the worker's own settings, plus ``extra``.

    Drops every ``OPENROUTER_WATCHER_*`` variable and ``CREDENTIALS_DIRECTORY`` so a child
    process sees only the configuration the caller chose (the loader rejects unknown
    ``OPENROUTER_WATCHER_*`` names, and a stray master key would hide a missing one).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OPENROUTER_WATCHER_") and k != "CREDENTIALS_DIRECTORY"
    }
    env.update(extra)
    return env
