"""One module per group of commands; each exposes ``register(subparsers)``.

Handlers take ``(ctx: worker.cli.Context, args: argparse.Namespace)`` and return an exit code.
They parse and print; the work itself lives in the library modules (store, sync, crypto, …).
"""

from __future__ import annotations

import argparse
import importlib

# Modules are imported lazily in register_all so a broken optional piece cannot stop `--help`.
COMMAND_MODULES: tuple[str, ...] = (
    "accounts",
    "catalogue",
    "report",
    "sync",
    "daemon",
    "live",
    "alerts",
    "completion",
)


def register_all(subparsers: argparse._SubParsersAction) -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"worker.commands.{name}")
        module.register(subparsers)
