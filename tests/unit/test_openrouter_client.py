"""The OpenRouter client over respx: headers, retries (and what is never retried), errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from worker.config import OpenRouterSettings
from worker.core.errors import (
    BadRequestError,
    InvalidResponseError,
    NotManagementKeyError,
    RateLimitedError,
    UnauthorizedError,
    UpstreamUnavailableError,
)
from worker.openrouter import (
    USER_AGENT,
    ActivityRow,
    KeyInfo,
    OpenRouterClient,
    RetryPolicy,
    parse_retry_after,
)
from worker.testing.clock import noon

BASE = "https://openrouter.test/api/v1"
KEY = "sk-or-v1-0123456789abcdef"
TODAY = dt.date(2026, 5, 1)
NOW = noon(TODAY)


def _row(**changes: Any) -> dict[str, Any]:
    row = {
        "date": "2026-04-22",
        "model": "openai/gpt-4.1",
        "model_permaslug": "openai/gpt-4.1-2025-04-14",
        "endpoint_id": "ep-1",
        "provider_name": "OpenAI",
        "usage": 0.015,
        "byok_usage_inference": 0,
        "requests": 5,
        "prompt_tokens": 50,
        "completion_tokens": 125,
        "reasoning_tokens": 25,
    }
    row.update(changes)
    return row


def _body(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"data": list(rows)}


class FakeTime:
    """A monotonic clock that only moves when the client sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        yield mock


def _client(fake_time: FakeTime, **settings: Any) -> OpenRouterClient:
    options = OpenRouterSettings(base_url=BASE, **settings)
    return OpenRouterClient(
        options,
        retry=dataclasses.replace(RetryPolicy.from_settings(options), rng=random.Random(7)),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        wall_clock=lambda: NOW,
    )


