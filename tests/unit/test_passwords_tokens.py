"""worker.vault.passwords (scrypt) and worker.vault.tokens (create / verify / revoke) on a SQLite
file."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from worker.core.errors import NotFoundError
from worker.store.db import create_db_engine, init_db, make_session_factory
from worker.store.models import ApiToken, User
from worker.vault import passwords, tokens

FAST = {"n": 2**10, "r": 8, "p": 1}


def test_hash_is_self_describing_salted_and_verifies() -> None:
    stored = passwords.hash_password("correct horse", **FAST)
    scheme, params, _salt, _digest = stored.split("$")
    assert (scheme, params) == ("scrypt", "n=1024,r=8,p=1")
    assert passwords.hash_password("correct horse", **FAST) != stored
    assert passwords.verify_password("correct horse", stored)
    assert not passwords.verify_password("correct horsE", stored)
    assert passwords.is_usable(stored)


def test_default_cost_is_memory_hard() -> None:
    assert passwords.hash_password("x").split("$")[1] == "n=32768,r=8,p=1"


def test_unusable_password_matches_nothing() -> None:
    stored = passwords.unusable_password()
    assert stored.startswith("!")
    assert not passwords.is_usable(stored)
    assert not passwords.verify_password("", stored)
    assert not passwords.verify_password(stored, stored)


@pytest.mark.parametrize(
    "stored",
    [
        "scrypt$n=1024$AA==$AA==",
        "scrypt$junk",
        "scrypt$n=x,r=8,p=1$AA==$AA==",
        "scrypt$n=1024,r=8,p=1$!!$AA==",
    ],
)
def test_malformed_hash_does_not_verify(stored: str) -> None:
    assert not passwords.verify_password("x", stored)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 't.db'}")
    init_db(engine)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def _user(session: Session, email: str = "alice@example.com") -> User:
    user = User(email=email, password_hash="!x")
    session.add(user)
    session.commit()
    return user


def test_create_stores_only_a_sha256_of_a_prefixed_random_token(session: Session) -> None:
    user = _user(session)
    row, token = tokens.create(session, user_id=user.id, name="ci")
    session.commit()
    assert token.startswith("orw_") and len(token) >= 4 + 43
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in row.token_hash
    _row2, token2 = tokens.create(session, user_id=user.id, name="ci2")
    assert token2 != token


def test_verify_accepts_and_updates_last_used(session: Session) -> None:
    user = _user(session)
    row, token = tokens.create(session, user_id=user.id, name="ci")
    session.commit()
    assert row.last_used_at is None
    found = tokens.verify(session, token)
    session.commit()
    assert found is not None and found.id == row.id
    stored = session.get(ApiToken, row.id)
    assert stored is not None and stored.last_used_at is not None
    assert stored.last_used_at.tzinfo == dt.UTC


@pytest.mark.parametrize("bad", ["", "orw_nope", "Bearer x", "sk-or-v1-x"])
def test_verify_rejects_unknown_tokens(session: Session, bad: str) -> None:
    user = _user(session)
    tokens.create(session, user_id=user.id, name="ci")
    session.commit()
    assert tokens.verify(session, bad) is None


def test_verify_rejects_a_token_with_one_changed_character(session: Session) -> None:
    user = _user(session)
    _row, token = tokens.create(session, user_id=user.id, name="ci")
    session.commit()
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert tokens.verify(session, altered) is None


def test_revoked_token_is_rejected(session: Session) -> None:
    user = _user(session)
    row, token = tokens.create(session, user_id=user.id, name="ci")
    tokens.revoke(session, row.id)
    session.commit()
    assert tokens.verify(session, token) is None
    assert session.get(ApiToken, row.id).is_active is False  # type: ignore[union-attr]


def test_token_of_disabled_user_is_rejected(session: Session) -> None:
    user = _user(session)
    _row, token = tokens.create(session, user_id=user.id, name="ci")
    user.is_active = False
    session.commit()
    assert tokens.verify(session, token) is None


def test_revoke_unknown_token(session: Session) -> None:
    with pytest.raises(NotFoundError, match="no token with id 99"):
        tokens.revoke(session, 99)
