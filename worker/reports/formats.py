"""The formats of a report: a table for people, CSV and JSON for programs.

- table: dollars to the cent, token counts with thousands separators, a total row; ``--by day``
  adds an inline bar proportional to each day's cost; key hashes shortened.
- CSV: RFC 4180 via :mod:`csv`, a header row, one row per group, then a row whose first column
  is ``total``; money with all 9 stored decimals.
- JSON: :func:`worker.reports.report.report_dict`, money as exact decimal strings (9 decimals).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from worker.core import render
from worker.core.errors import UsageError
from worker.reports.choices import FORMATS, HASH_SHOWN
from worker.reports.report import (
    GROUP_FIELDS,
    METRIC_FIELDS,
    ZERO,
    Report,
    Totals,
    record,
    report_dict,
)

BAR_WIDTH = 20  # characters for the largest day
BAR_EIGHTHS = "▏▎▍▌▋▊▉█"  # 1/8 … 8/8 of a character cell


def empty_message(report: Report) -> str:
    """What to print when nothing matched."""
    text = f"no usage between {report.range}"
    described = report.filters.describe()
    return f"{text} ({described})" if described else text


def header_line(report: Report) -> str:
    """States the exact range (and filters) a report covers."""
    days = report.range.days
    text = (
        f"spend by {report.by}, {report.range.since.isoformat()} to "
        f"{report.range.until.isoformat()} (UTC, {days} day{'s' if days != 1 else ''})"
    )
    described = report.filters.describe()
    return f"{text}, {described}" if described else text


def bar(value: Decimal, largest: Decimal, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of unicode blocks, ``width`` cells for ``largest``, in eighths.

    Any spend above zero shows at least one eighth, so a small day is not mistaken for none.
    """
    if largest <= 0 or value <= 0:
        return ""
    eighths = int((value / largest * width * 8).to_integral_value(rounding=ROUND_HALF_UP))
    eighths = max(eighths, 1)
    full, part = divmod(eighths, 8)
    return BAR_EIGHTHS[-1] * full + (BAR_EIGHTHS[part - 1] if part else "")


_TITLES = {
    "date": "date",
    "model": "model",
    "account_id": "account",
    "account_name": "account name",
    "key_hash": "hash",
    "key_name": "key",
    "user_email": "user",
}
_METRIC_TITLES = ("requests", "tokens in", "tokens out", "reasoning", "cost", "BYOK cost")


def render_table(report: Report) -> str:
    """A plain-text table with a header line, one line per group and a total line."""
    group_fields = GROUP_FIELDS[report.by]
    titles = [_TITLES[f] for f in group_fields] + list(_METRIC_TITLES)
    align = [render.LEFT] * len(group_fields) + [render.RIGHT] * len(METRIC_FIELDS)
    rows = [
        [_cell(row.group, f) for f in group_fields] + _metrics(row.totals) for row in report.rows
    ]
    total = ["total"] + [""] * (len(group_fields) - 1) + _metrics(report.total)
    lines = render.table(titles, rows, align=align, footer=[total])
    if report.by == "day":
        # Each day's line ends with a bar proportional to its cost (lines: titles, rule, days).
        largest = max((row.totals.cost for row in report.rows), default=ZERO)
        for index, row in enumerate(report.rows, start=2):
            drawn = bar(row.totals.cost, largest)
            lines[index] = lines[index] + "  " + drawn if drawn else lines[index]
    return "\n".join([header_line(report), "", *lines]) + "\n"


def _cell(group: dict[str, Any], name: str) -> Any:
    value = group[name]
    if name == "key_hash":
        return "" if value is None else value[:HASH_SHOWN] + "…"
    return value


def _metrics(totals: Totals) -> list[Any]:
    return [
        f"{totals.requests:,}",
        f"{totals.tokens_input:,}",
        f"{totals.tokens_output:,}",
        f"{totals.tokens_reasoning:,}",
        totals.cost,
        totals.byok_cost,
    ]


def render_csv(report: Report) -> str:
    """RFC 4180 CSV: a header, one row per group, then the total (first column ``total``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    names = [*GROUP_FIELDS[report.by], *METRIC_FIELDS]
    writer.writerow(names)
    for row in report.rows:
        line = record(row.group, row.totals)
        writer.writerow([line[n] for n in names])
    if not report.empty:
        group = {name: "" for name in GROUP_FIELDS[report.by]}
        group[GROUP_FIELDS[report.by][0]] = "total"
        line = record(group, report.total)
        writer.writerow([line[n] for n in names])
    return buffer.getvalue()


def render_json(report: Report) -> str:
    return render.to_json(report_dict(report)) + "\n"


def format_report(report: Report, fmt: str) -> str:
    """The report in ``fmt`` (table, csv or json)."""
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "table":
        return empty_message(report) + "\n" if report.empty else render_table(report)
    raise UsageError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so a reader never sees half a file: temp file, then rename."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"cannot write {target}: directory {directory} does not exist")
    if target.is_dir():
        raise UsageError(f"cannot write {target}: it is a directory; name a file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
