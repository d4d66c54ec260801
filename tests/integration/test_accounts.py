"""worker.vault.accounts on SQLite and PostgreSQL: users, encrypted keys, rotation, tokens."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from worker.core.errors import ConflictError, DecryptionError, NotFoundError, UsageError
from worker.store.db import transaction
from worker.store.models import KIND_MANAGEMENT, ApiKey, ApiToken, UsageStats, User
from worker.vault import accounts, tokens
from worker.vault.crypto import Keyring, generate_master_key

KEY_A = "sk-or-v1-" + "a1" * 32
KEY_B = "sk-or-v1-" + "b2" * 32

Factory = sessionmaker[Session]


def _ring() -> Keyring:
    return Keyring(base64.b64decode(generate_master_key()))


def _snapshot(factory: Factory) -> list[tuple[object, ...]]:
    with factory() as s:
        users = [
            (u.id, u.email, u.is_active, u.password_hash)
            for u in s.scalars(select(User).order_by(User.id))
        ]
        keys = [
            (k.id, k.user_id, k.name, k.is_active, k.key_encrypted, k.kind)
            for k in s.scalars(select(ApiKey).order_by(ApiKey.id))
        ]
        toks = [
            (t.id, t.user_id, t.token_hash, t.is_active)
            for t in s.scalars(select(ApiToken).order_by(ApiToken.id))
        ]
    return [*users, *keys, *toks]


def _stored(factory: Factory, key_id: int) -> tuple[int, str]:
    with factory() as s:
        key = s.get(ApiKey, key_id)
        assert key is not None
        return key.user_id, key.key_encrypted


# --- users ---------------------------------------------------------------------------------


def test_add_and_list_users(session_factory: Factory) -> None:
    alice = accounts.add_user(session_factory, "  Alice@Example.com ")
    bob = accounts.add_user(session_factory, "bob@example.com", "s3cret")
    assert (alice.email, alice.has_password, bob.has_password) == ("alice@example.com", False, True)
    with session_factory() as s:
        hashes = dict(s.execute(select(User.email, User.password_hash)).all())
    assert hashes["alice@example.com"].startswith("!")
    assert (
        hashes["bob@example.com"].startswith("scrypt$")
        and "s3cret" not in hashes["bob@example.com"]
    )
    listed = accounts.list_users(session_factory)
    assert [(u.email, u.active, u.keys, u.tokens) for u in listed] == [
        ("alice@example.com", True, 0, 0),
        ("bob@example.com", True, 0, 0),
    ]
    assert listed[0].created_at is not None and listed[0].created_at.tzinfo == dt.UTC


BAD_EMAILS = [
    "bad",
    "a@b.c",
    "x@@example.com",
    "a b@example.com",
    "@example.com",
    "a@example",
    "a" * 250 + "@example.com",
]


def _error_of(call: Callable[[], object]) -> Exception | None:
    """The exception ``call()`` raises, or None."""
    try:
        call()
    except Exception as exc:
        return exc
    return None


def test_bad_email_is_refused_before_the_database(session_factory: Factory) -> None:
    # Every case on one database (a PostgreSQL clone costs half a second): each is refused,
    # names the address, and leaves the database empty.
    problems = []
    for email in BAD_EMAILS:
        err = _error_of(lambda email=email: accounts.add_user(session_factory, email))
        text = str(err)
        if not isinstance(err, UsageError) or "invalid email address" not in text:
            problems.append(f"{email[:30]!r}: {err!r}")
        elif email.strip()[:20] not in text:
            problems.append(f"{email[:30]!r}: the message does not name it: {text}")
        if _snapshot(session_factory) != []:
            problems.append(f"{email[:30]!r}: the database changed")
    assert problems == []


def test_duplicate_email_changes_nothing(session_factory: Factory) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    before = _snapshot(session_factory)
    with pytest.raises(ConflictError, match=r"user alice@example\.com already exists"):
        accounts.add_user(session_factory, "ALICE@example.com", "pw")
    assert _snapshot(session_factory) == before


def test_empty_password_is_refused(session_factory: Factory) -> None:
    with pytest.raises(UsageError, match="password is empty"):
        accounts.add_user(session_factory, "alice@example.com", "")


def test_enable_disable_user(session_factory: Factory) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    assert accounts.set_user_active(session_factory, "alice@example.com", False) is True
    assert accounts.set_user_active(session_factory, "alice@example.com", False) is False
    assert accounts.list_users(session_factory)[0].active is False
    assert accounts.set_user_active(session_factory, "alice@example.com", True) is True
    with pytest.raises(NotFoundError, match=r"no user nobody@example\.com"):
        accounts.set_user_active(session_factory, "nobody@example.com", True)


# --- keys ----------------------------------------------------------------------------------


def test_add_key_encrypts_bound_to_its_row(session_factory: Factory, keyring: Keyring) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    view = accounts.add_key(
        session_factory,
        keyring,
        "alice@example.com",
        " prod ",
        f"  {KEY_A}\n",
        KIND_MANAGEMENT,
    )
    assert (view.name, view.kind, view.master_key_id, view.active) == (
        "prod",
        "management",
        keyring.key_id,
        True,
    )
    user_id, stored = _stored(session_factory, view.id)
    assert stored.startswith(f"v1:{keyring.key_id}:") and KEY_A not in stored
    assert keyring.decrypt(stored, user_id=user_id, key_id=view.id) == KEY_A
    listed = accounts.list_keys(session_factory, "alice@example.com")
    assert [(k.id, k.user, k.name) for k in listed] == [(view.id, "alice@example.com", "prod")]
    assert accounts.list_users(session_factory)[0].keys == 1


def test_ciphertext_moved_to_another_users_row_fails(
    session_factory: Factory, keyring: Keyring
) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    accounts.add_user(session_factory, "bob@example.com")
    a = accounts.add_key(session_factory, keyring, "alice@example.com", "k", KEY_A)
    b = accounts.add_key(session_factory, keyring, "bob@example.com", "k", KEY_B)
    with transaction(session_factory) as s:
        row_a, row_b = s.get(ApiKey, a.id), s.get(ApiKey, b.id)
        assert row_a is not None and row_b is not None
        row_b.key_encrypted = row_a.key_encrypted
    user_id, stored = _stored(session_factory, b.id)
    with pytest.raises(DecryptionError, match=f"api key {b.id}: ciphertext was altered"):
        keyring.decrypt(stored, user_id=user_id, key_id=b.id)


ADD_KEY_ERRORS: list[tuple[str, str, str, type[Exception], str]] = [
    ("nobody@example.com", "k", KEY_A, NotFoundError, "no user nobody@example.com"),
    ("off@example.com", "k", KEY_A, UsageError, "user off@example.com is disabled"),
    ("alice@example.com", "taken", KEY_A, ConflictError, "already has a key named 'taken'"),
    ("alice@example.com", "k", "  \n", UsageError, "no OpenRouter key given"),
    ("alice@example.com", "k", "hunter2-secret", UsageError, "not an OpenRouter key"),
    ("alice@example.com", "  ", KEY_A, UsageError, "key name must not be empty"),
    ("alice@example.com", "x" * 101, KEY_A, UsageError, "at most 100"),
    ("bad", "k", KEY_A, UsageError, "invalid email address 'bad'"),
]


def test_add_key_errors_change_nothing(session_factory: Factory, keyring: Keyring) -> None:
    # Every case on one seeded database (a PostgreSQL clone costs half a second): each raises
    # its error, never echoes the secret, and leaves the database as seeded.
    accounts.add_user(session_factory, "alice@example.com")
    accounts.add_user(session_factory, "off@example.com")
    accounts.set_user_active(session_factory, "off@example.com", False)
    accounts.add_key(session_factory, keyring, "alice@example.com", "taken", KEY_B)
    before = _snapshot(session_factory)
    problems = []
    for email, name, secret, error, message in ADD_KEY_ERRORS:
        case = f"{email} {name[:10]!r} {secret[:10]!r}"
        err = _error_of(
            lambda email=email, name=name, secret=secret: accounts.add_key(
                session_factory, keyring, email, name, secret
            )
        )
        if not isinstance(err, error) or message not in str(err):
            problems.append(f"{case}: {err!r}")
        if "hunter2" in str(err):
            problems.append(f"{case}: the secret is in the error")
        if _snapshot(session_factory) != before:
            problems.append(f"{case}: the database changed")
    assert problems == []


def test_same_key_name_for_different_users_is_fine(
    session_factory: Factory, keyring: Keyring
) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    accounts.add_user(session_factory, "bob@example.com")
    accounts.add_key(session_factory, keyring, "alice@example.com", "prod", KEY_A)
    accounts.add_key(session_factory, keyring, "bob@example.com", "prod", KEY_B)
    assert len(accounts.list_keys(session_factory)) == 2
    assert accounts.check_new_key(session_factory, "Bob@example.com", " new ") == (
        "bob@example.com",
        "new",
    )


def test_enable_disable_and_remove_key_with_usage(
    session_factory: Factory, keyring: Keyring
) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    key = accounts.add_key(session_factory, keyring, "alice@example.com", "prod", KEY_A)
    keep = accounts.add_key(session_factory, keyring, "alice@example.com", "keep", KEY_B)
    assert accounts.set_key_active(session_factory, key.id, False) is True
    assert accounts.set_key_active(session_factory, key.id, False) is False
    assert accounts.get_key(session_factory, key.id).active is False
    with transaction(session_factory) as s:
        for day in (1, 2):
            s.add(
                UsageStats(
                    api_key_id=key.id, date=dt.date(2025, 1, day), model="m", cost=Decimal("1.5")
                )
            )
        s.add(UsageStats(api_key_id=keep.id, date=dt.date(2025, 1, 1), model="m"))
    assert accounts.remove_key(session_factory, key.id) == 2
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(UsageStats)) == 1
        assert s.get(ApiKey, key.id) is None
    for call in (
        lambda: accounts.remove_key(session_factory, key.id),
        lambda: accounts.set_key_active(session_factory, key.id, True),
        lambda: accounts.get_key(session_factory, key.id),
    ):
        with pytest.raises(NotFoundError, match=f"no key with id {key.id}"):
            call()
    with pytest.raises(NotFoundError):
        accounts.list_keys(session_factory, "nobody@example.com")


# --- rotation ------------------------------------------------------------------------------


def _three_keys(factory: Factory, ring: Keyring) -> list[int]:
    accounts.add_user(factory, "alice@example.com")
    accounts.add_user(factory, "bob@example.com")
    return [
        accounts.add_key(factory, ring, email, name, secret).id
        for email, name, secret in (
            ("alice@example.com", "a", KEY_A),
            ("alice@example.com", "b", KEY_B),
            ("bob@example.com", "a", KEY_A + "ff"),
        )
    ]


def test_rotation_reencrypts_every_row_for_the_new_key_only(session_factory: Factory) -> None:
    old_raw, new_raw = (base64.b64decode(generate_master_key()) for _ in range(2))
    old = Keyring(old_raw)
    ids = _three_keys(session_factory, old)
    rotating = Keyring(new_raw, [old_raw])
    result = accounts.rotate_master(session_factory, rotating)
    assert (result.rotated, result.unchanged, result.master_key_id) == (3, 0, rotating.key_id)
    new_only = Keyring(new_raw)
    plain = []
    for key_id in ids:
        user_id, stored = _stored(session_factory, key_id)
        assert stored.startswith(f"v1:{new_only.key_id}:")
        plain.append(new_only.decrypt(stored, user_id=user_id, key_id=key_id))
        with pytest.raises(DecryptionError, match=f"master key {new_only.key_id}, which is not"):
            old.decrypt(stored, user_id=user_id, key_id=key_id)
    assert plain == [KEY_A, KEY_B, KEY_A + "ff"]
    assert {k.master_key_id for k in accounts.list_keys(session_factory)} == {new_only.key_id}
    again = accounts.rotate_master(session_factory, new_only)
    assert (again.rotated, again.unchanged) == (0, 3)


def test_interrupted_rotation_leaves_every_row_readable(session_factory: Factory) -> None:
    old_raw, new_raw = (base64.b64decode(generate_master_key()) for _ in range(2))
    old = Keyring(old_raw)
    ids = _three_keys(session_factory, old)
    before = _snapshot(session_factory)
    seen: list[int] = []

    def crash_after_second(key_id: int) -> None:
        seen.append(key_id)
        if len(seen) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C or the process killed mid-way

    with pytest.raises(KeyboardInterrupt):
        accounts.rotate_master(
            session_factory, Keyring(new_raw, [old_raw]), on_row=crash_after_second
        )
    assert seen == ids[:2]
    assert _snapshot(session_factory) == before
    for key_id in ids:
        user_id, stored = _stored(session_factory, key_id)
        assert old.decrypt(stored, user_id=user_id, key_id=key_id).startswith("sk-or-v1-")


def test_rotation_without_the_old_key_fails_and_changes_nothing(session_factory: Factory) -> None:
    old = _ring()
    ids = _three_keys(session_factory, old)
    before = _snapshot(session_factory)
    new = _ring()
    with pytest.raises(DecryptionError) as err:
        accounts.rotate_master(session_factory, new)
    assert str(err.value) == (
        f"cannot decrypt api key {ids[0]}: it was encrypted with master key {old.key_id}, "
        f"which is not configured (have: {new.key_id})"
    )
    assert _snapshot(session_factory) == before


# --- tokens --------------------------------------------------------------------------------


def test_token_create_verify_list_revoke(session_factory: Factory) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    view, token = accounts.create_token(session_factory, "alice@example.com", "ci")
    assert token.startswith("orw_")
    with transaction(session_factory) as s:
        found = tokens.verify(s, token)
        assert found is not None and found.id == view.id
    listed = accounts.list_tokens(session_factory, "alice@example.com")
    assert [(t.id, t.name, t.active) for t in listed] == [(view.id, "ci", True)]
    assert listed[0].last_used_at is not None
    assert accounts.list_tokens(session_factory)[0].user == "alice@example.com"
    assert accounts.revoke_token(session_factory, view.id) is True
    assert accounts.revoke_token(session_factory, view.id) is False
    with transaction(session_factory) as s:
        assert tokens.verify(s, token) is None
    with pytest.raises(NotFoundError, match="no token with id 999"):
        accounts.revoke_token(session_factory, 999)


def test_token_for_disabled_or_unknown_user_is_refused(session_factory: Factory) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    _view, token = accounts.create_token(session_factory, "alice@example.com", "ci")
    accounts.set_user_active(session_factory, "alice@example.com", False)
    before = _snapshot(session_factory)
    with pytest.raises(UsageError, match=r"user alice@example\.com is disabled"):
        accounts.create_token(session_factory, "alice@example.com", "ci2")
    with pytest.raises(NotFoundError):
        accounts.create_token(session_factory, "nobody@example.com", "ci2")
    assert _snapshot(session_factory) == before
    with transaction(session_factory) as s:
        assert tokens.verify(s, token) is None
