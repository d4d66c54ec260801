"""API tokens: create, verify, revoke.

A token is ``orw_`` followed by 32 random bytes in URL-safe base64 (``secrets.token_urlsafe``);
the prefix makes a leaked token recognisable (secret scanners, logs). Only its SHA-256 is
stored. A fast hash is right here, unlike for passwords: a 256-bit random token cannot be
guessed, so slowing down each guess buys nothing, and every API request must verify quickly.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.core.errors import NotFoundError
from worker.store.models import ApiToken, User, utcnow

TOKEN_PREFIX = "orw_"  # noqa: S105 (a public prefix, not a secret)
TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored in ``api_tokens.token_hash``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token with the recognisable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def create(session: Session, *, user_id: int, name: str) -> tuple[ApiToken, str]:
    """Add a token for a user; returns the row and the plaintext (shown once, never stored)."""
    token = new_token()
    row = ApiToken(user_id=user_id, name=name, token_hash=hash_token(token), is_active=True)
    session.add(row)
    session.flush()
    return row, token


def verify(session: Session, token: str) -> ApiToken | None:
    """The active token row for ``token`` (its ``last_used_at`` updated), else None.

    Rejects unknown, malformed and revoked tokens and tokens whose user is disabled. The
    caller's transaction commits the ``last_used_at`` update.
    """
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = hash_token(token)
    # Looking the row up by hash is safe: the hash of an unguessable token reveals nothing
    # through timing. The explicit constant-time comparison guards against an index collation
    # or driver ever matching loosely.
    rows = session.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == digest)
    ).all()
    for row, user in rows:
        if hmac.compare_digest(row.token_hash, digest):
            if not row.is_active or not user.is_active:
                return None
            row.last_used_at = utcnow()
            session.flush()
            return row
    return None


def revoke(session: Session, token_id: int) -> ApiToken:
    """Mark a token revoked (kept for the audit trail); NotFoundError if there is none."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"no token with id {token_id}: see `openrouter-watcher tokens list`")
    row.is_active = False
    session.flush()
    return row
