"""The Starlette application: every route, the error shape and the security headers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from worker.http import api, dashboard
from worker.http.context import HttpContext
from worker.http.health import healthz
from worker.http.metrics import metrics_endpoint
from worker.http.responses import EXCEPTION_HANDLERS, CatchAll, SecurityHeaders


def build_app(ctx: HttpContext) -> Starlette:
    """The ASGI application for ``ctx`` (see :mod:`worker.http` for the endpoints)."""
    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint(ctx), methods=["GET"]),
            Route("/healthz", healthz(ctx), methods=["GET"]),
            *api.routes(ctx),
            *dashboard.routes(ctx),
        ],
        # Outermost first: the headers go on every answer, the 500s included.
        middleware=[Middleware(SecurityHeaders), Middleware(CatchAll)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
