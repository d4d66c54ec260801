"""A fake OpenRouter: a real HTTP server on 127.0.0.1 serving ``/activity`` and ``/key``.

It follows OpenRouter's contract (``shared/openrouter/openapi-usage.yaml``): Bearer keys,
``/activity`` for management keys only (403 otherwise), the last 30 completed UTC days, one
day with ``?date=`` (400 for today, the future, older days or a malformed date), error bodies
``{"error": {"code": N, "message": "…"}}``. Scripted faults (429 + Retry-After, 5xx, slow and
malformed answers, 401/403) are injected per key. The tests, ``make demo`` and ``make bench``
reuse it, in-process::

    with FakeOpenRouter(today=dt.date(2026, 5, 1)) as fake:
        fake.add_key("sk-or-v1-test", rows=generate_activity(today=fake.today))
        settings = OpenRouterSettings(base_url=fake.base_url)

or as a process: ``python -m worker.testing.fake_openrouter --port 0 --keys-file keys.json``
prints its base URL on the first line of stdout and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from worker.days import completed_window, utc_today
from worker.testing.activity_data import dumps, generate_activity
from worker.testing.fake_account import FakeAccount, FakeAccountKey, listing

API_PREFIX = "/api/v1"
_ENDPOINTS = ("/activity", "/keys", "/workspaces", "/credits", "/analytics/query")
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


@dataclass
class _Key:
    management: bool
    label: str
    limit: Decimal | None
    rows: list[dict[str, Any]]
    faults: collections.deque[Fault] = field(default_factory=collections.deque)
    forever: Fault | None = None
    account: FakeAccount | None = None  # a management key's account (keys, credits, history)
    listed: FakeAccountKey | None = None  # an ordinary key's entry in its account's /keys


# --- the server -----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: bursts of ~100 concurrent connections
    fake: FakeOpenRouter

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a worker killed mid-request, on purpose in the fault
        # tests) is not the fake's error: no traceback on stderr for it.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    # Headers and body go out in two writes; with Nagle's algorithm the body then waits ~40 ms
    # for the client's delayed ACK, which would dwarf the latencies the tests and bench script.
    disable_nagle_algorithm = True
    server_version = "FakeOpenRouter/1.0"
    timeout = 30  # an idle keep-alive connection releases its thread after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read :attr:`FakeOpenRouter.requests` instead."""

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def do_POST(self) -> None:
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


def _row_day(row: dict[str, Any]) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(row.get("date"))[:10])
    except ValueError:
        return None


def _error(status: int, message: str | None = None) -> str:
    text = message or _STATUS_MESSAGES.get(status, "Error")
    return json.dumps({"error": {"code": status, "message": text}})


