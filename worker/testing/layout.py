"""The code's layout, read from the source: the import graph, its circles, and the module map
README shows (``python -m worker.testing.layout --write`` regenerates it).

Every import counts, a function's or ``if TYPE_CHECKING:``'s included, and importing
``worker.a.b`` imports the package ``worker.a`` too: a circle of any of them is a circle a
reader has to untangle. The map lists the top-level packages in the order data flows, each
with the first paragraph of its ``__init__`` docstring (two lines at most) and the packages
it uses, computed from the imports.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "worker"
README = ROOT / "README.md"
MAP_HEADING = "## How the code is laid out"
# The top level in the order data flows (README's diagram), then what serves all of them.
ORDER = (
    "config",
    "openrouter",
    "sync",
    "live",
    "store",
    "reports",
    "alerts",
    "vault",
    "daemon",
    "commands",
    "core",
    "testing",
)
ENTRY_MODULES = ("__init__.py", "__main__.py", "cli.py", "demo.py")


def module_files(base: Path, package: str) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``base`` (``package`` its dotted name)."""
    found = {}
    for path in sorted(base.rglob("*.py")):
        relative = path.relative_to(base)
        if "migrations" in relative.parts or "__pycache__" in relative.parts:
            continue
        parts = [package, *relative.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported_names(path: Path, name: str, is_package: bool) -> Iterable[str]:
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def import_graph(
    modules: dict[str, Path], local: dict[str, str] | None = None
) -> dict[str, set[str]]:
    """``{module: modules it imports}`` among ``modules``. ``local`` maps bare names to dotted
    ones (scripts run from their own directory import their neighbours as ``import run``)."""
    local = local or {}

    def known(name: str) -> str | None:
        head, _, rest = name.partition(".")
        if head in local:
            name = local[head] + (f".{rest}" if rest else "")
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in _imported_names(path, name, path.name == "__init__.py"):
            target = known(imported)
            if target is None or target == name:
                continue
            graph[name].add(target)
            parent = target.rpartition(".")[0]
            while parent:  # importing a.b.c runs a/__init__ and a/b/__init__ first
                if parent in modules and parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def package_graph(graph: dict[str, set[str]], prefix: str = "worker") -> dict[str, set[str]]:
    """The module graph folded into top-level packages (``worker.sync.run`` → ``sync``)."""

    def top(name: str) -> str:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 and parts[0] == prefix else ""

    folded: dict[str, set[str]] = {}
    for name, targets in graph.items():
        source = top(name)
        if source:
            folded.setdefault(source, set())
            folded[source] |= {top(t) for t in targets if top(t) and top(t) != source}
    return folded


@dataclass(frozen=True)
class Package:
    """One top-level package as the map shows it."""

    name: str
    summary: str  # the first paragraph of its __init__ docstring, on one line
    summary_lines: int  # how many lines that paragraph has in the source
    modules: tuple[str, ...]  # its modules and subpackages, as listed in the map
    uses: tuple[str, ...]  # the top-level packages it imports, in ORDER


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _summary(init: Path) -> tuple[str, int]:
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    first = doc.strip().split("\n\n", 1)[0]
    # reStructuredText to Markdown: ``code`` and :role:`target` become `code`.
    text = _ROLE.sub(r"`\1`", " ".join(first.split())).replace("``", "`")
    return text, len(first.splitlines())


def worker_graph() -> dict[str, set[str]]:
    """The import graph of ``worker/``."""
    return import_graph(module_files(WORKER, "worker"))


def packages() -> list[Package]:
    """The top-level packages of ``worker/`` (in :data:`ORDER`, then any other, by name)."""
    graph = package_graph(worker_graph())
    names = sorted(
        (p.name for p in WORKER.iterdir() if (p / "__init__.py").is_file()),
        key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n),
    )
    found = []
    for name in names:
        base = WORKER / name
        summary, lines = _summary(base / "__init__.py")
        members = sorted(
            p.name + ("/" if p.is_dir() else "")
            for p in base.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py")
            or (p.is_dir() and (p / "__init__.py").is_file())
        )
        uses = sorted(
            graph.get(name, set()), key=lambda n: (ORDER.index(n) if n in ORDER else 99, n)
        )
        found.append(Package(name, summary, lines, tuple(members), tuple(uses)))
    return found


def module_map() -> str:
    """The README's table: one row per top-level package, and the entry modules."""
    lines = [
        "| package | what it is for | modules | uses |",
        "| --- | --- | --- | --- |",
    ]
    for package in packages():
        modules = ", ".join(f"`{m}`" for m in package.modules)
        uses = ", ".join(f"`{u}/`" for u in package.uses) or "-"
        lines.append(f"| `{package.name}/` | {package.summary} | {modules} | {uses} |")
    entries = ", ".join(f"`{m}`" for m in ENTRY_MODULES if (WORKER / m).is_file())
    lines.append(
        f"| {entries} | the package, `python -m worker`, the console script's `main()`, "
        "and `make demo` | | |"
    )
    return "\n".join(lines) + "\n"


def readme_map(text: str) -> str:
    """The module map as README holds it (the first table under :data:`MAP_HEADING`)."""
    section = text.split(MAP_HEADING, 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    return "\n".join(table) + "\n"


def write_readme() -> bool:
    """Replace README's module map with :func:`module_map`; True if it changed."""
    text = README.read_text()
    old = readme_map(text)
    new = module_map()
    if old == new:
        return False
    README.write_text(text.replace(old, new, 1))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.testing.layout", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite README's module map")
    args = parser.parse_args(argv)
    if args.write:
        print("README.md updated" if write_readme() else "README.md is up to date")
    else:
        print(module_map(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
