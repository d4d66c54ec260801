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
import contextlib
import dataclasses
import datetime as dt
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from worker.core.days import utc_today
from worker.testing.activity_data import generate_activity
from worker.testing.fake_account import FakeAccount
from worker.testing.fake_answers import FakeKey, answer, change_key
from worker.testing.fake_http import (
    API_PREFIX,
    Fault,
    Handler,
    RecordedRequest,
    Server,
    error_body,
    fingerprint,
)

__all__ = ["FakeOpenRouter", "Fault", "RecordedRequest", "fingerprint", "load_keys_file", "main"]


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
        self._keys: dict[str, FakeKey] = {}
        self._change_fault: Fault | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Server | None = None
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
        server = Server((self.host, self.port), Handler)
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
            self._keys[api_key] = FakeKey(
                management=management, label=shown, limit=limit, rows=list(rows or [])
            )

    def add_account(self, management_key: str, account: FakeAccount) -> FakeAccount:
        """Register a management key for ``account``, and each of its keys that has a
        ``secret`` as an ordinary key (``/key`` answers with its label and figures)."""
        with self._lock:
            self._keys[management_key] = FakeKey(
                management=True,
                label=f"{management_key[:11]}...{management_key[-3:]}",
                limit=None,
                rows=[],
                account=account,
            )
            for listed in account.keys:
                if listed.secret is not None:
                    self._keys[listed.secret] = FakeKey(
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

    def fail_changes(self, fault: Fault | None) -> None:
        """Answer every ``PATCH /keys/{hash}`` with ``fault`` (None: change keys again)."""
        with self._lock:
            self._change_fault = fault

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

    def _handle(self, handler: Handler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._serve(handler)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _serve(self, handler: Handler) -> None:
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
            body = fault.body if fault.body is not None else error_body(status)
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            if fault.location is not None:
                headers["Location"] = fault.location
        else:
            status, body, extra = self._route(raw, handler.command, url.path, query, key)
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
        self, raw: bytes, method: str, path: str, query: dict[str, str], key: FakeKey | None
    ) -> tuple[int, str, dict[str, str]]:
        rows: list[dict[str, Any]] = []
        if key is not None:
            with self._lock:
                rows = list(key.rows)
        if method == "PATCH":
            with self._lock:  # a change is applied whole, never beside a listing
                fault = self._change_fault
                if fault is not None:
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    return fault.status, fault.body or error_body(fault.status), headers
                return change_key(raw, path, key)
        return answer(raw, path, query, key, self.today, rows)


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
