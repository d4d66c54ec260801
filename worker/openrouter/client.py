"""The OpenRouter API client: one ``httpx.Client``, typed results, typed errors, retries.

One :class:`OpenRouterClient` serves a whole run from any number of threads: keep-alive
connections, the ``User-Agent`` and attribution headers, the proxy and CA bundle from the
environment (httpx's ``trust_env``), and a :class:`~worker.openrouter.retry.RetryPolicy`.
Each calling thread gets an ``httpx.Client`` of its own (all sharing one TLS context): one pool
shared by 32 threads spent more CPU on its lock than on the requests (``make bench``).

Every request is bounded as a whole: ``[openrouter] request_deadline`` covers every attempt,
every wait and every byte of the answer (a server that trickles its answer one byte at a time
is cut off), and an answer larger than ``[openrouter] max_response_bytes`` is refused without
being held in memory. Redirects are not followed: the key must never be sent anywhere else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

import worker
from worker.config import OpenRouterSettings
from worker.days import completed_window, utc_now
from worker.errors import (
    BadRequestError,
    InvalidResponseError,
    NotManagementKeyError,
    OpenRouterError,
    RateLimitedError,
    UnauthorizedError,
    UpstreamUnavailableError,
)
from worker.logs import get_logger, mask_key_like, mask_text
from worker.openrouter.activity import ActivityRow, parse_activity
from worker.openrouter.keys import KeyInfo, parse_key
from worker.openrouter.retry import RETRY_STATUSES, RetryPolicy, is_transient, parse_retry_after

USER_AGENT = f"openrouter-watcher/{worker.__version__}"
MANAGEMENT_KEY_HELP = (
    "per-model history needs a management key: create one in OpenRouter under "
    "Settings → Management Keys (https://openrouter.ai/settings/management-keys) "
    "and register that key instead"
)

_log = get_logger(__name__)


@dataclass(frozen=True)
class Activity:
    """A validated ``/activity`` answer (or one found identical to a known one)."""

    rows: list[ActivityRow]  # exact duplicates counted once; [] when ``unchanged``
    window: tuple[dt.date, dt.date]  # OpenRouter's window by our clock when the answer arrived
    day: dt.date | None  # the day asked for with ``date=``, or None for the whole window
    digest: str  # SHA-256 of the window and the body: equal digests, the same answer
    body_digest: str  # SHA-256 of the body alone: the same answer on another day
    requests: int  # HTTP requests sent for this call, retries included
    unchanged: bool = False  # the digest was the one given: the rows were not parsed again


class _DeadlineExceeded(Exception):
    """The request's deadline passed while the answer was still arriving."""


class _TooLarge(Exception):
    """The answer is larger than ``max_response_bytes``."""


class _Request:
    """One logical request: its attempts share a start time, a counter and the key."""

    __slots__ = ("api_key", "path", "sent", "start")

    def __init__(self, path: str, api_key: str, start: float) -> None:
        self.path = path
        self.api_key = api_key
        self.start = start
        self.sent = 0


