"""What a key spent on a model on a UTC day, and what a write did to the stored rows.

The types every stage shares: :mod:`worker.openrouter.activity` produces :class:`UsageRow`
totals, :mod:`worker.store.usage_write` stores them and reports :class:`WriteCounts`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import NamedTuple

# The stored values of a row, in column order; (api_key_id, date, model) is the natural key.
VALUE_COLUMNS = (
    "requests_count",
    "tokens_input",
    "tokens_output",
    "tokens_reasoning",
    "cost",
    "byok_cost",
)


class UsageRow(NamedTuple):
    """One (date, model) total for one key, as stored in ``usage_stats``.

    A NamedTuple (immutable, built at C speed): a sync builds one per stored row.
    """

    date: dt.date
    model: str
    requests_count: int = 0
    tokens_input: int = 0
    tokens_output: int = 0
    tokens_reasoning: int = 0
    cost: Decimal = Decimal(0)
    byok_cost: Decimal = Decimal(0)


@dataclass(slots=True)
class WriteCounts:
    """What one write did to ``usage_stats``."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    # Stored rows the answer no longer reports but that were not deleted: they lie before
    # the first day a whole-window answer reports, which a clock that turned midnight
    # earlier than ours explains as well as a restatement (see worker.sync.run).
    kept: int = 0

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.deleted + other.deleted,
            self.kept + other.kept,
        )

    @property
    def written(self) -> int:
        """Rows actually changed in the database (inserted, updated or deleted)."""
        return self.inserted + self.updated + self.deleted

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
