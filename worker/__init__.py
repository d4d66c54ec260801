"""openrouter-watcher: a permanent, exact history of OpenRouter spend per key, day and model."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # The version is read from the installed metadata when asked for: importlib.metadata costs
    # more to import than most commands take to run, and only --version and the HTTP client's
    # User-Agent need it.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("openrouter-watcher")
        except PackageNotFoundError:  # pragma: no cover - a source tree without install
            return "0.0.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
