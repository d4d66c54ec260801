"""A key's outcome in a run, and why a key failed: a stable reason code and one line.

The sync builds outcomes, the ledger records them, the commands print them. A failure is
described by a stable reason code (``not_management_key``, ``upstream_unavailable``, …) and one
line that never holds a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.core.errors import (
    BadRequestError,
    DatabaseBusyError,
    DatabaseUnavailableError,
    DecryptionError,
    InvalidResponseError,
    KeyChangeRefusedError,
    NotManagementKeyError,
    OpenRouterError,
    RateLimitedError,
    TooManyRowsError,
    UnauthorizedError,
    UnknownKeyError,
    UpstreamUnavailableError,
    WatcherError,
)
from worker.core.logs import mask_text
from worker.core.usage import WriteCounts

MANAGEMENT_KEY_NOTE = "per-model history needs a management key"


@dataclass(slots=True)
class KeyOutcome:
    """One key's result in a run: what the ledger records and the summary reports."""

    api_key_id: int
    user_id: int
    name: str
    status: str  # ok | failed | warning (an ordinary key no registered management key lists)
    counts: WriteCounts = field(default_factory=WriteCounts)
    http_requests: int = 0
    reason: str | None = None  # a stable code when failed, e.g. not_management_key
    error: str | None = None  # the one-line message, never a secret

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_key_id": self.api_key_id,
            "user_id": self.user_id,
            "name": self.name,
            "status": self.status,
            "rows": self.counts.as_dict(),
            "requests": self.http_requests,
            "reason": self.reason,
            "error": self.error,
        }


# --- failures -------------------------------------------------------------------------------

_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (DecryptionError, "decrypt_failed"),
    (KeyChangeRefusedError, "change_refused"),
    (UnknownKeyError, "unknown_key"),
    (UnauthorizedError, "unauthorized"),
    (NotManagementKeyError, "not_management_key"),
    (BadRequestError, "bad_request"),
    (RateLimitedError, "rate_limited"),
    (UpstreamUnavailableError, "upstream_unavailable"),
    (InvalidResponseError, "invalid_response"),
    (DatabaseBusyError, "database_busy"),
    (DatabaseUnavailableError, "database_unavailable"),
    (TooManyRowsError, "too_many_rows"),
    (OpenRouterError, "openrouter_error"),
    (WatcherError, "error"),
)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(reason code, one-line message) for a key's failure; never contains a secret."""
    reason = next((code for cls, code in _REASONS if isinstance(exc, cls)), "unexpected")
    if reason == "unexpected":
        # A database or programming error: name it, the traceback goes to the log.
        text = f"unexpected {type(exc).__name__}: {exc}"
    else:
        text = str(exc)
    if reason == "not_management_key" and "management key" not in text:
        text = f"{text}: {MANAGEMENT_KEY_NOTE}"
    lines = mask_text(text).strip().splitlines()
    return reason, (lines[0] if lines else reason)
