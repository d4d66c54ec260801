"""The command line's commands, one module per group; each exposes ``register(subparsers)``
and handlers that parse and print, while the work lives in the library packages.

Handlers take ``(ctx: worker.commands.context.Context, args: argparse.Namespace)`` and
return an exit code.
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
    "guards",
    "completion",
)


def register_all(subparsers: argparse._SubParsersAction) -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"worker.commands.{name}")
        module.register(subparsers)
