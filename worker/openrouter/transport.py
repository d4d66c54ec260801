"""HTTP to OpenRouter: requests with retries, bounded as a whole, and typed errors.

Each calling thread gets an ``httpx.Client`` of its own, all sharing one TLS context: one pool
shared by 32 threads spent more CPU on its lock than on the requests (``make bench``). The
proxy and CA bundle come from the environment (httpx's ``trust_env``).

Every request is bounded as a whole: ``[openrouter] request_deadline`` covers every attempt,
every wait and every byte of the answer (a server that trickles its answer one byte at a time
is cut off), and an answer larger than ``[openrouter] max_response_bytes`` is refused without
being held in memory. Redirects are not followed: the key must never be sent anywhere else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import httpx
import tenacity

from worker.config import OpenRouterSettings
from worker.core.errors import (
    BadRequestError,
    EndpointNotFoundError,
    InvalidResponseError,
    NotManagementKeyError,
    OpenRouterError,
    RateLimitedError,
    UnauthorizedError,
    UpstreamUnavailableError,
)
from worker.core.logs import get_logger, mask_key_like, mask_text
from worker.openrouter.pacing import Pace
from worker.openrouter.retry import RETRY_STATUSES, RetryPolicy, is_transient, parse_retry_after

MANAGEMENT_KEY_HELP = (
    "per-model history needs a management key: create one in OpenRouter under "
    "Settings → Management Keys (https://openrouter.ai/settings/management-keys) "
    "and register that key instead"
)

_log = get_logger("worker.openrouter")


class _DeadlineExceeded(Exception):
    """The request's deadline passed while the answer was still arriving."""


class _TooLarge(Exception):
    """The answer is larger than ``max_response_bytes``."""


class _Request:
    """One logical request: its attempts share a start time, a counter and the key."""

    __slots__ = (
        "api_key",
        "body",
        "limited_since",
        "method",
        "pace",
        "params",
        "path",
        "retry_statuses",
        "sent",
        "start",
    )

    def __init__(
        self,
        method: str,
        path: str,
        api_key: str,
        start: float,
        params: Mapping[str, str] | None,
        body: Any,
        pace: Pace | None,
        retry_statuses: frozenset[int],
    ) -> None:
        self.method = method
        self.retry_statuses = retry_statuses
        self.path = path
        self.api_key = api_key
        self.start = start
        self.params = params
        self.body = body
        self.pace = pace
        self.sent = 0
        self.limited_since: float | None = None  # when a paced request was first answered 429


class Observer(Protocol):
    """What the transport tells whoever counts its requests (the daemon's Prometheus counters):
    handed to the client, so the client imports nothing of theirs."""

    def request(self, endpoint: str, status: int | None) -> None:
        """One HTTP exchange with ``endpoint`` (``/activity``, …) answered ``status``, or with
        no answer at all (None)."""

    def retry(self, endpoint: str, status: int | None) -> None:
        """One retry, caused by an answer with ``status`` or by no answer (None)."""


