"""What a report can be asked for: its groupings (``--by``) and formats (``--format``), and
how much of a key hash people are shown.

Apart from :mod:`worker.reports.report` because that module builds SQL: the command line takes these
choices for its parser (``--help``, shell completion) without loading SQLAlchemy.
"""

from __future__ import annotations

from typing import Literal, get_args

Dimension = Literal["day", "model", "account", "key", "user"]
Format = Literal["table", "csv", "json"]
DIMENSIONS: tuple[str, ...] = get_args(Dimension)
FORMATS: tuple[str, ...] = get_args(Format)
HASH_SHOWN = 12  # tables and /metrics show a key hash's first characters; CSV and JSON all of it
