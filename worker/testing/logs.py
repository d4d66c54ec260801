"""Reading a worker process's JSON log lines in tests, also while it is still writing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def json_events(source: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of a process's output (a text, or the file it writes to).

    A process writes a long line in more than one piece: a last line without its newline is not
    complete yet, so it is left for the next read instead of failing to parse.
    """
    text = source.read_text() if isinstance(source, Path) else source
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]
