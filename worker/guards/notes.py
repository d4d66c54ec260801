"""What an alert that acted says it did: one line appended to its notification, and a word at
the end of its title, rewritten as the action goes from planned to done (or failed)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from worker.core.logs import mask_text
from worker.core.render import dollars, safe
from worker.store.models import AlertEvent

_TAG = re.compile(r" \[guard: [^\]]*\]$")
_PAST = {"disable": "disabled", "cap": "capped", "limit": "limited"}
_RESETS = {"daily": "a day", "weekly": "a week", "monthly": "a month", None: "(never reset)"}


def what(action: str, wanted: dict[str, Any]) -> str:
    """``disable`` or ``cap to $4.25 a day``: the change, for people."""
    if action == "disable":
        return "disable"
    limit = wanted.get("limit")
    shown = dollars(limit) if limit is not None else "no limit"
    return f"cap to {shown} {_RESETS.get(wanted.get('limit_reset'), '')}".rstrip()


def note(
    *,
    action_id: int,
    action: str,
    wanted: dict[str, Any],
    key: str,
    account: str,
    state: str,
    detail: str = "",
) -> tuple[str, str]:
    """(title tag, body line) of an action in ``state``: planned (dry-run), pending, sent,
    already (the key was so), failed, refused (never acted: a management key, no account)."""
    subject = f'key "{safe(key)}" of account "{safe(account)}"'
    change = what(action, wanted)
    past = _PAST.get(action, action)
    lines = {
        "planned": (
            f"would {action}",
            f"Guard (dry-run): would {change} {subject}; nothing was sent ([guards] mode = "
            f'"enforce" sends it). Action #{action_id}.',
        ),
        "pending": (action, f"Guard: {change} {subject} (action #{action_id})."),
        "sent": (past, f"Guard: {past} {subject}{detail} (action #{action_id})."),
        "already": (
            f"already {past}",
            f"Guard: {subject} was already so; nothing was sent (action #{action_id}).",
        ),
        "failed": (
            f"{action} failed",
            f"Guard: could not {change} {subject}: {detail} (action #{action_id}).",
        ),
        "refused": (
            "not acted",
            f"Guard: did not {action} {subject}: {detail} (action #{action_id}).",
        ),
    }
    tag, line = lines[state]
    return tag, mask_text(line)


def annotate(session: Session, event_id: int | None, tag: str, line: str) -> None:
    """Put the action's word on the alert's title and its line in the body (replacing the
    earlier ones), so the notifications still to send say where it stands."""
    if event_id is None:
        return
    event = session.get(AlertEvent, event_id)
    if event is None:
        return
    event.title = _TAG.sub("", event.title) + f" [guard: {tag}]"
    kept = [text for text in event.body.splitlines() if not text.startswith("Guard")]
    event.body = "\n".join([*kept, mask_text(line)])
