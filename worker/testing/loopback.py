"""The tests' own requests to the servers they start on 127.0.0.1.

``httpx.get`` builds a client, and with it a TLS context that loads the whole CA bundle
(about 45 ms of CPU here), for every single request, although these servers speak plain HTTP.
One client for the test process pays that once. It keeps no connection alive between
requests, so each request behaves as ``httpx.get`` would (a stopped server refuses it).
"""

from __future__ import annotations

from typing import Any

import httpx

_CLIENT = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def get(url: str, **options: Any) -> httpx.Response:
    return _CLIENT.get(url, **options)


def post(url: str, **options: Any) -> httpx.Response:
    return _CLIENT.post(url, **options)


def request(method: str, url: str, **options: Any) -> httpx.Response:
    return _CLIENT.request(method, url, **options)
