"""The fake OpenRouter's HTTP layer: the threaded server on 127.0.0.1, its request handler,
the scripted faults and the record of every request answered (keys only as fingerprints)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

API_PREFIX = "/api/v1"
MANAGEMENT_ONLY = "Only management keys can perform this operation"
_STATUS_MESSAGES = {
    400: "Invalid request parameters",
    401: "Missing Authentication header",
    403: MANAGEMENT_ONLY,
    404: "Resource not found",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Fault:
    """One scripted answer. ``status=200`` with no ``body`` means "answer normally, after
    ``delay`` seconds" (a slow response); any other status answers with that error (its
    contract body, or ``body`` verbatim, e.g. ``"not json"``), plus ``Retry-After`` if set.

    ``trickle``: send the answer's body one byte every that many seconds (a server that keeps
    the connection busy without ever finishing). ``location``: a redirect to that URL (with a
    3xx ``status``)."""

    status: int = 500
    body: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    trickle: float = 0.0
    location: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake answered. The key only as a fingerprint, never in plaintext."""

    path: str
    query: dict[str, str]
    status: int
    key_fingerprint: str | None


def fingerprint(api_key: str) -> str:
    """The short, non-reversible id the fake records instead of a key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


# --- the server -----------------------------------------------------------------------------


class Answering(Protocol):
    """What serves the requests (the fake OpenRouter itself)."""

    def _handle(self, handler: Handler) -> None: ...


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: bursts of ~100 concurrent connections
    fake: Answering

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a worker killed mid-request, on purpose in the fault
        # tests) is not the fake's error: no traceback on stderr for it.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    # Headers and body go out in two writes; with Nagle's algorithm the body then waits ~40 ms
    # for the client's delayed ACK, which would dwarf the latencies the tests and bench script.
    disable_nagle_algorithm = True
    server_version = "FakeOpenRouter/1.0"
    timeout = 30  # an idle keep-alive connection releases its thread after this
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read :attr:`FakeOpenRouter.requests` instead."""

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def do_PATCH(self) -> None:
        self.server.fake._handle(self)

    def _answer(
        self,
        status: int,
        body: str,
        headers: dict[str, str] | None = None,
        *,
        trickle: float = 0.0,
        stopping: threading.Event | None = None,
    ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not trickle:
            self.wfile.write(data)
            return
        for index in range(len(data)):
            self.wfile.write(data[index : index + 1])
            self.wfile.flush()
            if stopping is not None and stopping.wait(trickle):
                return


def row_day(row: dict[str, Any]) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(row.get("date"))[:10])
    except ValueError:
        return None


def error_body(status: int, message: str | None = None) -> str:
    text = message or _STATUS_MESSAGES.get(status, "Error")
    return json.dumps({"error": {"code": status, "message": text}})
