"""Typed httpx client for OpenRouter's ``/activity`` and ``/key``, and its retry policy.

One :class:`OpenRouterClient` serves a whole run: one connection pool (keep-alive), the
``User-Agent`` and attribution headers, and a tenacity retry policy for connect errors,
timeouts, 429 and 5xx (``Retry-After`` honoured, otherwise exponential backoff with jitter),
bounded by both an attempt count and a total deadline per request.

Every response is validated against OpenRouter's contract (``ActivityItem``) before anything
downstream sees it: money is parsed as :class:`~decimal.Decimal` straight from the JSON text,
and a row that breaks the contract rejects the whole response with an error naming the row and
field. Nothing is coerced.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import random
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

import httpx
import tenacity

import worker
from worker.config import OpenRouterSettings
from worker.errors import (
    BadRequestError,
    InvalidResponseError,
    NotManagementKeyError,
    RateLimitedError,
    UnauthorizedError,
    UpstreamUnavailableError,
)
from worker.logs import get_logger, mask_text

USER_AGENT = f"openrouter-watcher/{worker.__version__}"
MAX_MODEL_LENGTH = 100  # usage_stats.model column
WINDOW_DAYS = 30  # OpenRouter reports the last 30 completed UTC days
# usage_stats.cost is Numeric(18, 9): 9 decimals, 9 integer digits.
MONEY_DECIMALS = 9
MONEY_LIMIT = Decimal(10) ** (18 - MONEY_DECIMALS)
MANAGEMENT_KEY_HELP = (
    "per-model history needs a management key: create one in OpenRouter under "
    "Settings → Management Keys (https://openrouter.ai/settings/management-keys) "
    "and register that key instead"
)

_log = get_logger(__name__)

# "2026-04-22" or "2026-04-22 00:00:00" (also ISO 'T', fractions, Z/+00:00): the day is the
# first ten characters. A non-UTC offset would move the day, so it is not accepted.
_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]00:?00)?)?")
_COUNT_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens")
_MONEY_FIELDS = ("usage", "byok_usage_inference")
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


_tls_lock = threading.Lock()
_tls_context: ssl.SSLContext | None = None


def shared_tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs), built once per process.

    Building it loads the CA bundle: about 18 ms of CPU per client, which made a run's start
    cost grow with ``[sync] concurrency`` (one client per worker thread). An SSLContext is
    safe to share between clients and threads.
    """
    global _tls_context
    with _tls_lock:
        if _tls_context is None:
            _tls_context = httpx.create_ssl_context()
        return _tls_context


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the standard environment variables name for ``url``, or None.

    ``HTTPS_PROXY`` / ``HTTP_PROXY`` by the URL's scheme, else ``ALL_PROXY`` (lower-case
    spellings too), unless ``NO_PROXY`` covers the host: what an ``httpx.Client`` reads.
    """
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(url.host):
        return None
    return proxies.get(url.scheme) or proxies.get("all")


def utc_today() -> dt.date:
    """Today's date in UTC (OpenRouter's days are UTC days)."""
    return dt.datetime.now(dt.UTC).date()


def completed_window(today: dt.date) -> tuple[dt.date, dt.date]:
    """The last 30 completed UTC days before ``today``, as an inclusive (first, last) pair."""
    return today - dt.timedelta(days=WINDOW_DAYS), today - dt.timedelta(days=1)


class ActivityRow(NamedTuple):
    """One validated ``/activity`` item: one (date, model, endpoint) with its counts and cost.

    A NamedTuple rather than a frozen dataclass: a frozen dataclass's ``__init__`` sets each
    field through ``object.__setattr__`` (about 1 µs a row, measured), and a large account
    answers with tens of thousands of rows per sync.
    """

    date: dt.date
    model: str
    endpoint_id: str
    provider_name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    usage: Decimal
    byok_usage_inference: Decimal


@dataclass(frozen=True)
class ActivityResult:
    """The rows of one ``get_activity`` call and what it cost in HTTP requests."""

    rows: list[ActivityRow]  # validated; exact duplicate rows removed (counted once)
    requests_made: int  # HTTP requests sent for this call, retries included


@dataclass(frozen=True)
class ActivityAnswer:
    """An ``/activity`` answer (HTTP 200) before validation: :meth:`parse` validates it.

    The sync compares :meth:`digest` with the digest of the last answer it stored for the key,
    and skips validating and storing an identical answer (see :mod:`worker.sync`).
    """

    text: str
    requests_made: int  # HTTP requests sent for this call, retries included
    today: dt.date
    day: dt.date | None = None

    def digest(self) -> str:
        """SHA-256 of the window asked for and the body: equal digests, equal rows."""
        first, last = completed_window(self.today)
        scope = f"{first}..{last} {self.day or 'window'}\n"
        return hashlib.sha256(scope.encode() + self.text.encode()).hexdigest()

    def parse(self) -> ActivityResult:
        """Validate the body (:func:`parse_activity`); raise :class:`InvalidResponseError`."""
        rows = parse_activity(self.text, today=self.today, day=self.day)
        return ActivityResult(rows=rows, requests_made=self.requests_made)


@dataclass(frozen=True)
class KeyInfo:
    """What ``GET /key`` says about the key used for the call."""

    is_management_key: bool
    label: str
    limit: Decimal | None
    limit_remaining: Decimal | None
    usage: Decimal


class _Invalid(Exception):
    """A contract violation inside one row; the caller adds the row index."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem


