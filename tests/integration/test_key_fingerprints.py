"""One OpenRouter key, one registration: a key registered under a second name would count its
spend twice. Recognised through keyed fingerprints, never a plain hash (SQLite, PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.cli import main
from worker.core.errors import ConflictError
from worker.store.models import ApiKey
from worker.vault import accounts
from worker.vault.crypto import Keyring, generate_master_key

KEY = "sk-or-v1-" + "7" * 64
OTHER = "sk-or-v1-" + "8" * 64


@pytest.fixture
def users(session_factory: sessionmaker[Session]) -> None:
    accounts.add_user(session_factory, "alice@example.com")
    accounts.add_user(session_factory, "bob@example.com")


def _fingerprints(factory: sessionmaker[Session]) -> dict[int, str | None]:
    with factory() as session:
        return {key_id: fp for key_id, fp in session.execute(select(ApiKey.id, ApiKey.fingerprint))}


def test_the_same_key_under_another_name_or_user_is_refused_naming_the_first(
    session_factory: sessionmaker[Session], keyring: Keyring, users: None
) -> None:
    first = accounts.add_key(session_factory, keyring, "alice@example.com", "prod", KEY)
    accounts.add_key(session_factory, keyring, "alice@example.com", "other", OTHER)
    for email, name in (("alice@example.com", "again"), ("bob@example.com", "prod")):
        with pytest.raises(ConflictError, match=rf"already registered as key {first.id} \('prod'"):
            accounts.add_key(session_factory, keyring, email, name, KEY + "\n")
    assert len(accounts.list_keys(session_factory)) == 2
    stored = _fingerprints(session_factory)[first.id]
    # Keyed: neither the key, nor a plain hash of it, nor the same under another master key.
    assert stored is not None and len(stored) == 64
    assert stored != hashlib.sha256(KEY.encode()).hexdigest()
    other_ring = Keyring(base64.b64decode(generate_master_key()))
    assert stored not in other_ring.fingerprints(KEY).values()


def test_keys_from_before_fingerprints_are_recognised_too(
    session_factory: sessionmaker[Session], keyring: Keyring, users: None
) -> None:
    legacy = accounts.add_key(session_factory, keyring, "alice@example.com", "prod", KEY)
    with session_factory.begin() as session:
        session.execute(update(ApiKey).values(fingerprint=None))
    with pytest.raises(ConflictError, match=f"key {legacy.id}"):
        accounts.add_key(session_factory, keyring, "bob@example.com", "copy", KEY)
    assert _fingerprints(session_factory)[legacy.id] is None  # a refusal changes nothing
    accounts.add_key(session_factory, keyring, "bob@example.com", "another", OTHER)
    assert _fingerprints(session_factory)[legacy.id] is not None  # filled in on the way


def test_rotating_the_master_key_keeps_duplicates_recognised(
    session_factory: sessionmaker[Session], keyring: Keyring, master_key: str, users: None
) -> None:
    first = accounts.add_key(session_factory, keyring, "alice@example.com", "prod", KEY)
    before = _fingerprints(session_factory)[first.id]
    new = Keyring(base64.b64decode(generate_master_key()), [base64.b64decode(master_key)])
    # During the rotation window (rows still under the old key) and after it.
    with pytest.raises(ConflictError):
        accounts.add_key(session_factory, new, "bob@example.com", "copy", KEY)
    accounts.rotate_master(session_factory, new)
    after = _fingerprints(session_factory)[first.id]
    assert after == new.fingerprints(KEY)[new.key_id] != before
    with pytest.raises(ConflictError):
        accounts.add_key(session_factory, new, "bob@example.com", "copy", KEY)


def test_keys_add_refuses_a_duplicate_with_exit_2_before_asking_openrouter(
    db_url: str, master_key: str, users: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", db_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_ENCRYPTION_KEY", master_key)
    monkeypatch.setenv("OPENROUTER_WATCHER_CONFIG", "/dev/null")

    def add(name: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        argv = ["keys", "add", "--user", "alice@example.com", "--name", name, "--no-verify"]
        code = main(argv, stdin=io.StringIO(KEY), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    assert add("prod")[0] == 0
    # No --no-verify: a verification would fail (no OpenRouter here), so exit 2 proves the
    # duplicate was refused first.
    out, err = io.StringIO(), io.StringIO()
    argv = ["keys", "add", "--user", "alice@example.com", "--name", "copy"]
    code = main(argv, stdin=io.StringIO(KEY), stdout=out, stderr=err)
    assert code == 2
    assert err.getvalue().count("\n") == 1
    assert err.getvalue().startswith("error: this OpenRouter key is already registered as key 1")
    assert KEY not in err.getvalue() + out.getvalue()
