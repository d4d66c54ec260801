"""Argument types the commands share: argparse turns their errors into one usage line."""

from __future__ import annotations

import argparse
import datetime as dt

from worker.core.days import parse_day
from worker.core.errors import UsageError


def day_arg(text: str) -> dt.date:
    """A ``YYYY-MM-DD`` day (:func:`worker.core.days.parse_day`, the one date parser)."""
    try:
        return parse_day(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(what: str) -> argparse._ActionType:
    """A whole number of at least 1; ``what`` describes it in the error ("'x' is not …")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


key_id = positive_int("an id (a positive number)")


def example(command: str) -> str:
    """The epilog of a command's ``--help``: the command at work, e.g. ``example("report --by
    day")``. Every parser has one (a test walks the parser tree and parses each example)."""
    return f"example: openrouter-watcher {command}"