class Answer:
    """A final HTTP answer (200), its body read in full."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: httpx.Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Transport:
    """Requests to OpenRouter for every thread of a run, with counters for progress and
    metrics: attempts sent, retries, and seconds spent waiting for a rate limit."""

    def __init__(
        self,
        settings: OpenRouterSettings,
        headers: dict[str, str],
        *,
        retry: RetryPolicy,
        transport: httpx.BaseTransport | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        wall_clock: Callable[[], dt.datetime],
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self._observer = observer
        self.retry = retry
        self._headers = headers
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self.requests_made = 0
        self.rate_limit_seconds = 0.0

    @property
    def thread_requests(self) -> int:
        """Requests sent so far by the calling thread (a task's own count, whatever the
        other threads send meanwhile)."""
        return int(getattr(self._local, "requests", 0))

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

    def request(
        self,
        method: str,
        path: str,
        api_key: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        pace: Pace | None = None,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
    ) -> tuple[Answer, int]:
        """One request with its retries: the 200 answer and the attempts it took, or the
        typed error (which carries the attempts too). ``pace`` spaces every attempt out;
        ``retry_statuses``: the answers worth another attempt (a change: 429 and 5xx only)."""
        request = _Request(
            method, "/" + path, api_key, self._clock(), params, body, pace, retry_statuses
        )
        try:
            return self._with_retries(request), request.sent
        except OpenRouterError as exc:
            exc.requests = request.sent
            raise

    def _with_retries(self, request: _Request) -> Answer:
        headers = {"Authorization": f"Bearer {request.api_key}"}
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient)
            | tenacity.retry_if_result(lambda answer: answer.status in request.retry_statuses),
            wait=self._wait,
            stop=lambda rs: self._gives_up(rs, request),
            sleep=self._sleep,
            before_sleep=lambda rs: self._log_retry(rs, request),
            retry_error_callback=lambda rs: rs.outcome,
        )
        try:
            outcome = retrying(self._attempt, request, headers)
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
        if isinstance(outcome, Answer):
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

    def _attempt(self, request: _Request, headers: dict[str, str]) -> Answer:
        """One HTTP exchange, the body read in chunks against the deadline and the size cap."""
        settings = self.settings
        if request.pace is not None:
            waited = request.pace.acquire()
            with self._lock:
                self.rate_limit_seconds += waited
        remaining = self.retry.deadline - (self._clock() - request.start)
        timeout = httpx.Timeout(
            max(0.1, min(settings.read_timeout, remaining)),
            connect=max(0.1, min(settings.connect_timeout, remaining)),
        )
        request.sent += 1
        self._local.requests = getattr(self._local, "requests", 0) + 1
        with self._lock:
            self.requests_made += 1
        answered = False
        try:
            with self._http().stream(
                request.method,
                request.path[1:],
                params=request.params,
                json=request.body,
                headers=headers,
                timeout=timeout,
            ) as response:
                answered = True
                if self._observer is not None:
                    self._observer.request(request.path, response.status_code)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > settings.max_response_bytes:
                        raise _TooLarge
                    if self._clock() - request.start > self.retry.deadline:
                        raise _DeadlineExceeded
                    chunks.append(chunk)
        except httpx.TransportError:
            if not answered and self._observer is not None:
                self._observer.request(request.path, None)  # no answer at all
            raise
        return Answer(response.status_code, response.headers, b"".join(chunks))

    def _gives_up(self, rs: tenacity.RetryCallState, request: _Request) -> bool:
        now = self._clock()
        outcome = rs.outcome
        limited = outcome is not None and not outcome.failed and outcome.result().status == 429
        limited_for = None
        if limited and request.pace is not None and request.pace.waits_out:
            if request.limited_since is None:
                request.limited_since = now
            limited_for = now - request.limited_since
        return self.retry.gives_up(
            rs.attempt_number,
            now - request.start,
            rs.upcoming_sleep,
            limited_for=limited_for,
            window=request.pace.period if request.pace is not None else None,
        )

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        outcome = rs.outcome
        retry_after = None
        if outcome is not None and not outcome.failed:
            answer: Answer = outcome.result()
            retry_after = parse_retry_after(answer.headers.get("Retry-After"), self._wall_clock())
        return self.retry.wait(rs.attempt_number, retry_after)

    def _log_retry(self, rs: tenacity.RetryCallState, request: _Request) -> None:
        outcome = rs.outcome
        if outcome is not None and not outcome.failed and outcome.result().status == 429:
            with self._lock:
                self.rate_limit_seconds += rs.upcoming_sleep
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
        if self._observer is not None:
            self._observer.retry(request.path, fields.get("status"))

    def _check(self, answer: Answer, request: _Request) -> Answer:
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
            raise EndpointNotFoundError(
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
def counting(sent: int) -> Iterator[None]:
    """An error raised inside (an invalid answer) carries the requests the call made."""
    try:
        yield
    except OpenRouterError as exc:
        exc.requests = sent
        raise


_TLS_LOCK = threading.Lock()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, or ``SSL_CERT_FILE``), built once per
    process: loading the CA bundle costs tens of milliseconds, and a context is safe to share
    between clients and threads. The lock makes it once indeed: ``functools.cache`` alone let
    the 32 threads of a first run build 25 of them at once (0.75 s of CPU, ``make bench``)."""
    with _TLS_LOCK:
        return _built_tls_context()


@functools.cache
def _built_tls_context() -> ssl.SSLContext:
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
