"""Who is asking: ``Authorization: Bearer orw_…`` checked against ``api_tokens``.

A token is verified by :func:`worker.vault.tokens.verify` (its SHA-256 compared in constant time,
``last_used_at`` updated, revoked tokens and tokens of disabled users refused). Every refusal
is the same 401, so a caller cannot tell an unknown token from a revoked one. A client address
that sent too many bad tokens within a minute gets 429 before its next token is even looked
up: a 256-bit token cannot be guessed, but the limit keeps a misconfigured poller or a scanner
from filling the log and the database's connection pool.

A :class:`Scope` is what a token may see: its own user's keys, or everything for an admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from starlette.requests import Request

from worker.core.logs import get_logger
from worker.daemon import metrics
from worker.daemon.http.context import HttpContext
from worker.daemon.http.responses import ApiError
from worker.store.db import transaction
from worker.store.models import ApiKey, User
from worker.vault import tokens

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = get_logger("worker.http")

MAX_ID = 2**31 - 1  # api_keys.id is a 32-bit INTEGER
REALM = 'Bearer realm="openrouter-watcher"'
REFUSED = (
    "invalid API token: it is unknown or revoked, or its user is disabled "
    "(create one with `openrouter-watcher tokens create`)"
)


@dataclass(frozen=True)
class Scope:
    """The user a token belongs to, and whether it sees every user's data (admin)."""

    user_id: int
    email: str
    admin: bool

    @property
    def only_user_id(self) -> int | None:
        """The user whose keys and accounts this scope sees, or None: every user's (admin)."""
        return None if self.admin else self.user_id

    def visible_user(self, session: Session, email: str) -> str:
        """``email`` normalised, if this scope may see that user; else a 404 naming ``user``."""
        address = email.strip().lower()
        if self.admin:
            if session.scalar(select(User.id).where(User.email == address)) is not None:
                return address
        elif address == self.email:
            return address
        raise ApiError(404, "not_found", f"no user {email!r} visible to this token", "user")

    def visible_key(self, session: Session, key_id: int, parameter: str = "key") -> int:
        """``key_id`` if the key exists and this scope may see it; else a 404 naming
        ``parameter``."""
        # Past a 32-bit id PostgreSQL would refuse the comparison itself: no such key either.
        owner = (
            session.scalar(select(ApiKey.user_id).where(ApiKey.id == key_id))
            if key_id <= MAX_ID
            else None
        )
        if owner is None or not (self.admin or owner == self.user_id):
            raise ApiError(
                404, "not_found", f"no API key {key_id} visible to this token", parameter
            )
        return key_id


def client_address(request: Request) -> str:
    """The caller's address (uvicorn applies X-Forwarded-For from [http] trusted_proxies)."""
    return request.client.host if request.client else "unknown"


def authenticate(request: Request, ctx: HttpContext) -> Scope:
    """The scope of the request's bearer token, or an :class:`ApiError` (401 or 429).

    Runs in a worker thread (it queries the database); commits ``last_used_at``.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        raise ApiError(
            401,
            "unauthorized",
            "missing Authorization header: send Authorization: Bearer orw_…",
            headers={"WWW-Authenticate": REALM},
        )
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthorized",
            "malformed Authorization header: send Authorization: Bearer orw_…",
            headers={"WWW-Authenticate": REALM},
        )
    client = client_address(request)
    wait = ctx.limiter.retry_after(client)
    if wait:
        metrics.HTTP_AUTH_FAILURES.labels(status="429").inc()
        raise ApiError(
            429,
            "rate_limited",
            f"too many invalid API tokens from this address: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    with transaction(ctx.session_factory) as session:
        row = tokens.verify(session, token)
        scope = None
        if row is not None:
            user = row.user
            scope = Scope(user_id=user.id, email=user.email, admin=bool(user.is_admin))
    if scope is None:
        ctx.limiter.failed(client)
        metrics.HTTP_AUTH_FAILURES.labels(status="401").inc()
        log.warning("http_auth_failed", client=client, path=request.url.path)
        raise ApiError(401, "unauthorized", REFUSED, headers={"WWW-Authenticate": REALM})
    return scope