class FakeOpenRouter:
    """OpenRouter's ``/api/v1/activity`` and ``/api/v1/key`` from scripted data, on 127.0.0.1.

    ``today`` fixes the UTC date the window is computed from (default: the real date, read on
    every request); it can be changed while serving (a clock that turns midnight). ``latency``
    delays every answer. ``on_request(path, query)``, when set, is called in the server's
    thread as each request arrives, before it is answered (tests use it to act at a precise
    moment). ``max_in_flight`` is the most requests ever answered at the same time.
    Thread-safe.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        today: dt.date | None = None,
        latency: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self._today = today
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self.on_request: Callable[[str, dict[str, str]], None] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def today(self) -> dt.date:
        """The date the window ends before."""
        return self._today or utc_today()

    @today.setter
    def today(self, value: dt.date) -> None:
        self._today = value

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api/v1`` (once started)."""
        if self._server is None:
            raise RuntimeError("FakeOpenRouter is not started")
        return f"http://{self.host}:{self._server.server_address[1]}{API_PREFIX}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeOpenRouter:
        """Bind and serve in a daemon thread; returns self."""
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openrouter",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (delayed answers are cut short)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenRouter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------------------

    def add_key(
        self,
        api_key: str,
        *,
        management: bool = True,
        label: str | None = None,
        limit: Decimal | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> None:
        """Register a key (a management key unless ``management=False``) and its raw rows."""
        shown = label or f"{api_key[:11]}...{api_key[-3:]}"
        with self._lock:
            self._keys[api_key] = _Key(
                management=management, label=shown, limit=limit, rows=list(rows or [])
            )

    def add_account(self, management_key: str, account: FakeAccount) -> FakeAccount:
        """Register a management key for ``account``, and each of its keys that has a
        ``secret`` as an ordinary key (``/key`` answers with its label and figures)."""
        with self._lock:
            self._keys[management_key] = _Key(
                management=True,
                label=f"{management_key[:11]}...{management_key[-3:]}",
                limit=None,
                rows=[],
                account=account,
            )
            for listed in account.keys:
                if listed.secret is not None:
                    self._keys[listed.secret] = _Key(
                        management=False, label=listed.label, limit=listed.limit, rows=[],
                        listed=listed,
                    )  # fmt: skip
        return account

    def set_rows(self, api_key: str, rows: list[dict[str, Any]]) -> None:
        """Replace a key's activity (e.g. OpenRouter restating a day)."""
        with self._lock:
            self._keys[api_key].rows = list(rows)

    def rows(self, api_key: str) -> list[dict[str, Any]]:
        """A copy of the key's raw activity rows (all of them, whatever the window)."""
        with self._lock:
            return list(self._keys[api_key].rows)

    def inject(self, api_key: str, *faults: Fault) -> None:
        """Answer the key's next requests with these faults, in order; then normally."""
        with self._lock:
            self._keys[api_key].faults.extend(faults)

    def fail_forever(self, api_key: str, fault: Fault) -> None:
        """Answer every later request of the key with ``fault``."""
        with self._lock:
            self._keys[api_key].forever = fault

    def clear_faults(self, api_key: str) -> None:
        """Forget the key's scripted faults (queued and forever): it answers normally again."""
        with self._lock:
            key = self._keys[api_key]
            key.faults.clear()
            key.forever = None

    def request_count(self, api_key: str | None = None) -> int:
        """Requests answered so far, all or for one key."""
        with self._lock:
            if api_key is None:
                return len(self.requests)
            wanted = fingerprint(api_key)
            return sum(1 for r in self.requests if r.key_fingerprint == wanted)

    # -- serving -------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._serve(handler)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _serve(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        # Read the whole request first: an unread body would poison the kept-alive connection.
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if self.on_request is not None:
            self.on_request(url.path.removeprefix(API_PREFIX), query)
        auth = handler.headers.get("Authorization", "")
        api_key = auth[7:].strip() if auth.startswith("Bearer ") else None
        with self._lock:
            key = self._keys.get(api_key) if api_key else None
            fault = None
            if key is not None:
                fault = key.faults.popleft() if key.faults else key.forever
        delay = self.latency + (fault.delay if fault else 0.0)
        if delay > 0:
            self._stopping.wait(delay)
        headers: dict[str, str] = {}
        if fault is not None and not (fault.status == 200 and fault.body is None):
            status = fault.status
            body = fault.body if fault.body is not None else _error(status)
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            if fault.location is not None:
                headers["Location"] = fault.location
        else:
            status, body, extra = self._route(raw, url.path, query, key)
            headers.update(extra)
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    path=url.path,
                    query=query,
                    status=status,
                    key_fingerprint=fingerprint(api_key) if api_key else None,
                )
            )
        with contextlib.suppress(OSError):  # the client may have given up (timeout)
            trickle = fault.trickle if fault is not None else 0.0
            handler._answer(status, body, headers, trickle=trickle, stopping=self._stopping)

    def _route(
        self, raw: bytes, path: str, query: dict[str, str], key: _Key | None
    ) -> tuple[int, str, dict[str, str]]:
        endpoint = path.removeprefix(API_PREFIX)
        if key is None:
            status = 401 if endpoint in (*_ENDPOINTS, "/key") else 404
            return status, _error(status), {}
        if endpoint == "/key":
            return 200, dumps({"data": self._key_info(key)}), {}
        if endpoint not in _ENDPOINTS:
            return 404, _error(404), {}
        if not key.management:
            return 403, _error(403), {}
        account = key.account
        if endpoint == "/activity":
            return (*self._activity(key, query), {})
        if endpoint == "/analytics/query":
            body = json.loads(raw or b"{}")
            if account is None:
                account = FakeAccount(keys=[], unattributed=key.rows)
            return account.analytics(body)
        if account is None:  # a management key without an account: nothing more to list
            account = FakeAccount(keys=[], unattributed=key.rows)
        if endpoint == "/keys":
            return 200, dumps({"data": account.list_keys(query)}), {}
        if endpoint == "/credits":
            return 200, dumps({"data": account.credits()}), {}
        # /workspaces
        if account.workspaces is None:
            return 403, _error(403), {}
        offset, limit = int(query.get("offset") or 0), int(query.get("limit") or 50)
        page = [{"id": w, "name": f"workspace {w[:8]}"} for w in account.workspaces]
        body_out = {"data": page[offset : offset + limit], "total_count": len(page)}
        return 200, dumps(body_out), {}

    def _activity(self, key: _Key, query: dict[str, str]) -> tuple[int, str]:
        first, last = completed_window(self.today)
        wanted: dt.date | None = None
        if "date" in query:
            text = query["date"]
            try:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                    raise ValueError(text)
                wanted = dt.date.fromisoformat(text)
            except ValueError:
                return 400, _error(400, "Invalid date format: use YYYY-MM-DD")
            if not first <= wanted <= last:
                return 400, _error(400, "Date must be within the last 30 (completed) UTC days")
        if key.account is not None:
            hash_ = query.get("api_key_hash")
            return 200, dumps({"data": key.account.activity(self.today, wanted, hash_)})
        if query.get("api_key_hash"):
            return 200, dumps({"data": []})  # no account: no key of it to narrow to
        with self._lock:
            rows = list(key.rows)
        selected = []
        for row in rows:
            day = _row_day(row)
            if day is None:  # a deliberately broken row: pass it on, the client must reject it
                selected.append(row)
            elif (day == wanted) if wanted is not None else (first <= day <= last):
                selected.append(row)
        return 200, dumps({"data": selected})

    def _key_info(self, key: _Key) -> dict[str, Any]:
        if key.listed is not None:
            figures = listing(key.listed)
            return {**figures, "is_management_key": False, "is_provisioning_key": False,
                    "is_free_tier": False}  # fmt: skip
        with self._lock:
            rows = list(key.rows)
        usage = sum(
            (
                Decimal(str(r.get("usage", 0)))
                for r in rows
                if isinstance(r.get("usage"), int | Decimal | str)
            ),
            Decimal(0),
        )
        byok = sum(
            (
                Decimal(str(r.get("byok_usage_inference", 0)))
                for r in rows
                if isinstance(r.get("byok_usage_inference"), int | Decimal | str)
            ),
            Decimal(0),
        )
        return {
            "label": key.label,
            "limit": key.limit,
            "limit_remaining": None if key.limit is None else key.limit - usage,
            "limit_reset": None if key.limit is None else "monthly",
            "usage": usage,
            "usage_daily": Decimal(0),
            "usage_weekly": Decimal(0),
            "usage_monthly": usage,
            "byok_usage": byok,
            "byok_usage_daily": Decimal(0),
            "byok_usage_weekly": Decimal(0),
            "byok_usage_monthly": byok,
            "is_free_tier": False,
            "is_management_key": key.management,
            "is_provisioning_key": key.management,
            "include_byok_in_limit": False,
            "creator_user_id": "user_fake0000000000000000000",
            "expires_at": None,
            "rate_limit": {
                "requests": -1,
                "interval": "10s",
                "note": "This field is deprecated and safe to ignore.",
            },
        }


