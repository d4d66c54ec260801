"""The OpenRouter API client: the endpoints the worker uses, as typed results.

One :class:`OpenRouterClient` serves a whole run from any number of threads; the HTTP itself
(retries, deadlines, size cap, error mapping) is :mod:`worker.openrouter.transport`. Keys are
passed per call and sent only in the ``Authorization`` header.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

import worker
from worker.config import OpenRouterSettings
from worker.core.days import completed_window, utc_now
from worker.core.errors import (
    EndpointNotFoundError,
    KeyChangeRefusedError,
    NotManagementKeyError,
    UnauthorizedError,
    UnknownKeyError,
)
from worker.openrouter.activity import ActivityRow, parse_activity
from worker.openrouter.analytics import AnalyticsAnswer, parse_analytics, query_body
from worker.openrouter.keys import (
    CatalogKey,
    Credits,
    KeyInfo,
    parse_credits,
    parse_key,
    parse_keys,
    parse_updated_key,
    parse_workspaces,
)
from worker.openrouter.pacing import ANALYTICS, Pace, Paces
from worker.openrouter.retry import RETRY_STATUSES, RetryPolicy
from worker.openrouter.transport import Observer, Transport, counting

USER_AGENT = f"openrouter-watcher/{worker.__version__}"
PAGE = 100  # /keys and /workspaces answer at most 100 items a page
# A change is retried on 429 and 5xx only: a 4xx (408 included) says the change itself is wrong.
CHANGE_RETRY_STATUSES = RETRY_STATUSES - {408}
CHANGEABLE = ("disabled", "limit", "limit_reset", "include_byok_in_limit", "name")


@dataclass(frozen=True)
class Activity:
    """A validated ``/activity`` answer (or one found identical to a known one)."""

    rows: list[ActivityRow]  # exact duplicates counted once; [] when ``unchanged``
    window: tuple[dt.date, dt.date]  # OpenRouter's window by our clock when the answer arrived
    digest: str  # SHA-256 of the window and the body: equal digests, the same answer
    body_digest: str  # SHA-256 of the body alone: the same answer on another day
    requests: int  # HTTP requests sent for this call, retries included
    unchanged: bool = False  # the digest was the one given: the rows were not parsed again


class OpenRouterClient:
    """OpenRouter's API as the worker uses it; thread-safe."""

    def __init__(
        self,
        settings: OpenRouterSettings,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = utc_now,
        analytics_pace: Pace = ANALYTICS,
        observer: Observer | None = None,
    ) -> None:
        """``observer`` is told of every request and retry (the daemon counts them)."""
        self.settings = settings
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if settings.http_referer:
            headers["HTTP-Referer"] = settings.http_referer
        if settings.x_title:
            headers["X-Title"] = settings.x_title
        self.http = Transport(
            settings,
            headers,
            retry=retry or RetryPolicy.from_settings(settings),
            transport=transport,
            sleep=sleep,
            clock=clock,
            wall_clock=wall_clock,
            observer=observer,
        )
        self._wall_clock = wall_clock
        self._analytics_pace = analytics_pace

    def __enter__(self) -> OpenRouterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every thread's connections."""
        self.http.close()

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self.http.requests_made

    # -- one key ------------------------------------------------------------------------------

    def get_key(self, api_key: str) -> KeyInfo:
        """``GET /key``: what OpenRouter knows about this key (management or not, limits)."""
        answer, sent = self.http.request("GET", "key", api_key)
        with counting(sent):
            return parse_key(answer.text)

    def get_activity(
        self,
        api_key: str,
        *,
        day: dt.date | None = None,
        key_hash: str | None = None,
        unless_digest: str | None = None,
    ) -> Activity:
        """``GET /activity``: the whole 30-day window, or one ``day`` (``?date=YYYY-MM-DD``);
        the whole account's, or one of its keys' (``key_hash``, its ``/keys`` hash).

        Validated against the window by our clock when the answer arrived (a run may cross
        midnight): every row must lie in it, and on ``day`` when one was asked for. An answer
        whose digest is ``unless_digest`` (the one last stored) is the same answer again: it
        is returned ``unchanged``, without parsing it (most of a re-sync's cost).
        """
        params = {"date": day.isoformat()} if day is not None else {}
        if key_hash is not None:
            params["api_key_hash"] = key_hash
        answer, sent = self.http.request("GET", "activity", api_key, params=params or None)
        window = completed_window(self._wall_clock().date())
        body_digest = hashlib.sha256(answer.body).hexdigest()
        scope = f"{window[0]}..{window[1]} {day or 'window'} {key_hash or ''} {body_digest}"
        digest = hashlib.sha256(scope.encode()).hexdigest()
        if digest == unless_digest:
            return Activity([], window, digest, body_digest, sent, unchanged=True)
        with counting(sent):
            rows = parse_activity(answer.text, window=window, day=day)
        return Activity(rows, window, digest, body_digest, sent)

    # -- the account ----------------------------------------------------------------------------

    def list_workspaces(self, api_key: str) -> list[str] | None:
        """``GET /workspaces``, every page: the account's workspace ids; None when the account
        has none to list (refused or unknown: workspaces are newer than most accounts, and
        ``/keys`` without a workspace still lists the default one)."""
        ids: list[str] = []
        while True:
            params = {"offset": str(len(ids)), "limit": str(PAGE)}
            try:
                answer, sent = self.http.request("GET", "workspaces", api_key, params=params)
            except (NotManagementKeyError, EndpointNotFoundError):
                return None
            with counting(sent):
                page, total = parse_workspaces(answer.text)
            ids.extend(page)
            if not page or len(ids) >= total:
                return ids or None

    def list_keys(self, api_key: str, workspace_id: str | None = None) -> list[CatalogKey]:
        """``GET /keys``, every page, disabled keys included: the keys of one workspace (the
        default one when None)."""
        keys: list[CatalogKey] = []
        seen: set[str] = set()
        offset = 0
        while True:
            params = {"include_disabled": "true", "offset": str(offset)}
            if workspace_id is not None:
                params["workspace_id"] = workspace_id
            answer, sent = self.http.request("GET", "keys", api_key, params=params)
            with counting(sent):
                page = parse_keys(answer.text)
            new = [key for key in page if key.hash not in seen]
            # Pages hold "at most 100": a short page need not be the last, only an empty one
            # is. A page of nothing new (a server ignoring offset) ends it too, never a loop.
            if not new:
                return keys
            keys.extend(new)
            seen.update(key.hash for key in new)
            offset += len(page)

    def update_key(self, api_key: str, key_hash: str, changes: dict[str, Any]) -> CatalogKey:
        """``PATCH /keys/{hash}`` with ``changes`` (of :data:`CHANGEABLE`; a limit in USD or
        None, a ``limit_reset`` of ``daily``, ``weekly``, ``monthly`` or None): the key as
        OpenRouter has it afterwards. Retried on 429 and 5xx only; a refusal (401, 403) is a
        :class:`KeyChangeRefusedError`, an unknown hash (404) an :class:`UnknownKeyError`."""
        unknown = set(changes) - set(CHANGEABLE)
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a key")
        body = {
            name: float(value) if isinstance(value, Decimal) else value
            for name, value in changes.items()
        }
        path = f"keys/{quote(key_hash, safe='')}"
        try:
            answer, sent = self.http.request(
                "PATCH", path, api_key, body=body, retry_statuses=CHANGE_RETRY_STATUSES
            )
        except (UnauthorizedError, NotManagementKeyError) as exc:
            refused = KeyChangeRefusedError(
                f"OpenRouter refused to change key {key_hash[:12]}… ({_status_of(exc)}): the "
                "registered management key of its account may not change keys; nothing was "
                "changed"
            )
            refused.requests = exc.requests
            raise refused from exc
        except EndpointNotFoundError as exc:
            unknown_key = UnknownKeyError(
                f"OpenRouter has no key {key_hash[:12]}… (404): it was deleted; nothing was changed"
            )
            unknown_key.requests = exc.requests
            raise unknown_key from exc
        with counting(sent):
            return parse_updated_key(answer.text)

    def list_account_keys(self, api_key: str) -> list[CatalogKey]:
        """Every key of the account, across its workspaces (the default one when the account
        has none to list): ``/workspaces`` and every ``/keys`` page of each."""
        known = self.list_workspaces(api_key)
        workspaces: list[str | None] = list(known) if known else [None]
        return [key for workspace in workspaces for key in self.list_keys(api_key, workspace)]

    def get_credits(self, api_key: str) -> Credits:
        """``GET /credits``: what the account bought and used (answers may be a minute old)."""
        answer, sent = self.http.request("GET", "credits", api_key)
        with counting(sent):
            return parse_credits(answer.text)

    def analytics(
        self,
        api_key: str,
        first: dt.date,
        last: dt.date,
        *,
        key_hash: str | None = None,
        pace: Pace | None = None,
    ) -> AnalyticsAnswer:
        """``POST /analytics/query`` for ``first`` … ``last``, per day and model: the account's
        history, or one key's (by its hash). Paced by the client's analytics pace (the
        process's shared limiter), then by ``pace`` (the account's budget) when given."""
        answer, sent = self.http.request(
            "POST",
            "analytics/query",
            api_key,
            body=query_body(first, last, key_hash),
            pace=self._analytics_pace if pace is None else Paces(self._analytics_pace, pace),
        )
        with counting(sent):
            parsed = parse_analytics(answer.text, first, last)
        return AnalyticsAnswer(parsed.rows, parsed.truncated, parsed.warnings, requests=sent)


def _status_of(exc: Exception) -> str:
    """The HTTP status OpenRouter's refusal names in its message (401 or 403)."""
    return "401" if isinstance(exc, UnauthorizedError) else "403"
