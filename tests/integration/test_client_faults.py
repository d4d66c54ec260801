"""The client against hostile answers from a real server on 127.0.0.1: a trickle, an answer
too large, a redirect elsewhere, an error that echoes the key."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Iterator

import pytest

from worker.config import OpenRouterSettings
from worker.core.errors import InvalidResponseError, UnauthorizedError, UpstreamUnavailableError
from worker.openrouter import OpenRouterClient
from worker.testing.activity_data import generate_activity
from worker.testing.clock import noon
from worker.testing.fake_openrouter import FakeOpenRouter, Fault

TODAY = dt.date(2026, 5, 1)
KEY = "sk-or-v1-" + "f" * 64


_noon = functools.partial(noon, TODAY)  # the client's clock


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=TODAY) as server:
        server.add_key(KEY, rows=generate_activity(today=TODAY, models=20, endpoints=2))
        yield server


def _client(fake: FakeOpenRouter, **settings: float) -> OpenRouterClient:
    options = OpenRouterSettings(base_url=fake.base_url, backoff_initial=0, **settings)
    return OpenRouterClient(options, wall_clock=_noon)


def test_a_trickling_answer_is_cut_off_at_the_request_deadline(fake: FakeOpenRouter) -> None:
    # One byte every 0.2 s of a body of several hundred kilobytes: every read succeeds, so only
    # a deadline over the whole request (bytes included) ends it.
    fake.fail_forever(KEY, Fault(status=200, trickle=0.2))
    started = time.monotonic()
    with (
        _client(fake, request_deadline=1.5, read_timeout=10) as client,
        pytest.raises(UpstreamUnavailableError, match=r"within 1.5 s \(\[openrouter\] request_d"),
    ):
        client.get_activity(KEY)
    assert time.monotonic() - started < 1.5 + 1.0
    assert fake.request_count(KEY) <= 1  # cut off mid-answer: not even recorded as answered


def test_an_answer_larger_than_the_cap_is_refused(fake: FakeOpenRouter) -> None:
    with (
        _client(fake, max_response_bytes=64 * 1024) as client,
        pytest.raises(InvalidResponseError, match="larger than 65536 bytes"),
    ):
        client.get_activity(KEY)
    assert fake.request_count(KEY) == 1  # not retried: the same answer would come again


def test_a_redirect_is_not_followed_so_the_key_goes_nowhere_else(fake: FakeOpenRouter) -> None:
    with FakeOpenRouter(today=TODAY) as elsewhere:
        fake.fail_forever(
            KEY, Fault(status=302, body="", location=elsewhere.base_url + "/activity")
        )
        with (
            _client(fake) as client,
            pytest.raises(UpstreamUnavailableError, match=r"unexpected answer .*\(302\)"),
        ):
            client.get_activity(KEY)
        assert elsewhere.request_count() == 0


def test_an_error_that_echoes_the_key_without_its_prefix_is_masked(fake: FakeOpenRouter) -> None:
    echoed = KEY.removeprefix("sk-or-")
    fake.fail_forever(
        KEY, Fault(status=401, body=f'{{"error": {{"code": 401, "message": "bad key {echoed}"}}}}')
    )
    with _client(fake) as client, pytest.raises(UnauthorizedError) as caught:
        client.get_activity(KEY)
    assert echoed not in str(caught.value)
    assert "bad key [REDACTED]" in str(caught.value)
