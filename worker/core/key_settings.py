"""What ``PATCH /keys/{hash}`` changes of an OpenRouter key, and how two of them compare: the
one type the client, the guards and the drift report share (kept apart from the client so
that reading the database never loads the HTTP client)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class KeySettings:
    """A key's settings that ``PATCH /keys/{hash}`` changes: whether it is disabled, its limit
    (USD; None: no limit), when the limit resets (``daily``, ``weekly``, ``monthly``; None:
    never) and whether BYOK spend counts against it."""

    disabled: bool
    limit: Decimal | None
    limit_reset: str | None
    include_byok_in_limit: bool | None  # None: not known (a listing older than the field)

    def changes_to(self, wanted: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of ``wanted`` whose value differs from these settings (money compared
        to the 9 decimals OpenRouter's figures are read with)."""
        changed = {}
        for name, value in wanted.items():
            current = getattr(self, name)
            if name == "limit" and value is not None and current is not None:
                if round(Decimal(value), 9) == round(current, 9):
                    continue
            elif current == value:
                continue
            changed[name] = value
        return changed

    def as_dict(self) -> dict[str, Any]:
        return {
            "disabled": self.disabled,
            "limit": self.limit,
            "limit_reset": self.limit_reset,
            "include_byok_in_limit": self.include_byok_in_limit,
        }