def test_headers_sent(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity").respond(json=_body())
    with _client(fake_time, http_referer="https://example.org", x_title="Watcher") as client:
        client.get_activity(KEY)
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("openrouter-watcher/")
    assert request.headers["HTTP-Referer"] == "https://example.org"
    assert request.headers["X-Title"] == "Watcher"
    assert request.url.params.get("date") is None


def test_attribution_headers_omitted_when_empty(
    router: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = router.get("/activity").respond(json=_body())
    with _client(fake_time) as client:
        client.get_activity(KEY)
    headers = route.calls.last.request.headers
    assert "HTTP-Referer" not in headers
    assert "X-Title" not in headers


def test_timeouts_come_from_settings(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity").respond(json=_body())
    with _client(fake_time, connect_timeout=3.0, read_timeout=7.0) as client:
        client.get_activity(KEY)
    timeout = route.calls.last.request.extensions["timeout"]
    assert (timeout["connect"], timeout["read"]) == (3.0, 7.0)


def test_activity_rows_are_exact_decimals(router: respx.MockRouter, fake_time: FakeTime) -> None:
    text = (
        '{"data": ['
        + ",".join(
            [
                '{"date": "2026-04-22", "model": "a/b", "model_permaslug": "a/b-1", '
                '"endpoint_id": "e1", "provider_name": "P", "usage": 454.542594979, '
                '"byok_usage_inference": 0.000000001, "requests": 1, "prompt_tokens": 2, '
                '"completion_tokens": 3, "reasoning_tokens": 40}',
                '{"date": "2026-04-22 00:00:00", "model": "a/b", "model_permaslug": "a/b-1", '
                '"endpoint_id": "e2", "provider_name": "Q", "usage": 0.1, '
                '"byok_usage_inference": 0.2, "requests": 1, "prompt_tokens": 2, '
                '"completion_tokens": 3, "reasoning_tokens": 0}',
            ]
        )
        + "]}"
    )
    router.get("/activity").respond(200, text=text)
    with _client(fake_time) as client:
        result = client.get_activity(KEY)
    assert result.requests == 1
    first, second = result.rows
    assert first == ActivityRow(
        date=dt.date(2026, 4, 22),
        model="a/b",
        endpoint_id="e1",
        provider_name="P",
        requests=1,
        prompt_tokens=2,
        completion_tokens=3,
        reasoning_tokens=40,
        usage=Decimal("454.542594979"),
        byok_usage_inference=Decimal("0.000000001"),
    )
    assert isinstance(first.usage, Decimal)
    assert second.date == dt.date(2026, 4, 22)
    assert second.usage + second.byok_usage_inference == Decimal("0.3")


def test_one_day_is_requested_with_date(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity", params={"date": "2026-04-29"}).respond(
        json=_body(_row(date="2026-04-29"))
    )
    with _client(fake_time) as client:
        result = client.get_activity(KEY, day=dt.date(2026, 4, 29))
    assert route.call_count == 1
    assert [r.date for r in result.rows] == [dt.date(2026, 4, 29)]


def test_key_info(router: respx.MockRouter, fake_time: FakeTime) -> None:
    router.get("/key").respond(
        200,
        text=(
            '{"data": {"label": "ops", "limit": 100, "limit_remaining": 74.5, "usage": 25.5, '
            '"is_management_key": true, "usage_daily": 1}}'
        ),
    )
    with _client(fake_time) as client:
        info = client.get_key(KEY)
    assert info == KeyInfo(
        is_management_key=True,
        label="ops",
        limit=Decimal(100),
        limit_remaining=Decimal("74.5"),
        usage=Decimal("25.5"),
    )


def test_key_info_without_limit(router: respx.MockRouter, fake_time: FakeTime) -> None:
    router.get("/key").respond(
        200,
        text=(
            '{"data": {"label": "x", "limit": null, "limit_remaining": null, "usage": 0, '
            '"is_management_key": false}}'
        ),
    )
    with _client(fake_time) as client:
        info = client.get_key(KEY)
    assert (info.limit, info.limit_remaining, info.is_management_key) == (None, None, False)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("oops", "body is not JSON"),
        ('{"nodata": 1}', "'data' object"),
        (
            '{"data": {"label": "x", "limit": null, "limit_remaining": null, "usage": 1}}',
            "field 'is_management_key': is missing",
        ),
        (
            '{"data": {"label": "x", "limit": null, "limit_remaining": null, "usage": 1, '
            '"is_management_key": "yes"}}',
            "field 'is_management_key': must be true or false",
        ),
        (
            '{"data": {"label": "x", "limit": null, "limit_remaining": "1", "usage": 1, '
            '"is_management_key": true}}',
            "field 'limit_remaining': must be a JSON number",
        ),
        (
            '{"data": {"label": "x", "limit": null, "limit_remaining": null, "usage": "1", '
            '"is_management_key": true}}',
            "field 'usage': must be a JSON number",
        ),
    ],
)
def test_invalid_key_info(
    router: respx.MockRouter, fake_time: FakeTime, text: str, needle: str
) -> None:
    router.get("/key").respond(200, text=text)
    with _client(fake_time) as client, pytest.raises(InvalidResponseError, match=needle):
        client.get_key(KEY)


# --- retries ------------------------------------------------------------------------------


def test_429_with_retry_after_seconds(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity").mock(
        side_effect=[
            httpx.Response(
                429,
                headers={"Retry-After": "2"},
                json={"error": {"code": 429, "message": "Rate limit exceeded"}},
            ),
            httpx.Response(200, json=_body(_row())),
        ]
    )
    with capture_logs() as logs, _client(fake_time) as client:
        result = client.get_activity(KEY)
    assert route.call_count == 2
    assert fake_time.sleeps == [2.0]
    assert result.requests == 2
    assert client.requests_made == 2
    assert len(result.rows) == 1
    retries = [e for e in logs if e["event"] == "openrouter_retry"]
    assert retries == [
        {
            "event": "openrouter_retry",
            "log_level": "warning",
            "path": "/activity",
            "attempt": 1,
            "wait": 2.0,
            "status": 429,
        }
    ]


def test_429_with_retry_after_http_date(router: respx.MockRouter, fake_time: FakeTime) -> None:
    when = email.utils.format_datetime(NOW + dt.timedelta(seconds=7), usegmt=True)
    route = router.get("/activity").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": when}),
            httpx.Response(200, json=_body()),
        ]
    )
    with _client(fake_time) as client:
        client.get_activity(KEY)
    assert route.call_count == 2
    assert fake_time.sleeps == [7.0]


def test_retry_after_is_capped(router: respx.MockRouter, fake_time: FakeTime) -> None:
    router.get("/activity").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(200, json=_body()),
        ]
    )
    with _client(fake_time, retry_after_max=5.0) as client:
        client.get_activity(KEY)
    assert fake_time.sleeps == [5.0]