def _show(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message."""
    text = mask_text(
        json.dumps(value, default=str) if not isinstance(value, Decimal) else str(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser would accept them as floats.
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_json(text: str) -> Any:
    """JSON with every non-integer number as an exact Decimal (never through binary float)."""
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def _count(item: Mapping[str, Any], field: str) -> int:
    value = item[field]
    # bool is an int subclass in Python but not an integer in JSON.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(field, f"must be a non-negative integer, got {_show(value)}")
    return value


def _money_or_none(item: Mapping[str, Any], field: str) -> Decimal | None:
    return None if item[field] is None else _money(item, field)


def _money(item: Mapping[str, Any], field: str) -> Decimal:
    value = item[field]
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _Invalid(field, f"must be a JSON number, got {_show(value)}")
    amount = Decimal(value)
    if amount < 0:
        raise _Invalid(field, f"must not be negative, got {_show(value)}")
    if amount >= MONEY_LIMIT:
        raise _Invalid(field, f"must be below {MONEY_LIMIT} USD, got {_show(value)}")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_DECIMALS:
        # The column keeps 9 decimals: storing more would round silently.
        raise _Invalid(field, f"has more than {MONEY_DECIMALS} decimals, got {_show(value)}")
    return amount


def _string(item: Mapping[str, Any], field: str) -> str:
    value = item[field]
    if not isinstance(value, str):
        raise _Invalid(field, f"must be a string, got {_show(value)}")
    return value


def _day(item: Mapping[str, Any]) -> dt.date:
    value = item["date"]
    match = _DATE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _Invalid("date", f"must be a YYYY-MM-DD date, got {_show(value)}")
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        raise _Invalid("date", f"is not a calendar date, got {_show(value)}") from None


def _window_day(
    item: Mapping[str, Any], first: dt.date, last: dt.date, day: dt.date | None
) -> dt.date:
    """The row's day, which must lie in the window (and be ``day`` when one was requested)."""
    date = _day(item)
    if day is not None and date != day:
        raise _Invalid("date", f"must be the requested day {day}, got {_show(item['date'])}")
    if not first <= date <= last:
        raise _Invalid("date", f"must lie in the window {first}..{last}, got {_show(item['date'])}")
    return date


_REQUIRED = ("date", "model", "endpoint_id", "provider_name", *_COUNT_FIELDS, *_MONEY_FIELDS)
_NANO = Decimal(1).scaleb(-MONEY_DECIMALS)


def _fast_money(value: Any) -> Decimal | None:
    """``value`` as money if it plainly is (a JSON number in range, at most 9 decimals), else
    None. The same rule as :func:`_money`, tested without ``normalize()``: a value with at
    most 9 decimals is unchanged by quantizing to 9 decimals (and 0.300000000000 passes, as
    there). Quantizing is safe after the range test: below 10**9 it needs at most 18 digits.
    """
    if type(value) is Decimal:
        if 0 <= value < MONEY_LIMIT and value.quantize(_NANO) == value:
            return value
    elif type(value) is int and 0 <= value < MONEY_LIMIT:
        return Decimal(value)
    return None


def _fast_activity_row(
    item: Any, days: dict[str, dt.date], first: dt.date, last: dt.date, day: dt.date | None
) -> ActivityRow | None:
    """The common case of :func:`_activity_row` in one pass of inline type tests, or None.

    None means "something is unusual": the caller then runs :func:`_activity_row`, whose
    detailed checks (and error messages naming the field) are the only ones that reject a
    row. So this must accept exactly a subset of what :func:`_activity_row` accepts, and
    return the same row. ``days`` caches the date strings already validated in this
    response (a 30-day answer repeats a few dozen spellings over thousands of rows).
    ``type(x) is int`` also keeps bool out, as JSON wants.
    """
    if type(item) is not dict:
        return None
    try:
        raw_date = item["date"]
        model = item["model"]
        endpoint_id = item["endpoint_id"]
        provider_name = item["provider_name"]
        requests = item["requests"]
        prompt_tokens = item["prompt_tokens"]
        completion_tokens = item["completion_tokens"]
        reasoning_tokens = item["reasoning_tokens"]
        usage = _fast_money(item["usage"])
        byok = _fast_money(item["byok_usage_inference"])
    except KeyError:
        return None
    if type(raw_date) is not str:
        return None
    date = days.get(raw_date)
    if date is None:
        try:
            date = days[raw_date] = _window_day(item, first, last, day)
        except _Invalid:
            return None
    permaslug = item.get("model_permaslug")
    if (
        type(model) is str
        and 0 < len(model) <= MAX_MODEL_LENGTH
        and (permaslug is None or type(permaslug) is str)
        and type(endpoint_id) is str
        and type(provider_name) is str
        and type(requests) is int
        and requests >= 0
        and type(prompt_tokens) is int
        and prompt_tokens >= 0
        and type(completion_tokens) is int
        and completion_tokens >= 0
        and type(reasoning_tokens) is int
        and reasoning_tokens >= 0
        and usage is not None
        and byok is not None
    ):
        return ActivityRow(
            date,
            model,
            endpoint_id,
            provider_name,
            requests,
            prompt_tokens,
            completion_tokens,
            reasoning_tokens,
            usage,
            byok,
        )
    return None


def _activity_row(item: Any, first: dt.date, last: dt.date, day: dt.date | None) -> ActivityRow:
    """Validate one raw ``ActivityItem``; raise :class:`_Invalid` naming the field."""
    if not isinstance(item, dict):
        raise _Invalid("(row)", f"must be an object, got {_show(item)}")
    for field in _REQUIRED:
        if field not in item:
            raise _Invalid(field, "is missing")
    date = _window_day(item, first, last, day)
    model = _string(item, "model")
    if not model:
        raise _Invalid("model", "must not be empty")
    if len(model) > MAX_MODEL_LENGTH:
        raise _Invalid("model", f"must be at most {MAX_MODEL_LENGTH} characters, got {len(model)}")
    # model_permaslug is required by the contract but unused here: check its type only if sent.
    if item.get("model_permaslug") is not None:
        _string(item, "model_permaslug")
    return ActivityRow(
        date=date,
        model=model,
        endpoint_id=_string(item, "endpoint_id"),
        provider_name=_string(item, "provider_name"),
        requests=_count(item, "requests"),
        prompt_tokens=_count(item, "prompt_tokens"),
        completion_tokens=_count(item, "completion_tokens"),
        reasoning_tokens=_count(item, "reasoning_tokens"),
        usage=_money(item, "usage"),
        byok_usage_inference=_money(item, "byok_usage_inference"),
    )


def parse_activity(text: str, *, today: dt.date, day: dt.date | None = None) -> list[ActivityRow]:
    """Validate an ``/activity`` body; return its rows with exact duplicates counted once.

    Raises :class:`InvalidResponseError` naming the row index and field of the first problem.
    Two *different* rows for one (date, model, endpoint_id) make the response invalid: summing
    or picking one would both be guesses.
    """
    prefix = "invalid /activity response"
    try:
        body = _parse_json(text)
    except ValueError as exc:
        raise InvalidResponseError(f"{prefix}: body is not JSON ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise InvalidResponseError(f"{prefix}: expected an object with a 'data' list")
    first, last = completed_window(today)
    rows: list[ActivityRow] = []
    seen: dict[tuple[dt.date, str, str], tuple[int, ActivityRow]] = {}
    days: dict[str, dt.date] = {}
    for index, item in enumerate(body["data"]):
        row = _fast_activity_row(item, days, first, last, day)
        if row is None:
            try:
                row = _activity_row(item, first, last, day)
            except _Invalid as exc:
                where = (
                    f"row {index}" if exc.field == "(row)" else f"row {index} field {exc.field!r}"
                )
                raise InvalidResponseError(f"{prefix}: {where}: {exc.problem}") from None
        key = (row.date, row.model, row.endpoint_id)
        if key in seen:
            other_index, other = seen[key]
            if other == row:
                continue  # an exact duplicate is the same fact reported twice
            raise InvalidResponseError(
                f"{prefix}: row {index} repeats date {row.date}, model {row.model!r}, "
                f"endpoint {row.endpoint_id!r} of row {other_index} with different values"
            )
        seen[key] = (index, row)
        rows.append(row)
    return rows


def parse_key(text: str) -> KeyInfo:
    """Validate a ``/key`` body into :class:`KeyInfo`; raise :class:`InvalidResponseError`."""
    prefix = "invalid /key response"
    try:
        body = _parse_json(text)
    except ValueError as exc:
        raise InvalidResponseError(f"{prefix}: body is not JSON ({exc})") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise InvalidResponseError(f"{prefix}: expected an object with a 'data' object")
    try:
        for field in ("is_management_key", "label", "limit", "limit_remaining", "usage"):
            if field not in data:
                raise _Invalid(field, "is missing")
        if not isinstance(data["is_management_key"], bool):
            raise _Invalid(
                "is_management_key",
                f"must be true or false, got {_show(data['is_management_key'])}",
            )
        label = _string(data, "label")
        usage = _money(data, "usage")
        limit = _money_or_none(data, "limit")
        # limit_remaining can go below zero once a key overspends: allow the sign.
        remaining = data["limit_remaining"]
        if remaining is not None and (
            isinstance(remaining, bool) or not isinstance(remaining, int | Decimal)
        ):
            raise _Invalid("limit_remaining", f"must be a JSON number, got {_show(remaining)}")
    except _Invalid as exc:
        raise InvalidResponseError(f"{prefix}: field {exc.field!r}: {exc.problem}") from None
    return KeyInfo(
        is_management_key=data["is_management_key"],
        label=mask_text(label),
        limit=limit,
        limit_remaining=None if remaining is None else Decimal(remaining),
        usage=usage,
    )


def _error_message(response: httpx.Response, api_key: str) -> str:
    """OpenRouter's own error message (``{"error": {"message": …}}``), masked, or ''."""
    try:
        body = json.loads(response.text)
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        return ""
    message = " ".join(message.split())
    if api_key:
        message = message.replace(api_key, "[REDACTED]")
    return mask_text(message)[:200]


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Attempt:
    """Per-request state shared by the tenacity callbacks."""

    __slots__ = ("api_key", "path", "sent", "start")

    def __init__(self, path: str, api_key: str, start: float) -> None:
        self.path = path
        self.api_key = api_key
        self.start = start
        self.sent = 0


class OpenRouterClient:
    """OpenRouter API client: one connection pool, typed results, typed errors, retries.

    Thread-safe: one instance may serve every key of a run from several threads. The key is
    passed per call and sent only in the ``Authorization`` header.
    """

    def __init__(
        self,
        settings: OpenRouterSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = _wall_clock,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._lock = threading.Lock()
        self.requests_made = 0
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if settings.http_referer:
            headers["HTTP-Referer"] = settings.http_referer
        if settings.x_title:
            headers["X-Title"] = settings.x_title
        self._headers = list(headers.items())
        base_url = settings.base_url.rstrip("/") + "/"
        self._urls = {path: httpx.URL(base_url + path) for path in ("activity", "key")}
        # The connection pool, used directly: an httpx.Client around it re-merges URL,
        # headers and query and runs its auth, redirect and cookie machinery on every call,
        # which more than doubled a request's CPU time (0.6 → 0.25 ms, measured), and a
        # latency-bound sync is CPU-bound on the client. What a Client would take from the
        # environment it still gets: the CA file (SSL_CERT_FILE, in shared_tls_context) and
        # the proxy (environment_proxy).
        self._transport = transport or httpx.HTTPTransport(
            verify=shared_tls_context(), proxy=environment_proxy(self._urls["activity"])
        )

    def __enter__(self) -> OpenRouterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._transport.close()

    # -- public API ------------------------------------------------------------------------

    def get_key(self, api_key: str) -> KeyInfo:
        """``GET /key``: what OpenRouter knows about this key (management or not, limits)."""
        response, _sent = self._get("key", api_key, params=None)
        return parse_key(response.text)

    def get_activity(
        self, api_key: str, *, day: dt.date | None = None, today: dt.date | None = None
    ) -> ActivityResult:
        """``GET /activity``: the whole 30-day window, or one ``day`` (``?date=YYYY-MM-DD``).

        Every row must lie in :func:`completed_window` of ``today`` (default: the UTC date now)
        and, when ``day`` is given, on that day.
        """
        return self.fetch_activity(api_key, day=day, today=today).parse()

    def fetch_activity(
        self, api_key: str, *, day: dt.date | None = None, today: dt.date | None = None
    ) -> ActivityAnswer:
        """:meth:`get_activity` without the validation: the answer as received (HTTP 200).

        Errors (HTTP status, transport, retries exhausted) are raised as by
        :meth:`get_activity`; only an invalid body is left for :meth:`ActivityAnswer.parse`.
        """
        today = today or utc_today()
        params = {"date": day.isoformat()} if day is not None else None
        response, sent = self._get("activity", api_key, params=params)
        return ActivityAnswer(text=response.text, requests_made=sent, today=today, day=day)

    # -- transport and retries -------------------------------------------------------------

    def _get(
        self, path: str, api_key: str, params: Mapping[str, str] | None
    ) -> tuple[httpx.Response, int]:
        """GET with retries; return a 200 response or raise the typed error."""
        state = _Attempt("/" + path, api_key, self._clock())
        url = self._urls[path]
        if params:
            url = url.copy_merge_params(params)
        headers = [*self._headers, ("Authorization", f"Bearer {api_key}")]

        def attempt() -> httpx.Response:
            remaining = self.settings.request_deadline - (self._clock() - state.start)
            timeout = httpx.Timeout(
                max(0.1, min(self.settings.read_timeout, remaining)),
                connect=max(0.1, min(self.settings.connect_timeout, remaining)),
            )
            state.sent += 1
            with self._lock:
                self.requests_made += 1
            request = httpx.Request(
                "GET", url, headers=headers, extensions={"timeout": timeout.as_dict()}
            )
            response = self._transport.handle_request(request)
            try:
                response.read()
            finally:
                response.close()  # back to the pool, also when reading the body failed
            return response

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._is_transient)
            | tenacity.retry_if_result(lambda r: r.status_code in _RETRY_STATUSES),
            wait=self._wait,
            stop=lambda rs: self._stop(rs, state),
            sleep=self._sleep,
            before_sleep=lambda rs: self._log_retry(rs, state),
            retry_error_callback=lambda rs: rs.outcome,
        )
        try:
            outcome = retrying(attempt)
        except httpx.HTTPError as exc:  # not transient (e.g. a malformed URL): no retry
            raise UpstreamUnavailableError(
                f"cannot call OpenRouter {state.path} ({type(exc).__name__}): "
                "check [openrouter] base_url"
            ) from exc
        if isinstance(outcome, httpx.Response):
            return self._check(outcome, state), state.sent
        # Retries exhausted: tenacity handed back the last attempt's future.
        try:
            last = outcome.result()
        except httpx.TimeoutException as exc:
            raise UpstreamUnavailableError(
                f"OpenRouter {state.path} timed out after {state.sent} attempt(s) "
                f"({type(exc).__name__}); try again later"
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailableError(
                f"cannot reach OpenRouter {state.path} after {state.sent} attempt(s) "
                f"({type(exc).__name__}): check [openrouter] base_url and the network"
            ) from exc
        return self._check(last, state), state.sent

    @staticmethod
    def _is_transient(exc: BaseException) -> bool:
        return isinstance(
            exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
        )

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        """Retry-After when the server sent one (capped), else exponential backoff + jitter."""
        outcome = rs.outcome
        if outcome is not None and not outcome.failed:
            response: httpx.Response = outcome.result()
            after = parse_retry_after(response.headers.get("Retry-After"), self._wall_clock())
            if after is not None:
                return min(after, self.settings.retry_after_max)
        base = min(
            self.settings.backoff_max, self.settings.backoff_initial * 2 ** (rs.attempt_number - 1)
        )
        # "Equal jitter": at least half the backoff, so waits still grow, never in lockstep.
        return min(self.settings.backoff_max, base / 2 + self._rng.uniform(0, base / 2))

    def _stop(self, rs: tenacity.RetryCallState, state: _Attempt) -> bool:
        if rs.attempt_number >= self.settings.max_attempts:
            return True
        elapsed = self._clock() - state.start
        # Stop now rather than sleep past the deadline only to give up afterwards.
        return elapsed + rs.upcoming_sleep >= self.settings.request_deadline

    def _log_retry(self, rs: tenacity.RetryCallState, state: _Attempt) -> None:
        outcome = rs.outcome
        fields: dict[str, Any] = {
            "path": state.path,
            "attempt": rs.attempt_number,
            "wait": round(rs.upcoming_sleep, 3),
        }
        if outcome is not None and outcome.failed:
            fields["error"] = type(outcome.exception()).__name__
        elif outcome is not None:
            fields["status"] = outcome.result().status_code
        _log.warning("openrouter_retry", **fields)

    def _check(self, response: httpx.Response, state: _Attempt) -> httpx.Response:
        """Map a final response to itself (200) or to the typed error."""
        status = response.status_code
        if status == 200:
            return response
        said = _error_message(response, state.api_key)
        detail = f"{status}: {said}" if said else str(status)
        path = state.path
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
                f"OpenRouter kept rate limiting {path} ({detail}) after {state.sent} "
                "attempt(s); try again later"
            )
        if status == 404:
            raise UpstreamUnavailableError(
                f"OpenRouter has no {path} ({detail}): check [openrouter] base_url "
                f"({self.settings.base_url})"
            )
        if status >= 500:
            raise UpstreamUnavailableError(
                f"OpenRouter {path} kept failing ({detail}) after {state.sent} attempt(s); "
                "try again later"
            )
        raise UpstreamUnavailableError(f"unexpected answer from OpenRouter {path} ({detail})")
