"""The real client against the fake OpenRouter on 127.0.0.1: contract, faults, concurrency."""

from __future__ import annotations

import datetime as dt
import functools
import json
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from worker.config import OpenRouterSettings
from worker.core.days import completed_window
from worker.core.errors import (
    BadRequestError,
    InvalidResponseError,
    NotManagementKeyError,
    RateLimitedError,
    UnauthorizedError,
    UpstreamUnavailableError,
)
from worker.openrouter import OpenRouterClient
from worker.testing import loopback
from worker.testing.activity_data import dumps, expected_totals, generate_activity
from worker.testing.clock import noon
from worker.testing.fake_openrouter import FakeOpenRouter, Fault, fingerprint, load_keys_file

TODAY = dt.date(2026, 5, 1)


# The client's clock: noon UTC on TODAY, the day the fake's window ends before.
_noon = functools.partial(noon, TODAY)


MGMT = "sk-or-v1-management-aaaa"
PLAIN = "sk-or-v1-inference-bbbb"


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=TODAY) as server:
        server.add_key(MGMT, rows=generate_activity(today=TODAY, models=3, endpoints=2, seed=1))
        server.add_key(PLAIN, management=False, limit=Decimal("50"))
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def _client(fake: FakeOpenRouter, sleeps: Sleeps, **settings: Any) -> OpenRouterClient:
    return OpenRouterClient(
        OpenRouterSettings(base_url=fake.base_url, **settings), sleep=sleeps, wall_clock=_noon
    )


def _totals_of(rows: Any) -> dict[tuple[dt.date, str], dict[str, Any]]:
    totals: dict[tuple[dt.date, str], dict[str, Any]] = {}
    for r in rows:
        t = totals.setdefault(
            (r.date, r.model),
            {
                "requests": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "reasoning_tokens": 0,
                "usage": Decimal(0),
                "byok_usage_inference": Decimal(0),
            },
        )
        for name in t:
            t[name] += getattr(r, name)
    return totals


