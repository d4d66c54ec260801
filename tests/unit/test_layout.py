"""The layout README promises: every module in its module map, and data flowing one way."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "worker"


def _map_entries() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {m.group(1) for cell in first_cells for m in re.finditer(r"`([a-z_]+(?:\.py|/))`", cell)}


def _top_level() -> set[str]:
    names = set()
    for path in WORKER.iterdir():
        if path.name.startswith("_") or path.name == "migrations":
            continue  # __init__/__main__; migrations is the alembic/ directory, shipped
        if path.suffix == ".py":
            names.add(path.name)
        elif path.is_dir() and (path / "__init__.py").exists():
            names.add(path.name + "/")
    return names


def test_the_readme_module_map_names_every_module_and_only_real_ones() -> None:
    assert _map_entries() == _top_level()


def _imports(package: str) -> set[str]:
    """Every worker.* module imported by the modules of ``package`` (a module or a package)."""
    path = WORKER / package
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("worker.")}


@pytest.mark.parametrize(
    ("package", "never"),
    [
        # The client knows nothing of storage or orchestration.
        ("openrouter", ("worker.sync", "worker.store", "worker.db", "worker.models")),
        # The store runs SQL for the sync; it never calls OpenRouter (it may keep what an
        # answer said: the parsed types) or the sync.
        (
            "store",
            (
                "worker.sync",
                "worker.openrouter.client",
                "worker.openrouter.transport",
                "worker.openrouter",  # the package itself hands out the client
                "worker.commands",
                "worker.cli",
            ),
        ),
        ("days", ("worker.sync", "worker.store", "worker.openrouter", "worker.db")),
        # Library code never reaches back into the command line.
        ("sync", ("worker.cli", "worker.commands")),
        ("report", ("worker.cli", "worker.commands", "worker.sync")),
    ],
)
def test_data_flows_one_way(package: str, never: tuple[str, ...]) -> None:
    wrong = {
        name
        for name in _imports(package)
        for banned in never
        if name == banned or (name.startswith(banned + ".") and banned != "worker.openrouter")
    }
    assert wrong == set()
