"""JSON bodies and the one error shape every endpoint answers with.

Bodies are rendered by :func:`worker.core.render.to_json` (money as exact decimal strings, UTC
timestamps with a ``Z``), the same encoder as the command line's ``--json``. Every error is::

    {"error": {"status": 400, "code": "bad_parameter", "message": "…", "parameter": "since"}}

``code`` is stable (``bad_parameter``, ``unauthorized``, ``not_found``, ``rate_limited``,
``method_not_allowed``, ``database_unavailable``, ``internal_error``); ``parameter`` names the
query parameter at fault, or is null. A message never holds a key, a token or its hash, nor a
stack trace: an unexpected error answers with a request id that the log line carries too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.core import render
from worker.core.errors import DatabaseUnavailableError
from worker.core.logs import get_logger, mask_key_like, mask_text

log = get_logger("worker.http")

JSON = "application/json"
# No caching anywhere: the answers are per token and change with every sync.
NO_STORE = {"Cache-Control": "no-store"}


class ApiError(Exception):
    """An expected refusal: its HTTP status, stable code, one-line message and parameter."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        parameter: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter
        self.headers = dict(headers or {})


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``value`` as the stable JSON document."""
    return Response(
        render.to_json(value) + "\n",
        status_code=status,
        media_type=JSON,
        headers={**NO_STORE, **(headers or {})},
    )


def error_body(status: int, code: str, message: str, parameter: str | None = None) -> Any:
    """The error document (see the module docstring).

    A message may quote a value the caller sent: anything in it that looks like a key or a
    token (pasted into the wrong parameter) is masked all the same.
    """
    masked = mask_key_like(mask_text(message))
    return {"error": {"status": status, "code": code, "message": masked, "parameter": parameter}}


def error_response(error: ApiError) -> Response:
    return json_response(
        error_body(error.status, error.code, error.message, error.parameter),
        error.status,
        error.headers,
    )


async def on_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def on_http_exception(_request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (unknown path, wrong method) in the same shape."""
    status = int(getattr(exc, "status_code", 500))
    if status == 405:
        allowed = getattr(exc, "headers", None) or {}
        return error_response(
            ApiError(405, "method_not_allowed", "only GET is served here", headers=allowed)
        )
    if status == 404:
        return error_response(ApiError(404, "not_found", "no such page or endpoint"))
    return error_response(ApiError(status, "error", str(getattr(exc, "detail", "error"))))


async def on_database_unavailable(_request: Request, exc: Exception) -> Response:
    # The message names the database's address: for the log, not for an anonymous caller.
    log.warning("http_database_unavailable", error=str(exc))
    return error_response(
        ApiError(503, "database_unavailable", "the database cannot be reached: try again later")
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: on_api_error,
    404: on_http_exception,
    405: on_http_exception,
    DatabaseUnavailableError: on_database_unavailable,
}


class CatchAll:
    """ASGI middleware: an unexpected error becomes a 500 JSON body with a request id, and
    one ``http_request_failed`` log line with the (masked) traceback; never a stack trace in
    the answer, never a second report by the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            request_id = uuid.uuid4().hex[:12]
            log.exception("http_request_failed", path=scope.get("path"), request_id=request_id)
            if started:
                return  # the answer is half sent: the client sees a cut connection
            response = error_response(
                ApiError(
                    500,
                    "internal_error",
                    f"internal error (request id {request_id}): see the daemon's log",
                )
            )
            await response(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: the headers every answer carries.

    The dashboard loads its script and style from this server only and nothing else (no CDN,
    no font, no inline script), so a strict Content-Security-Policy costs nothing.
    """

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
