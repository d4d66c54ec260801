"""Output for people and for programs: the one table renderer and the one JSON encoder.

Tables are plain text, columns two spaces apart, ``None`` shown as ``-``, money as dollars to
the cent. Every cell is made safe for a terminal: text that came from outside (model names,
key names, emails) could carry control characters, which are shown escaped instead.

JSON is stable: money as exact decimal strings (never floats, never ``0E-9``), timestamps as
ISO-8601 UTC with a ``Z``, dates as ``YYYY-MM-DD``, dataclasses as objects.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

CENT = Decimal("0.01")
# C0 and C1 control characters and DEL: they move the cursor, clear the screen, ring the bell.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Align = Literal["left", "right"]
LEFT: Align = "left"
RIGHT: Align = "right"


def iso(value: dt.datetime | dt.date | None) -> str | None:
    """A timestamp as ISO-8601 UTC with a Z suffix, to the second; a date as YYYY-MM-DD."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.UTC).replace(tzinfo=None)
        return utc.isoformat(timespec="seconds") + "Z"
    return value.isoformat()


def dollars(amount: Decimal) -> str:
    """$1,234.57: to the cent, half up, with thousands separators."""
    return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"


def safe(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``), fit for a terminal."""
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def cell(value: Any) -> str:
    """One table cell: '-' for None, yes/no, UTC timestamps to the minute, money in dollars.

    Numbers are shown as given: format counts with separators (``f"{n:,}"``) before, ids not.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return dollars(value)
    return safe(str(value))


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    align: Sequence[Align] | None = None,
    footer: Sequence[Sequence[Any]] = (),
) -> list[str]:
    """The lines of a table: headers, rows, then ``footer`` rows after a rule (totals).

    With a footer, rules of dashes frame the body. Columns are left-aligned unless ``align``
    says otherwise; trailing spaces are stripped.
    """
    body = [[cell(v) for v in row] for row in rows]
    foot = [[cell(v) for v in row] for row in footer]
    columns = len(headers)
    widths = [max(len(line[i]) for line in [list(headers), *body, *foot]) for i in range(columns)]
    sides = list(align or ["left"] * columns)

    def line(cells: Sequence[str]) -> str:
        padded = (
            text.rjust(width) if side == "right" else text.ljust(width)
            for text, width, side in zip(cells, widths, sides, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [line(headers)]
    if foot:
        lines.append(rule)
    lines += [line(cells) for cells in body]
    if foot:
        lines.append(rule)
        lines += [line(cells) for cells in foot]
    return lines


def jsonable(value: Any) -> Any:
    """``value`` with Decimals, timestamps, dates and dataclasses in their JSON forms."""
    if isinstance(value, Decimal):
        return f"{value:f}"  # fixed-point: never "0E-9" or "5.00E-7"
    if isinstance(value, dt.date):  # datetime included
        return iso(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def to_json(value: Any) -> str:
    """The stable JSON document for ``value``, indented two spaces."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)