class _Answer:
    """A final HTTP answer, its body read in full."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: httpx.Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class OpenRouterClient:
    """OpenRouter API client; thread-safe. The key is passed per call and sent only in the
    ``Authorization`` header."""

    def __init__(
        self,
        settings: OpenRouterSettings,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.retry = retry or RetryPolicy.from_settings(settings)
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self.requests_made = 0
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if settings.http_referer:
            headers["HTTP-Referer"] = settings.http_referer
        if settings.x_title:
            headers["X-Title"] = settings.x_title
        self._headers = headers
        self._transport = transport
        self._local = threading.local()
        self._clients: list[httpx.Client] = []

    def __enter__(self) -> OpenRouterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every thread's connections."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def _http(self) -> httpx.Client:
        """This thread's ``httpx.Client``, created on its first request."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                base_url=self.settings.base_url.rstrip("/") + "/",
                headers=self._headers,
                transport=self._transport,
                verify=_tls_context(),
                follow_redirects=False,
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    # -- endpoints ---------------------------------------------------------------------------

    def get_key(self, api_key: str) -> KeyInfo:
        """``GET /key``: what OpenRouter knows about this key (management or not, limits)."""
        answer, sent = self._get("key", api_key, params=None)
        with _counting(sent):
            return parse_key(answer.text)

    def get_activity(
        self, api_key: str, *, day: dt.date | None = None, unless_digest: str | None = None
    ) -> Activity:
        """``GET /activity``: the whole 30-day window, or one ``day`` (``?date=YYYY-MM-DD``).

        Validated against the window by our clock when the answer arrived (a run may cross
        midnight): every row must lie in it, and on ``day`` when one was asked for. An answer
        whose digest is ``unless_digest`` (the one last stored) is the same answer again: it
        is returned ``unchanged``, without parsing it (most of a re-sync's cost).
        """
        params = {"date": day.isoformat()} if day is not None else None
        answer, sent = self._get("activity", api_key, params=params)
        window = completed_window(self._wall_clock().date())
        body_digest = hashlib.sha256(answer.body).hexdigest()
        scope = f"{window[0]}..{window[1]} {day or 'window'} {body_digest}"
        digest = hashlib.sha256(scope.encode()).hexdigest()
        if digest == unless_digest:
            return Activity([], window, day, digest, body_digest, sent, unchanged=True)
        with _counting(sent):
            rows = parse_activity(answer.text, window=window, day=day)
        return Activity(rows, window, day, digest, body_digest, sent)

    # -- transport and retries ---------------------------------------------------------------

    def _get(
        self, path: str, api_key: str, params: Mapping[str, str] | None
    ) -> tuple[_Answer, int]:
        """GET with retries; the 200 answer and the attempts it took, or the typed error."""
        request = _Request("/" + path, api_key, self._clock())
        try:
            return self._get_with_retries(request, params), request.sent
        except OpenRouterError as exc:
            exc.requests = request.sent
            raise

    def _get_with_retries(self, request: _Request, params: Mapping[str, str] | None) -> _Answer:
        headers = {"Authorization": f"Bearer {request.api_key}"}
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient)
            | tenacity.retry_if_result(lambda answer: answer.status in RETRY_STATUSES),
            wait=self._wait,
            stop=lambda rs: self.retry.gives_up(
                rs.attempt_number, self._clock() - request.start, rs.upcoming_sleep
            ),
            sleep=self._sleep,
            before_sleep=lambda rs: self._log_retry(rs, request),
            retry_error_callback=lambda rs: rs.outcome,
        )
        try:
            outcome = retrying(self._attempt, request, headers, params)
        except _DeadlineExceeded:
            raise UpstreamUnavailableError(
                f"OpenRouter {request.path} did not finish its answer within "
                f"{self.retry.deadline:g} s ([openrouter] request_deadline); try again later"
            ) from None
        except _TooLarge:
            raise InvalidResponseError(
                f"invalid {request.path} response: larger than "
                f"{self.settings.max_response_bytes} bytes ([openrouter] max_response_bytes)"
            ) from None
        except httpx.HTTPError as exc:  # not transient (e.g. a malformed URL): no retry
            raise UpstreamUnavailableError(
                f"cannot call OpenRouter {request.path} ({type(exc).__name__}): "
                "check [openrouter] base_url"
            ) from exc
        if isinstance(outcome, _Answer):
            return self._check(outcome, request)
        # Retries exhausted: tenacity handed back the last attempt's future.
        try:
            last = outcome.result()
        except httpx.TimeoutException as exc:
            raise UpstreamUnavailableError(
                f"OpenRouter {request.path} timed out after {request.sent} attempt(s) "
                f"({type(exc).__name__}); try again later"
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailableError(
                f"cannot reach OpenRouter {request.path} after {request.sent} attempt(s) "
                f"({type(exc).__name__}): check [openrouter] base_url and the network"
            ) from exc
        return self._check(last, request)

    def _attempt(
        self, request: _Request, headers: dict[str, str], params: Mapping[str, str] | None
    ) -> _Answer:
        """One HTTP exchange, the body read in chunks against the deadline and the size cap."""
        settings = self.settings
        remaining = self.retry.deadline - (self._clock() - request.start)
        timeout = httpx.Timeout(
            max(0.1, min(settings.read_timeout, remaining)),
            connect=max(0.1, min(settings.connect_timeout, remaining)),
        )
        request.sent += 1
        with self._lock:
            self.requests_made += 1
        with self._http().stream(
            "GET", request.path[1:], params=params, headers=headers, timeout=timeout
        ) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > settings.max_response_bytes:
                    raise _TooLarge
                if self._clock() - request.start > self.retry.deadline:
                    raise _DeadlineExceeded
                chunks.append(chunk)
        return _Answer(response.status_code, response.headers, b"".join(chunks))

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        outcome = rs.outcome
        retry_after = None
        if outcome is not None and not outcome.failed:
            answer: _Answer = outcome.result()
            retry_after = parse_retry_after(answer.headers.get("Retry-After"), self._wall_clock())
        return self.retry.wait(rs.attempt_number, retry_after)

    def _log_retry(self, rs: tenacity.RetryCallState, request: _Request) -> None:
        outcome = rs.outcome
        fields: dict[str, Any] = {
            "path": request.path,
            "attempt": rs.attempt_number,
            "wait": round(rs.upcoming_sleep, 3),
        }
        if outcome is not None and outcome.failed:
            fields["error"] = type(outcome.exception()).__name__
        elif outcome is not None:
            fields["status"] = outcome.result().status
        _log.warning("openrouter_retry", **fields)

    def _check(self, answer: _Answer, request: _Request) -> _Answer:
        """The final answer itself (200) or its typed error."""
        status = answer.status
        if status == 200:
            return answer
        said = _error_message(answer.text, request.api_key)
        detail = f"{status}: {said}" if said else str(status)
        path = request.path
        if status == 401:
            raise UnauthorizedError(
                f"OpenRouter rejected the key on {path} ({detail}): it is wrong, expired, "
                "disabled or deleted"
            )
        if status == 403:
            raise NotManagementKeyError(
                f"OpenRouter refused {path} ({detail}): {MANAGEMENT_KEY_HELP}"
            )
        if status == 400:
            raise BadRequestError(f"OpenRouter rejected the request to {path} ({detail})")
        if status == 429:
            raise RateLimitedError(
                f"OpenRouter kept rate limiting {path} ({detail}) after {request.sent} "
                "attempt(s); try again later"
            )
        if status == 404:
            raise UpstreamUnavailableError(
                f"OpenRouter has no {path} ({detail}): check [openrouter] base_url "
                f"({self.settings.base_url})"
            )
        if status in RETRY_STATUSES:
            raise UpstreamUnavailableError(
                f"OpenRouter {path} kept failing ({detail}) after {request.sent} attempt(s); "
                "try again later"
            )
        raise UpstreamUnavailableError(f"unexpected answer from OpenRouter {path} ({detail})")


@contextlib.contextmanager
def _counting(sent: int) -> Iterator[None]:
    """An error raised inside (an invalid answer) carries the requests the call made."""
    try:
        yield
    except OpenRouterError as exc:
        exc.requests = sent
        raise


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, or ``SSL_CERT_FILE``), built once per
    process: loading the CA bundle costs tens of milliseconds, and a context is safe to share
    between clients and threads."""
    return httpx.create_ssl_context()


def _error_message(text: str, api_key: str) -> str:
    """OpenRouter's own error message (``{"error": {"message": …}}``), masked, or ''."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        return ""
    message = " ".join(message.split())
    if api_key:
        message = message.replace(api_key, "[REDACTED]")
    # A key echoed without its sk-or- prefix, or another secret-looking token, is masked too.
    return mask_key_like(mask_text(message))[:200]
