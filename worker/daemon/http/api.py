"""``/api/v1``: read-only JSON for a bearer token, scoped to what the token may see.

- ``GET /api/v1/usage``: the options and the document of ``report --format json``
  (``since``, ``until``, ``last``, ``by``, ``user``, ``key``, ``model``), built by
  :func:`worker.reports.report.build_report` and :func:`worker.reports.report.report_dict`;
- ``GET /api/v1/status``: the document of ``status --json``
  (:func:`worker.reports.status.collect_status`);
- ``GET /api/v1/account-keys``: the document of ``account-keys --json``
  (:func:`worker.reports.account_keys.account_keys`), ``account`` for one account;
- ``GET /api/v1/alerts``: the document of ``alerts history --json``
  (:func:`worker.store.alerts.history`), ``since`` a UTC day;
- ``GET /api/v1/guards``: the document of ``guards history --json``
  (:func:`worker.store.guards.history`), ``last`` the newest N.

A token of a user who is not an admin sees that user's keys and accounts only (an account is
its management key, so it is its owner's, and so are all its keys): without ``user`` its usage
is that user's, and naming another user, another user's key or account is a 404, exactly as
if it did not exist. Its alerts are those about its registered keys, its accounts and their
keys; the daily digest, which sums every account, is an admin's only. Its guard actions are
those on its accounts' keys. An unknown or repeated
parameter, or a malformed value, is a 400 naming it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.core import render
from worker.core.days import parse_day, resolve_range
from worker.core.errors import NotFoundError, UsageError
from worker.daemon.http.auth import authenticate
from worker.daemon.http.context import HttpContext
from worker.daemon.http.responses import ApiError, json_response
from worker.reports import account_keys as catalogue
from worker.reports.report import DIMENSIONS, Filters, build_report, report_dict
from worker.reports.status import collect_status
from worker.store import guards
from worker.store.alerts import history

USAGE_PARAMETERS = ("since", "until", "last", "by", "user", "key", "model")
_OPTION_RE = re.compile(r"--([a-z]+)")


def bad(parameter: str, message: str) -> ApiError:
    """A 400 naming ``parameter``."""
    return ApiError(400, "bad_parameter", message, parameter)


def query(request: Request, allowed: Iterable[str]) -> dict[str, str]:
    """The query parameters, each at most once and each one of ``allowed``."""
    allowed = tuple(allowed)
    seen: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise bad(name, f"unknown parameter {render.safe(name)!r} (known: {known})")
        if name in seen:
            raise bad(name, f"parameter {name!r} given more than once")
        seen[name] = value
    return seen


def _parsed(name: str, text: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(text)
    except UsageError as exc:
        raise bad(name, f"{name}: {exc}") from None


def _positive(name: str, text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise bad(name, f"{name} must be a positive whole number, got {render.safe(text)!r}")
    return value


def _api_message(exc: Exception) -> str:
    """A library message about command-line options (``--since``), as parameters (``since``)."""
    return _OPTION_RE.sub(r"\1", str(exc))


def usage(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /api/v1/usage``."""

    def endpoint(request: Request) -> Response:
        scope = authenticate(request, ctx)
        params = query(request, USAGE_PARAMETERS)
        since = _parsed("since", params["since"], parse_day) if "since" in params else None
        until = _parsed("until", params["until"], parse_day) if "until" in params else None
        last = _positive("last", params["last"]) if "last" in params else None
        by = params.get("by", "model")
        if by not in DIMENSIONS:
            raise bad("by", f"by must be one of {', '.join(DIMENSIONS)}, got {render.safe(by)!r}")
        key_id = _positive("key", params["key"]) if "key" in params else None
        model = params.get("model") or None
        if last is not None and since is not None:
            raise bad("last", "last and since cannot be combined: give one of them")
        try:
            date_range = resolve_range(since=since, until=until, last=last, today=ctx.today())
        except UsageError as exc:
            raise bad("last" if last is not None else "since", _api_message(exc)) from None
        with ctx.session_factory() as session:
            email = scope.visible_user(session, params["user"]) if "user" in params else None
            if key_id is not None:
                scope.visible_key(session, key_id)
            if not scope.admin:
                email = scope.email
            filters = Filters(user_email=email, key_id=key_id, model=model)
            try:
                report = build_report(session, by, date_range, filters)
            except NotFoundError as exc:  # gone between the check and the report
                raise ApiError(404, "not_found", _api_message(exc)) from None
            except UsageError as exc:  # a key of another user than ``user``
                raise bad("key", _api_message(exc)) from None
        return json_response(report_dict(report))

    return endpoint


def status(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /api/v1/status``."""

    def endpoint(request: Request) -> Response:
        scope = authenticate(request, ctx)
        query(request, ())
        with ctx.session_factory() as session:
            result = collect_status(
                session,
                ctx.settings.schedule,
                ctx.clock(),
                sync_running=ctx.sync_running(),
                user_id=scope.only_user_id,
                limits=ctx.settings.limits,
                # The daemons and their hosts are the operator's business: admins only.
                ha=ctx.settings.ha if scope.only_user_id is None else None,
            )
        return json_response(result.to_json())

    return endpoint


def account_keys(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /api/v1/account-keys``."""

    def endpoint(request: Request) -> Response:
        scope = authenticate(request, ctx)
        params = query(request, ("account",))
        account_id = _positive("account", params["account"]) if "account" in params else None
        with ctx.session_factory() as session:
            if account_id is not None:
                scope.visible_key(session, account_id, "account")
            keys = catalogue.account_keys(
                session, account_id, user_id=scope.only_user_id, now=ctx.clock()
            )
        return json_response(keys)

    return endpoint


def alerts(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /api/v1/alerts``."""

    def endpoint(request: Request) -> Response:
        scope = authenticate(request, ctx)
        params = query(request, ("since",))
        day = _parsed("since", params["since"], parse_day) if "since" in params else None
        since = dt.datetime.combine(day, dt.time(), dt.UTC) if day is not None else None
        with ctx.session_factory() as session:
            items = history(session, since, user_id=scope.only_user_id)
        return json_response(items)

    return endpoint


def guard_actions(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /api/v1/guards``."""

    def endpoint(request: Request) -> Response:
        scope = authenticate(request, ctx)
        params = query(request, ("last",))
        last = _positive("last", params["last"]) if "last" in params else None
        with ctx.session_factory() as session:
            actions = guards.history(session, user_id=scope.only_user_id, last=last)
        return json_response(actions)

    return endpoint


def routes(ctx: HttpContext) -> list[Route]:
    """The ``/api/v1`` routes (plain functions: Starlette runs them in its thread pool)."""
    return [
        Route("/api/v1/usage", usage(ctx), methods=["GET"]),
        Route("/api/v1/status", status(ctx), methods=["GET"]),
        Route("/api/v1/account-keys", account_keys(ctx), methods=["GET"]),
        Route("/api/v1/alerts", alerts(ctx), methods=["GET"]),
        Route("/api/v1/guards", guard_actions(ctx), methods=["GET"]),
    ]
