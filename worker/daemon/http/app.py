"""The Starlette application: every route, the error shape and the security headers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from worker.daemon.http import api, dashboard
from worker.daemon.http.context import HttpContext
from worker.daemon.http.health import healthz
from worker.daemon.http.metrics import metrics_endpoint
from worker.daemon.http.responses import EXCEPTION_HANDLERS, CatchAll, SecurityHeaders


def build_app(ctx: HttpContext) -> Starlette:
    """The ASGI application for ``ctx`` (see :mod:`worker.daemon.http` for the endpoints)."""
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
