"""openrouter-watcher: a permanent, exact history of OpenRouter spend per key, day and model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("openrouter-watcher")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
