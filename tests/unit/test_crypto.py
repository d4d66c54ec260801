"""worker.vault.crypto: round trip, tamper, moved ciphertext, wrong key, key sources."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from worker.config import Settings
from worker.core.errors import DecryptionError, MasterKeyError
from worker.core.logs import mask_text
from worker.vault.crypto import Keyring, generate_master_key, key_fingerprint, master_key_id_of

PLAIN = "sk-or-v1-" + "ab" * 32


def _key(seed: int) -> bytes:
    return bytes([seed]) * 32


def _settings(**enc: object) -> Settings:
    return Settings().replace("encryption", **enc)


def test_generate_master_key_is_base64_of_32_random_bytes() -> None:
    a, b = generate_master_key(), generate_master_key()
    assert len(base64.b64decode(a, validate=True)) == 32
    assert a != b


def test_round_trip_and_format() -> None:
    ring = Keyring(_key(1))
    stored = ring.encrypt(PLAIN, user_id=3, key_id=7)
    version, kid, blob = stored.split(":")
    assert version == "v1"
    assert kid == ring.key_id == key_fingerprint(_key(1))
    assert len(kid) == 8
    assert PLAIN not in stored
    assert len(base64.b64decode(blob)) == 12 + len(PLAIN) + 16
    assert ring.decrypt(stored, user_id=3, key_id=7) == PLAIN


def test_fresh_nonce_each_encryption() -> None:
    ring = Keyring(_key(1))
    assert ring.encrypt(PLAIN, user_id=1, key_id=1) != ring.encrypt(PLAIN, user_id=1, key_id=1)


def test_one_flipped_byte_is_detected() -> None:
    ring = Keyring(_key(1))
    stored = ring.encrypt(PLAIN, user_id=1, key_id=7)
    prefix, blob = stored.rsplit(":", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[20] ^= 0x01
    tampered = f"{prefix}:{base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(DecryptionError) as err:
        ring.decrypt(tampered, user_id=1, key_id=7)
    assert str(err.value) == (
        "cannot decrypt api key 7: ciphertext was altered or belongs to another key row"
    )


@pytest.mark.parametrize(("user_id", "key_id"), [(2, 7), (1, 8)])
def test_ciphertext_moved_to_another_row_fails(user_id: int, key_id: int) -> None:
    ring = Keyring(_key(1))
    stored = ring.encrypt(PLAIN, user_id=1, key_id=7)
    with pytest.raises(DecryptionError, match=f"api key {key_id}: ciphertext was altered"):
        ring.decrypt(stored, user_id=user_id, key_id=key_id)


def test_wrong_master_key_names_the_key_ids() -> None:
    stored = Keyring(_key(1)).encrypt(PLAIN, user_id=1, key_id=7)
    other = Keyring(_key(2))
    with pytest.raises(DecryptionError) as err:
        other.decrypt(stored, user_id=1, key_id=7)
    assert str(err.value) == (
        f"cannot decrypt api key 7: it was encrypted with master key {key_fingerprint(_key(1))}, "
        f"which is not configured (have: {other.key_id})"
    )


def test_previous_keys_decrypt_and_needs_rotation() -> None:
    old = Keyring(_key(1))
    stored = old.encrypt(PLAIN, user_id=1, key_id=7)
    new = Keyring(_key(2), [_key(1)])
    assert new.key_ids == [key_fingerprint(_key(2)), key_fingerprint(_key(1))]
    assert new.decrypt(stored, user_id=1, key_id=7) == PLAIN
    assert new.needs_rotation(stored)
    assert not old.needs_rotation(stored)
    assert new.needs_rotation("garbage")
    assert master_key_id_of(stored) == old.key_id
    assert master_key_id_of("garbage") is None


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("garbage", "not in the v1:<key-id>:<data> format"),
        ("v9:abcd:AAAA", "unknown format version 'v9'"),
        ("v1:KID:!!!", "not valid base64"),
        ("v1:KID:AAAA", "too short"),
    ],
)
def test_malformed_stored_values(stored: str, message: str) -> None:
    ring = Keyring(_key(1))
    with pytest.raises(DecryptionError, match=message):
        ring.decrypt(stored.replace("KID", ring.key_id), user_id=1, key_id=4)


def test_from_keys_rejects_wrong_length() -> None:
    with pytest.raises(MasterKeyError, match="32 bytes"):
        Keyring(b"short")


def test_repr_never_shows_keys() -> None:
    key = generate_master_key()
    ring = Keyring(base64.b64decode(key))
    assert key not in repr(ring)
    assert repr(ring) == f"<Keyring current={ring.key_id} known=['{ring.key_id}']>"


def test_from_settings_key_and_previous_keys_registers_secrets() -> None:
    current, old = generate_master_key(), generate_master_key()
    ring = Keyring.from_settings(_settings(key=current, previous_keys=(old,)), env={})
    assert ring.key_id == key_fingerprint(base64.b64decode(current))
    assert ring.key_ids[1] == key_fingerprint(base64.b64decode(old))
    assert mask_text(f"a {current} b {old}") == "a [REDACTED] b [REDACTED]"


def test_from_settings_precedence_key_over_file_over_credential(tmp_path: Path) -> None:
    k_env, k_file, k_cred = (generate_master_key() for _ in range(3))
    key_file = tmp_path / "master.key"
    key_file.write_text(k_file + "\n")
    key_file.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "encryption-key").write_text(k_cred)
    env = {"CREDENTIALS_DIRECTORY": str(creds)}

    def fp(text: str) -> str:
        return key_fingerprint(base64.b64decode(text))

    both = _settings(key=k_env, key_file=str(key_file))
    assert Keyring.from_settings(both, env=env).key_id == fp(k_env)
    assert Keyring.from_settings(_settings(key_file=str(key_file)), env=env).key_id == fp(k_file)
    assert Keyring.from_settings(_settings(), env=env).key_id == fp(k_cred)


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(generate_master_key())
    key_file.chmod(0o640)
    with pytest.raises(MasterKeyError, match=r"readable by group or others \(mode 0640\)"):
        Keyring.from_settings(_settings(key_file=str(key_file)), env={})


def test_missing_key_file_and_unreadable_key_file(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        Keyring.from_settings(_settings(key_file=str(tmp_path / "nope")), env={})
    if os.geteuid() == 0:
        return  # root reads everything
    key_file = tmp_path / "master.key"
    key_file.write_text(generate_master_key())
    key_file.chmod(0o000)
    with pytest.raises(MasterKeyError, match="cannot read"):
        Keyring.from_settings(_settings(key_file=str(key_file)), env={})


def test_no_master_key_at_all() -> None:
    with pytest.raises(MasterKeyError, match="no master key configured") as err:
        Keyring.from_settings(_settings(), env={})
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"x" * 16).decode(), "is 16 bytes, expected 32"),
    ],
)
def test_malformed_master_key_never_echoes_it(text: str, message: str) -> None:
    with pytest.raises(MasterKeyError, match=message) as err:
        Keyring.from_settings(_settings(key=text), env={})
    assert text not in str(err.value)


def test_malformed_previous_key_is_named_by_position() -> None:
    with pytest.raises(MasterKeyError, match="previous_keys entry 2"):
        Keyring.from_settings(
            _settings(key=generate_master_key(), previous_keys=(generate_master_key(), "bad")),
            env={},
        )
