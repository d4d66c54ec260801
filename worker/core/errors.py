"""The exception hierarchy.

Every error the worker expects carries a message a user can act on and the process exit code
it maps to: 2 for usage and configuration mistakes, 1 for failures at run time. The CLI prints
``str(error)`` as one line and exits with ``error.exit_code``; the driver's own exception, when
there is one, stays in ``__cause__`` for the logs.
"""

from __future__ import annotations

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class WatcherError(Exception):
    """openrouter-watcher failed."""

    exit_code: int = EXIT_RUNTIME

    def __init__(self, message: str | None = None) -> None:
        # The docstring is the default message: one line, however it is wrapped in the source.
        super().__init__(message or " ".join((self.__doc__ or "").split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(WatcherError):
    """The command line is wrong: see --help."""

    exit_code = EXIT_USAGE


class ConfigError(WatcherError):
    """The configuration is invalid."""

    exit_code = EXIT_USAGE


class SchemaError(WatcherError):
    """The database schema is not the one this code expects: run `make migrate`."""

    exit_code = EXIT_USAGE


# A run-time failure (exit code 1), not a configuration error: a database that starts after the
# worker, restarts or drops the connection comes back by itself, so the daemon retries and systemd
# restarts the service. Raised in one place, by the engine's error hook in worker.store.db, for
# every refused, failed or lost connection; the driver's error stays in __cause__.
class DatabaseUnavailableError(WatcherError):
    """The database cannot be reached: check [database] url and that the server is running."""


class DatabaseBusyError(WatcherError):
    """The database is locked by another writer: try again when it has finished."""


class HttpListenError(ConfigError):
    """The HTTP server cannot listen on [http] listen: choose another address or port."""


class TooManyRowsError(WatcherError):
    """One day alone has more rows than an analytics answer may hold."""


class NotFoundError(WatcherError):
    """No such object."""

    exit_code = EXIT_USAGE


class ConflictError(WatcherError):
    """That object already exists."""

    exit_code = EXIT_USAGE


class MasterKeyError(WatcherError):
    """No usable master key: set OPENROUTER_WATCHER_ENCRYPTION_KEY or [encryption] key_file."""

    exit_code = EXIT_USAGE


class DecryptionError(WatcherError):
    """A stored key cannot be decrypted."""


class OpenRouterError(WatcherError):
    """OpenRouter request failed."""

    requests: int = 0  # HTTP requests the failed call sent, retries included (set by the client)


class UnauthorizedError(OpenRouterError):
    """OpenRouter rejected the key (401): it is wrong, expired or deleted."""


class NotManagementKeyError(OpenRouterError):
    """OpenRouter refused the request (403): per-model history needs a management key."""


class BadRequestError(OpenRouterError):
    """OpenRouter rejected the request (400)."""


class KeyChangeRefusedError(OpenRouterError):
    """OpenRouter refused to change the key (401/403): the registered management key of its
    account may not change keys."""


class UnknownKeyError(OpenRouterError):
    """OpenRouter has no key with that hash (404): it was deleted."""


class RateLimitedError(OpenRouterError):
    """OpenRouter kept answering 429 (rate limited) until the retries ran out."""


class UpstreamUnavailableError(OpenRouterError):
    """OpenRouter could not be reached or kept failing until the retries ran out."""


class EndpointNotFoundError(UpstreamUnavailableError):
    """OpenRouter has no such endpoint (404): check [openrouter] base_url."""


class InvalidResponseError(OpenRouterError):
    """OpenRouter's response does not match its contract."""