# --- command line ---------------------------------------------------------------------------


def load_keys_file(fake: FakeOpenRouter, path: Path) -> None:
    """Register the keys of a JSON file ``{key: {"management": bool, "days": int, "models":
    int | [slugs], "endpoints": int, "seed": int, "label": str, "rows": [...],
    "fail_forever": {Fault fields}, "faults": [{Fault fields}, ...]}}`` (all optional)."""
    spec = json.loads(path.read_text(), parse_float=Decimal)
    for api_key, options in spec.items():
        rows = options.get("rows")
        if rows is None:
            rows = generate_activity(
                today=fake.today,
                days=options.get("days", 30),
                models=options.get("models", 5),
                endpoints=options.get("endpoints", 1),
                seed=options.get("seed", 0),
            )
        fake.add_key(
            api_key,
            management=options.get("management", True),
            label=options.get("label"),
            rows=rows,
        )
        names = {f.name for f in dataclasses.fields(Fault)}
        if "fail_forever" in options:
            fake.fail_forever(
                api_key, Fault(**{k: v for k, v in options["fail_forever"].items() if k in names})
            )
        for fault in options.get("faults", []):
            fake.inject(api_key, Fault(**{k: v for k, v in fault.items() if k in names}))


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print the base URL on the first line of stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.testing.fake_openrouter",
        description="A fake OpenRouter API on 127.0.0.1.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--keys-file", type=Path, help="JSON file of keys and their data")
    parser.add_argument(
        "--today",
        type=dt.date.fromisoformat,
        help="the UTC date the 30-day window ends before (default: today)",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per answer")
    args = parser.parse_args(argv)
    fake = FakeOpenRouter(host=args.host, port=args.port, today=args.today, latency=args.latency)
    if args.keys_file:
        load_keys_file(fake, args.keys_file)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with fake:
        print(fake.base_url, flush=True)
        while not done.wait(0.5):  # a timed wait keeps the signal handler responsive
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