def test_whole_window_matches_the_scripted_data(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    rows = generate_activity(today=TODAY, models=3, endpoints=2, seed=1)
    with _client(fake, sleeps) as client:
        result = client.get_activity(MGMT)
    assert len(result.rows) == 30 * 3 * 2
    assert result.requests == 1
    assert _totals_of(result.rows) == expected_totals(rows)
    assert fake.requests[-1].path == "/api/v1/activity"
    assert fake.requests[-1].status == 200


def test_rows_outside_the_window_are_not_served(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    first, last = completed_window(TODAY)
    inside = generate_activity(today=TODAY, days=2, models=1)
    outside = [
        {**inside[0], "date": (first - dt.timedelta(days=1)).isoformat()},
        {**inside[0], "date": TODAY.isoformat()},
    ]
    fake.set_rows(MGMT, inside + outside)
    with _client(fake, sleeps) as client:
        result = client.get_activity(MGMT)
    assert sorted(r.date for r in result.rows) == [last - dt.timedelta(days=1), last]


def test_one_day(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    day = dt.date(2026, 4, 10)
    with _client(fake, sleeps) as client:
        result = client.get_activity(MGMT, day=day)
    assert {r.date for r in result.rows} == {day}
    assert len(result.rows) == 3 * 2
    assert fake.requests[-1].query == {"date": "2026-04-10"}


@pytest.mark.parametrize("day", [TODAY, dt.date(2026, 5, 9), dt.date(2026, 3, 31)])
def test_day_outside_the_window_is_a_400_not_retried(
    fake: FakeOpenRouter, sleeps: Sleeps, day: dt.date
) -> None:
    with _client(fake, sleeps) as client, pytest.raises(BadRequestError, match="400"):
        client.get_activity(MGMT, day=day)
    assert fake.request_count(MGMT) == 1


def test_malformed_date_is_a_400(fake: FakeOpenRouter) -> None:
    response = loopback.get(
        f"{fake.base_url}/activity",
        params={"date": "2026-4-1"},
        headers={"Authorization": f"Bearer {MGMT}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


def test_ordinary_key_gets_403(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    with (
        _client(fake, sleeps) as client,
        pytest.raises(
            NotManagementKeyError, match="Only management keys can perform this operation"
        ),
    ):
        client.get_activity(PLAIN)
    assert fake.request_count(PLAIN) == 1


def test_unknown_or_missing_key_gets_401(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    with _client(fake, sleeps) as client:
        with pytest.raises(UnauthorizedError):
            client.get_activity("sk-or-v1-unknown")
        with pytest.raises(UnauthorizedError):
            client.get_key("sk-or-v1-unknown")
    assert loopback.get(f"{fake.base_url}/key").status_code == 401
    assert fake.requests[-1].key_fingerprint is None


def test_unknown_path_is_404(fake: FakeOpenRouter) -> None:
    response = loopback.get(
        f"{fake.base_url}/generation", headers={"Authorization": f"Bearer {MGMT}"}
    )
    assert response.status_code == 404
    assert response.json() == {"error": {"code": 404, "message": "Resource not found"}}


def test_key_info(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    with _client(fake, sleeps) as client:
        management = client.get_key(MGMT)
        plain = client.get_key(PLAIN)
    assert management.is_management_key is True
    assert management.usage == sum(
        (
            Decimal(r["usage"])
            for r in generate_activity(today=TODAY, models=3, endpoints=2, seed=1)
        ),
        Decimal(0),
    )
    assert plain.is_management_key is False
    assert (plain.limit, plain.limit_remaining, plain.usage) == (
        Decimal(50),
        Decimal(50),
        Decimal(0),
    )


def test_429_with_retry_after_then_normal(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.inject(MGMT, Fault(status=429, retry_after="1"))
    with _client(fake, sleeps) as client:
        result = client.get_activity(MGMT)
    assert sleeps.waits == [1.0]
    assert result.requests == 2
    assert [r.status for r in fake.requests] == [429, 200]


def test_faults_are_consumed_in_order(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.inject(MGMT, Fault(status=503), Fault(status=502), Fault(status=429, retry_after="3"))
    with _client(fake, sleeps) as client:
        client.get_activity(MGMT)
    assert [r.status for r in fake.requests] == [503, 502, 429, 200]
    assert sleeps.waits[-1] == 3.0
    assert fake.request_count(MGMT) == 4
    assert fake.request_count(PLAIN) == 0


def test_500_forever_exhausts_the_retries(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.fail_forever(MGMT, Fault(status=500))
    with (
        _client(fake, sleeps) as client,
        pytest.raises(UpstreamUnavailableError, match="after 5 attempt"),
    ):
        client.get_activity(MGMT)
    assert fake.request_count(MGMT) == 5


def test_429_forever_is_rate_limited(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.fail_forever(MGMT, Fault(status=429, retry_after="2"))
    with _client(fake, sleeps, max_attempts=3) as client, pytest.raises(RateLimitedError):
        client.get_activity(MGMT)
    assert sleeps.waits == [2.0, 2.0]


def test_injected_401_and_403(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.inject(MGMT, Fault(status=401), Fault(status=403))
    with _client(fake, sleeps) as client:
        with pytest.raises(UnauthorizedError):
            client.get_activity(MGMT)
        with pytest.raises(NotManagementKeyError):
            client.get_activity(MGMT)
        assert len(client.get_activity(MGMT).rows) == 180


@pytest.mark.parametrize(
    "body", ["not json", '{"data": "nope"}', '{"data": [{"date": "2026-04-02"}]}']
)
def test_malformed_bodies_are_invalid(fake: FakeOpenRouter, sleeps: Sleeps, body: str) -> None:
    fake.inject(MGMT, Fault(status=200, body=body))
    with _client(fake, sleeps) as client, pytest.raises(InvalidResponseError):
        client.get_activity(MGMT)
    assert fake.request_count(MGMT) == 1


def test_broken_rows_reach_the_client(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    good = generate_activity(today=TODAY, days=1, models=1)[0]
    fake.set_rows(MGMT, [good, {**good, "endpoint_id": "e2", "date": "yesterday"}])
    with (
        _client(fake, sleeps) as client,
        pytest.raises(InvalidResponseError, match="row 1 field 'date'"),
    ):
        client.get_activity(MGMT)


def test_slow_answer_times_out(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.inject(MGMT, Fault(status=200, delay=1.0))
    with _client(fake, sleeps, read_timeout=0.1, max_attempts=2) as client:
        started = time.perf_counter()
        result = client.get_activity(MGMT)  # the retry is answered at once
        elapsed = time.perf_counter() - started
    assert len(result.rows) == 180
    assert result.requests == 2
    assert elapsed < 0.9
    assert len(sleeps.waits) == 1


def test_slow_answer_forever_is_unavailable(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.fail_forever(MGMT, Fault(status=200, delay=1.0))
    with (
        _client(fake, sleeps, read_timeout=0.1, max_attempts=2) as client,
        pytest.raises(UpstreamUnavailableError, match="timed out after 2 attempt"),
    ):
        client.get_activity(MGMT)


def test_latency_delays_every_answer(sleeps: Sleeps) -> None:
    with FakeOpenRouter(today=TODAY, latency=0.2) as slow:
        slow.add_key(MGMT, rows=[])
        with _client(slow, sleeps) as client:
            started = time.perf_counter()
            client.get_activity(MGMT)
            client.get_activity(MGMT)
            elapsed = time.perf_counter() - started
    assert elapsed >= 0.4


def test_fifty_parallel_requests(sleeps: Sleeps) -> None:
    rows = generate_activity(today=TODAY, models=2)
    with FakeOpenRouter(today=TODAY, latency=0.2) as server:
        keys = [f"sk-or-v1-parallel-{i:03d}" for i in range(50)]
        for key in keys:
            server.add_key(key, rows=rows)
        with _client(server, sleeps) as client, ThreadPoolExecutor(max_workers=50) as pool:
            started = time.perf_counter()
            results = list(pool.map(lambda k: client.get_activity(k), keys))
            elapsed = time.perf_counter() - started
        assert server.request_count() == 50
        assert all(server.request_count(k) == 1 for k in keys)
    assert all(len(r.rows) == 60 for r in results)
    assert client.requests_made == 50
    assert sleeps.waits == []
    assert elapsed < 3.0  # 50 x 0.2 s would take 10 s one after the other


def test_requests_never_record_the_key(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    with _client(fake, sleeps) as client:
        client.get_activity(MGMT)
    assert MGMT not in repr(fake.requests)
    assert fake.requests[-1].key_fingerprint == fingerprint(MGMT)


def test_generate_activity_is_realistic_and_deterministic() -> None:
    rows = generate_activity(today=TODAY, days=30, models=4, endpoints=2, seed=3)
    assert rows == generate_activity(today=TODAY, days=30, models=4, endpoints=2, seed=3)
    assert rows != generate_activity(today=TODAY, days=30, models=4, endpoints=2, seed=4)
    assert len(rows) == 30 * 4 * 2
    assert {r["model"] for r in rows} >= {"openai/gpt-4.1", "anthropic/claude-sonnet-4"}
    assert any(r["reasoning_tokens"] > r["completion_tokens"] for r in rows)
    assert any(" 00:00:00" in r["date"] for r in rows)
    assert all(
        isinstance(r["usage"], Decimal) and r["usage"].as_tuple().exponent >= -9 for r in rows
    )
    assert any(r["usage"].as_tuple().exponent == -9 for r in rows)
    first, _last = completed_window(TODAY)
    assert {r["date"][:10] for r in rows} == {
        (first + dt.timedelta(days=i)).isoformat() for i in range(30)
    }
    scaled = generate_activity(today=TODAY, models=["a/b"], seed=3, scale=Decimal(1000))
    assert {r["model"] for r in scaled} == {"a/b"}


def test_command_line_serves_until_sigterm(tmp_path: Path, sleeps: Sleeps) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(
            {
                MGMT: {"days": 3, "models": 2, "seed": 5},
                PLAIN: {"management": False},
                "sk-or-v1-broken": {"fail_forever": {"status": 500}},
            }
        )
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.testing.fake_openrouter",
            "--port",
            "0",
            "--keys-file",
            str(keys),
            "--today",
            TODAY.isoformat(),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/api/v1")
        with OpenRouterClient(
            OpenRouterSettings(base_url=base_url, max_attempts=2), sleep=sleeps, wall_clock=_noon
        ) as client:
            assert len(client.get_activity(MGMT).rows) == 6
            with pytest.raises(NotManagementKeyError):
                client.get_activity(PLAIN)
            with pytest.raises(UpstreamUnavailableError):
                client.get_activity("sk-or-v1-broken")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()


def test_keys_file_scripts_rows_and_faults(tmp_path: Path, sleeps: Sleeps) -> None:
    row = generate_activity(today=TODAY, days=1, models=1)[0]
    keys = tmp_path / "keys.json"
    keys.write_text(
        dumps(
            {
                MGMT: {
                    "rows": [{**row, "usage": Decimal("1.000000001")}],
                    "faults": [{"status": 429, "retry_after": "4", "ignored": 1}],
                },
            }
        )
    )
    with FakeOpenRouter(today=TODAY) as server:
        load_keys_file(server, keys)
        with _client(server, sleeps) as client:
            (got,) = client.get_activity(MGMT).rows
    assert got.usage == Decimal("1.000000001")
    assert sleeps.waits == [4.0]


def test_expected_totals_counts_exact_duplicates_once() -> None:
    row = generate_activity(today=TODAY, days=1, models=1)[0]
    other = {**row, "endpoint_id": "e2", "usage": Decimal("0.2"), "requests": 1}
    first = {**row, "usage": Decimal("0.1"), "requests": 2}
    totals = expected_totals([first, {**first, "date": first["date"][:10] + " 00:00:00"}, other])
    (total,) = totals.values()
    assert (total["usage"], total["requests"]) == (Decimal("0.3"), 3)


def test_base_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeOpenRouter().base_url


def test_requests_go_through_the_proxy_the_environment_names(
    fake: FakeOpenRouter, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake also answers absolute-form requests, as a forward proxy receives them: with
    # HTTP_PROXY pointing at it, a host that cannot be resolved is reached through it.
    origin = httpx.URL(fake.base_url)
    monkeypatch.setenv("HTTP_PROXY", f"http://{origin.host}:{origin.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = OpenRouterSettings(base_url="http://openrouter.invalid/api/v1", max_attempts=1)
    with OpenRouterClient(settings, sleep=sleeps, wall_clock=_noon) as client:
        result = client.get_activity(MGMT)
    assert result.rows
    assert fake.request_count() == 1


def test_a_client_that_resets_its_connection_leaves_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FakeOpenRouter() as fake:
        address = httpx.URL(fake.base_url)
        client = socket.create_connection((address.host, address.port or 80))
        client.sendall(b"GET /activity HTTP/1.1\r\n")  # half a request, then a reset
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        # The server is still up and answers the next client.
        assert loopback.get(f"{fake.base_url}/key").status_code == 401
    assert "Traceback" not in capsys.readouterr().err
