"""The layout README promises: its module map true to the packages and their imports, no
import circle anywhere, small modules, and data flowing one way."""

from __future__ import annotations

import functools

import pytest

from worker.testing import layout

BENCH = layout.ROOT / "bench"
MAX_LINES = 450

# Read once for the whole module: the parametrised tests below ask again and again.
_graph = functools.cache(layout.worker_graph)
_packages = functools.cache(layout.packages)


def test_the_readme_module_map_is_the_one_generated_from_the_packages() -> None:
    assert layout.readme_map(layout.README.read_text()) == layout.module_map()


def test_the_top_level_holds_packages_and_the_entry_modules_only() -> None:
    loose = {
        path.name
        for path in layout.WORKER.iterdir()
        if path.suffix == ".py" and path.name not in layout.ENTRY_MODULES
    }
    assert loose == set()


@pytest.mark.parametrize("package", [p.name for p in layout.packages()])
def test_every_package_says_in_two_lines_what_it_is_for(package: str) -> None:
    found = next(p for p in _packages() if p.name == package)
    assert found.summary and found.summary_lines <= 2


def test_no_import_circle_among_the_workers_modules() -> None:
    assert layout.cycles(_graph()) == []


def test_no_import_circle_among_the_top_level_packages() -> None:
    assert layout.cycles(layout.package_graph(_graph())) == []


def test_no_import_circle_in_the_benchmark() -> None:
    modules = layout.module_files(BENCH, "bench")
    local = {name.rpartition(".")[2]: name for name in modules}  # run as scripts: `import run`
    assert layout.cycles(layout.import_graph(modules, local)) == []


def test_the_circle_finder_finds_a_circle() -> None:
    assert layout.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_longer_than_the_limit() -> None:
    files = [*layout.WORKER.rglob("*.py"), *BENCH.rglob("*.py")]
    long = {
        str(path.relative_to(layout.ROOT)): lines
        for path in files
        if "migrations" not in path.parts
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def _imports(package: str) -> set[str]:
    """Every worker module imported by the modules of ``package`` (``worker.…``)."""
    return {
        target
        for name, targets in _graph().items()
        if name == package or name.startswith(package + ".")
        for target in targets
    }


@pytest.mark.parametrize(
    ("package", "never"),
    [
        # The shared basics depend on nothing of the worker.
        ("worker.core", ("worker.config", "worker.store", "worker.openrouter", "worker.sync")),
        # Configuration knows nothing of what it configures.
        ("worker.config", ("worker.store", "worker.openrouter", "worker.sync", "worker.alerts")),
        # The client knows nothing of storage or orchestration.
        ("worker.openrouter", ("worker.sync", "worker.store", "worker.live", "worker.daemon")),
        # The store runs SQL for the others; it never calls OpenRouter (it may keep what an
        # answer said: the parsed types) or the sync.
        (
            "worker.store",
            (
                "worker.sync",
                "worker.openrouter.client",
                "worker.openrouter.transport",
                "worker.commands",
                "worker.cli",
                "worker.daemon",
            ),
        ),
        # Library code never reaches back into the command line or the daemon.
        ("worker.sync", ("worker.cli", "worker.commands", "worker.daemon")),
        ("worker.live", ("worker.cli", "worker.commands", "worker.daemon", "worker.sync")),
        ("worker.reports", ("worker.cli", "worker.commands", "worker.sync", "worker.daemon")),
        ("worker.alerts", ("worker.cli", "worker.commands", "worker.sync", "worker.live")),
        ("worker.commands", ("worker.cli",)),
    ],
)
def test_data_flows_one_way(package: str, never: tuple[str, ...]) -> None:
    wrong = {
        name
        for name in _imports(package)
        for banned in never
        if name == banned or name.startswith(banned + ".")
    }
    assert wrong == set()