def test_parse_retry_after() -> None:
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after(" 12 ", NOW) == 12.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("Fri, 01 May 2026 11:00:00 GMT", NOW) == 0.0  # in the past
    assert parse_retry_after("Fri, 01 May 2026 12:00:30 GMT", NOW) == 30.0


def test_429_without_retry_after_backs_off_with_jitter(
    router: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = router.get("/activity").mock(
        side_effect=[httpx.Response(429), httpx.Response(429), httpx.Response(200, json=_body())]
    )
    with _client(fake_time) as client:
        client.get_activity(KEY)
    assert route.call_count == 3
    first, second = fake_time.sleeps
    assert 0.25 <= first <= 0.5  # backoff_initial 0.5, at least half of it
    assert 0.5 <= second <= 1.0  # doubled


def test_backoff_is_capped(router: respx.MockRouter, fake_time: FakeTime) -> None:
    router.get("/activity").respond(500)
    with _client(fake_time, max_attempts=8, backoff_initial=1.0, backoff_max=4.0) as client:
        with pytest.raises(UpstreamUnavailableError):
            client.get_activity(KEY)
    assert len(fake_time.sleeps) == 7
    assert all(w <= 4.0 for w in fake_time.sleeps)
    assert all(2.0 <= w for w in fake_time.sleeps[2:])  # 4 s base, at least half


def test_503_then_200(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=_body(_row()))]
    )
    with _client(fake_time) as client:
        result = client.get_activity(KEY)
    assert route.call_count == 2
    assert len(fake_time.sleeps) == 1
    assert len(result.rows) == 1


def test_connect_error_then_200(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=_body())]
    )
    with capture_logs() as logs, _client(fake_time) as client:
        result = client.get_activity(KEY)
    assert route.call_count == 2
    assert result.requests == 2
    assert [(e["attempt"], e["error"]) for e in logs if e["event"] == "openrouter_retry"] == [
        (1, "ConnectError")
    ]


