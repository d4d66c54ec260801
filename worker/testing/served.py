"""The HTTP application on a real uvicorn at 127.0.0.1, in process: for tests and the bench."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from worker.daemon.http.app import build_app
from worker.daemon.http.context import HttpContext
from worker.daemon.http.server import HttpServer


@contextlib.contextmanager
def serving(ctx: HttpContext) -> Iterator[str]:
    """Serve the application for ``ctx`` on a free port; yields its base URL."""
    settings = dataclasses.replace(ctx.settings.http, listen="127.0.0.1:0")
    server = HttpServer(build_app(ctx), settings, grace_seconds=5)
    server.start()
    try:
        yield server.url
    finally:
        server.stop(timeout=5)
