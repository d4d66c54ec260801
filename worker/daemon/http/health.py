"""``GET /healthz``: is the daemon doing its job? For load balancers and uptime probes.

Healthy (200) when the scheduler is running and every active key's last sync succeeded within
``[http] healthy_within_hours`` (default 26: a daily sync plus two hours of slack). A key added
within that time that has not been synced yet is waiting for its first run, not unhealthy.
Otherwise 503 with the reasons, one line each. No token: keys are named by id only, and the
answer holds no name, email, address or error text. Every daemon answers, a standby on the same
terms as the leader (it serves the same database), with its ``[ha] instance_name``, its
``role`` (leader or standby), since when, and the leader's name.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from worker.core import render
from worker.core.errors import DatabaseUnavailableError
from worker.daemon.http.context import HttpContext
from worker.daemon.http.responses import json_response
from worker.reports.status import KeyStatus, key_states
from worker.store.models import ApiKey


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def key_problems(
    keys: list[KeyStatus],
    added: Mapping[int, dt.datetime | None],
    *,
    now: dt.datetime,
    within: dt.timedelta,
) -> list[str]:
    """Why the active keys among ``keys`` are not healthy at ``now`` (empty: they all are).

    ``added``: when each key was created (a never-synced key is given ``within`` to sync).
    """
    problems = []
    for key in keys:
        if not key.active:
            continue
        label = f"key {key.api_key_id}"
        if key.last_status == "failed":
            problems.append(f"{label}: its last sync failed at {render.iso(key.last_attempt_at)}")
        elif key.last_success_at is None:
            created = added.get(key.api_key_id)
            if created is None or now - created > within:
                problems.append(f"{label}: never synced successfully")
        elif now - key.last_success_at > within:
            problems.append(
                f"{label}: last successful sync {_hours(now - key.last_success_at)} ago "
                f"(limit {_hours(within)})"
            )
    return problems


def check(ctx: HttpContext) -> tuple[bool, dict[str, Any]]:
    """(healthy, the document /healthz answers with)."""
    now = ctx.clock()
    within = dt.timedelta(hours=ctx.settings.http.healthy_within_hours)
    reasons = []
    alive = ctx.scheduler_alive()
    if not alive:
        reasons.append("the scheduler is not running")
    active = 0
    try:
        with ctx.session_factory() as session:
            keys = key_states(session, now, usage=False, live=False)
            added = {
                key_id: created
                for key_id, created in session.execute(select(ApiKey.id, ApiKey.created_at))
            }
        active = sum(1 for k in keys if k.active)
        reasons += key_problems(keys, added, now=now, within=within)
    except DatabaseUnavailableError:
        reasons.append("the database cannot be reached")
    document: dict[str, Any] = {
        "status": "unhealthy" if reasons else "ok",
        "scheduler": "running" if alive else "stopped",
        "active_keys": active,
        "healthy_within_hours": ctx.settings.http.healthy_within_hours,
        "checked_at": now,
        "reasons": reasons,
    }
    role = ctx.role()
    if role is not None:
        # A standby serves too: healthy on the same terms, and says who leads.
        document |= {
            "instance": role.instance,
            "role": role.role,
            "role_since": role.since,
            "leader": role.leader,
        }
    return not reasons, document


def healthz(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /healthz``: 200 or 503 with the same document."""

    def endpoint(_request: Request) -> Response:
        healthy, document = check(ctx)
        return json_response(document, 200 if healthy else 503)

    return endpoint
