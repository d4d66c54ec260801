"""Real local receivers for notifications: an HTTP server for Apprise's ``json://`` (a generic
webhook) and an SMTP server for ``mailto://``, both on 127.0.0.1. The tests and ``make demo``
deliver to them; a receiver can be told to fail its next answers (a receiver that is down).

    with WebhookReceiver() as hook:
        url = hook.url("/alerts")          # json://127.0.0.1:PORT/alerts
        ...
        hook.wait_for(1)                   # the JSON bodies received, once there is one
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.testing.postgres import free_port


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        receiver = self.server.receiver
        status = receiver._answer(self.path, body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:  # quiet: the tests read .received
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every JSON POST (Apprise's ``json://``)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []  # {"path": ..., "json": ...}
        self.failures = 0  # answer the next N posts with 500 (without recording them)
        self.refused = 0  # POSTs answered with 500 so far
        self._changed = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _answer(self, path: str, body: bytes) -> int:
        with self._changed:
            if self.failures > 0:
                self.failures -= 1
                self.refused += 1
                self._changed.notify_all()
                return 500
            self.received.append({"path": path, "json": json.loads(body or b"null")})
            self._changed.notify_all()
        return 200

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        """The Apprise URL that posts here."""
        return f"json://127.0.0.1:{self.port}{path}"

    def fail_next(self, count: int) -> None:
        with self._changed:
            self.failures = count

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The messages received, once there are at least ``count`` (AssertionError after
        ``timeout`` seconds)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} message(s) received, wanted {count}")
            return list(self.received)

    def start(self) -> WebhookReceiver:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class MailReceiver:
    """An SMTP server on 127.0.0.1 (aiosmtpd, a test dependency) that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._changed = threading.Condition()
        self._controller: Any = None

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self._changed:
            self.messages.append(envelope.content.decode("utf-8", "replace"))
            self._changed.notify_all()
        return "250 Message accepted"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def url(self, to: str = "ops@example.com") -> str:
        """The Apprise URL that mails here (plain SMTP, no login)."""
        return (
            f"mailto://127.0.0.1:{self.port}?smtp=127.0.0.1&from=watcher@example.com"
            f"&to={to}&mode=insecure"
        )

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"{len(self.messages)} mail(s) received, wanted {count}")
            return list(self.messages)

    def start(self) -> MailReceiver:
        from aiosmtpd.controller import Controller

        # aiosmtpd checks its own port by connecting to it, so it cannot be given port 0.
        self._controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def __enter__(self) -> MailReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