def test_timeout_is_retried_then_reported(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity").mock(side_effect=httpx.ReadTimeout("slow"))
    with (
        _client(fake_time) as client,
        pytest.raises(UpstreamUnavailableError, match="timed out after 5 attempt"),
    ):
        client.get_activity(KEY)
    assert route.call_count == 5
    assert len(fake_time.sleeps) == 4


def test_connect_errors_exhausted(router: respx.MockRouter, fake_time: FakeTime) -> None:
    router.get("/activity").mock(side_effect=httpx.ConnectError("refused"))
    with (
        _client(fake_time, max_attempts=2) as client,
        pytest.raises(UpstreamUnavailableError, match="cannot reach OpenRouter /activity after 2"),
    ):
        client.get_activity(KEY)


def test_429_exhausted_is_rate_limited(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity").respond(
        429, headers={"Retry-After": "1"}, json={"error": {"code": 429, "message": "slow down"}}
    )
    with _client(fake_time) as client, pytest.raises(RateLimitedError, match="slow down") as err:
        client.get_activity(KEY)
    assert route.call_count == 5
    assert fake_time.sleeps == [1.0] * 4
    assert "after 5 attempt(s)" in str(err.value)


def test_500_exhausted_is_unavailable(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/activity").respond(500)
    with (
        _client(fake_time, max_attempts=3) as client,
        pytest.raises(UpstreamUnavailableError, match="kept failing"),
    ):
        client.get_activity(KEY)
    assert route.call_count == 3
    assert client.requests_made == 3


def test_deadline_stops_retrying_before_it_is_passed(
    router: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = router.get("/activity").respond(503, headers={"Retry-After": "6"})
    with (
        _client(fake_time, request_deadline=10.0) as client,
        pytest.raises(UpstreamUnavailableError),
    ):
        client.get_activity(KEY)
    # 0 s + 6 s < 10 s: one retry; 6 s + 6 s would pass the deadline: stop.
    assert route.call_count == 2
    assert fake_time.sleeps == [6.0]


@pytest.mark.parametrize(
    ("status", "error", "needle"),
    [
        (400, BadRequestError, "rejected the request"),
        (401, UnauthorizedError, "rejected the key"),
        (403, NotManagementKeyError, "needs a management key"),
        (404, UpstreamUnavailableError, "base_url"),
    ],
)
def test_client_errors_are_not_retried(
    router: respx.MockRouter, fake_time: FakeTime, status: int, error: type[Exception], needle: str
) -> None:
    route = router.get("/activity").respond(
        status, json={"error": {"code": status, "message": f"nope {KEY}"}}
    )
    with _client(fake_time) as client, pytest.raises(error, match=needle) as caught:
        client.get_activity(KEY)
    assert route.call_count == 1
    assert fake_time.sleeps == []
    assert KEY not in str(caught.value)
    assert f"{status}: nope" in str(caught.value)


def test_403_message_explains_management_keys(
    router: respx.MockRouter, fake_time: FakeTime
) -> None:
    router.get("/activity").respond(
        403,
        json={"error": {"code": 403, "message": "Only management keys can perform this operation"}},
    )
    with _client(fake_time) as client, pytest.raises(NotManagementKeyError) as caught:
        client.get_activity(KEY)
    message = str(caught.value)
    assert "Only management keys can perform this operation" in message
    assert "management-keys" in message


def test_unexpected_status_is_reported(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.get("/key").respond(302, text="")
    with (
        _client(fake_time) as client,
        pytest.raises(UpstreamUnavailableError, match="unexpected answer"),
    ):
        client.get_key(KEY)
    assert route.call_count == 1


def test_key_is_masked_even_when_not_sk_or(router: respx.MockRouter, fake_time: FakeTime) -> None:
    secret = "plain-secret-token-123"
    router.get("/key").respond(401, json={"error": {"code": 401, "message": f"bad {secret}"}})
    with _client(fake_time) as client, pytest.raises(UnauthorizedError) as caught:
        client.get_key(secret)
    assert secret not in str(caught.value)


def test_malformed_json_is_invalid_and_not_retried(
    router: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = router.get("/activity").respond(200, text="<html>gateway</html>")
    with (
        _client(fake_time) as client,
        pytest.raises(InvalidResponseError, match="body is not JSON"),
    ):
        client.get_activity(KEY)
    assert route.call_count == 1


class _Window:
    """A pace that never waits, with analytics' one-minute window, counting every request of
    the account (an account's budget)."""

    period = 60.0
    waits_out = True

    def acquire(self) -> float:
        return 0.0


_ANALYTICS_ANSWER = {
    "data": {"data": [], "metadata": {"row_count": 0, "truncated": False}, "warnings": []}
}


def test_a_paced_429_waits_out_the_window_before_it_gives_up(
    router: respx.MockRouter, fake_time: FakeTime
) -> None:
    # Someone else spent the minute: 429 with Retry-After 5 for the next 60 s, then answered.
    limited = [httpx.Response(429, headers={"Retry-After": "5"})] * 12
    route = router.post("/analytics/query").mock(
        side_effect=[*limited, httpx.Response(200, json=_ANALYTICS_ANSWER)]
    )
    with _client(fake_time, max_attempts=2) as client:
        answer = client.analytics(KEY, TODAY, TODAY, pace=_Window())
    assert answer.rows == []
    # Not 2 attempts: a 5 s wait at a time until a whole minute passed since the first 429.
    assert route.call_count == 13
    assert fake_time.sleeps == [5.0] * 12
    assert client.http.rate_limit_seconds == 60.0


def test_a_paced_429_gives_up_once_the_window_has_passed(
    router: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = router.post("/analytics/query").respond(429, headers={"Retry-After": "5"})
    with (
        _client(fake_time, max_attempts=2) as client,
        pytest.raises(RateLimitedError, match="after 13 attempt"),
    ):
        client.analytics(KEY, TODAY, TODAY, pace=_Window())
    assert route.call_count == 13  # the last at 60 s: a whole minute after the first 429
    assert sum(fake_time.sleeps) == 60.0


def test_an_unpaced_429_still_stops_at_the_attempts(
    router: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = router.get("/credits").respond(429, headers={"Retry-After": "5"})
    with _client(fake_time, max_attempts=2) as client, pytest.raises(RateLimitedError):
        client.get_credits(KEY)
    assert route.call_count == 2


def test_the_deadline_holds_for_a_paced_429(router: respx.MockRouter, fake_time: FakeTime) -> None:
    route = router.post("/analytics/query").respond(429, headers={"Retry-After": "5"})
    with (
        _client(fake_time, max_attempts=2, request_deadline=20.0) as client,
        pytest.raises(RateLimitedError),
    ):
        client.analytics(KEY, TODAY, TODAY, pace=_Window())
    assert route.call_count == 4  # 0, 5, 10, 15 s: the next wait would reach the 20 s deadline
