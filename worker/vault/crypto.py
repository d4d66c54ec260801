"""AES-256-GCM for the OpenRouter keys stored in ``api_keys.key_encrypted``.

Stored format (self-describing and versioned)::

    v1:<key-id>:<base64(nonce ‖ ciphertext ‖ tag)>

``key-id`` is the first 8 hex digits of SHA-256 of the master key, so a ciphertext names the
master key it needs and a wrong or missing key is reported as such. Every encryption uses a
fresh random 96-bit nonce. The associated data binds the ciphertext to its owner
(``users.id``) and its row (``api_keys.id``): a ciphertext copied into another row fails to
decrypt instead of silently handing one user's key to another.

Where the master key comes from, first match wins:

1. ``[encryption] key`` — normally from ``OPENROUTER_WATCHER_ENCRYPTION_KEY``, which the
   configuration loader merges into the settings;
2. ``[encryption] key_file`` — a file holding the base64 key, refused unless only its owner
   can read it (mode 0600 or 0400);
3. ``$CREDENTIALS_DIRECTORY/encryption-key`` — a systemd credential (``LoadCredential=``).

``[encryption] previous_keys`` (or ``OPENROUTER_WATCHER_ENCRYPTION_PREVIOUS_KEYS``, comma
separated) lists old master keys still accepted for decryption while rotating.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from worker.core.errors import DecryptionError, MasterKeyError
from worker.core.logs import register_secret

# cryptography is imported by what encrypts, decrypts or fingerprints: `keys list` only
# parses the stored format (master_key_id_of) and should not pay for loading it.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from worker.config import Settings

FORMAT_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
CREDENTIAL_NAME = "encryption-key"


def generate_master_key() -> str:
    """A new random 256-bit master key, base64 encoded (what ``generate-key`` prints)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def create_key_file(path: Path) -> None:
    """A new master key in a new file that only its owner can read (never over an existing
    one: losing a key loses every key it encrypted)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_master_key() + "\n")


def key_fingerprint(key: bytes) -> str:
    """The short id of a master key: 8 hex digits of its SHA-256 (not enough to guess it)."""
    return hashlib.sha256(key).hexdigest()[:8]


def decode_master_key(text: str, origin: str) -> bytes:
    """Base64 text → 32 key bytes, or a :class:`MasterKeyError` naming ``origin``, never the key."""
    stripped = text.strip()
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(
            f"the master key from {origin} is not valid base64: generate one "
            "with `openrouter-watcher generate-key`"
        ) from None
    if len(raw) != KEY_BYTES:
        raise MasterKeyError(
            f"the master key from {origin} is {len(raw)} bytes, expected "
            f"{KEY_BYTES} (base64 of 32 random bytes): generate one with "
            "`openrouter-watcher generate-key`"
        )
    return raw


def _read_key_file(path: Path, origin: str, *, check_mode: bool) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MasterKeyError(f"{origin} {path} does not exist") from None
    except OSError as exc:
        raise MasterKeyError(f"cannot read {origin} {path}: {exc.strerror}") from None
    if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(
            f"{origin} {path} is readable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}): run chmod 600 {path}"
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise MasterKeyError(f"cannot read {origin} {path}: {reason}") from None


def _fingerprint_key(master: bytes) -> bytes:
    # A key of its own for fingerprints (HKDF with a purpose label): the master key itself
    # only ever encrypts.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"openrouter-watcher key fingerprint v1",
    ).derive(master)


def _aad(user_id: int, key_id: int) -> bytes:
    # Binds the ciphertext to its owner and row; the format version is included so a future
    # v2 cannot be fed a v1 ciphertext that happens to decrypt.
    return f"openrouter-watcher:{FORMAT_VERSION}:user={int(user_id)}:api_key={int(key_id)}".encode()


class Keyring:
    """The current master key (used to encrypt) and the previous ones (still decrypt)."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        for key in (current, *previous):
            if len(key) != KEY_BYTES:
                raise MasterKeyError(f"a master key must be {KEY_BYTES} bytes, got {len(key)}")
        self._current = AESGCM(current)
        self.key_id: str = key_fingerprint(current)
        self._ciphers: dict[str, AESGCM] = {self.key_id: self._current}
        self._fingerprint_keys: dict[str, bytes] = {self.key_id: _fingerprint_key(current)}
        for key in previous:
            self._ciphers.setdefault(key_fingerprint(key), AESGCM(key))
            self._fingerprint_keys.setdefault(key_fingerprint(key), _fingerprint_key(key))

    def __repr__(self) -> str:  # never the keys
        return f"<Keyring current={self.key_id} known={sorted(self._ciphers)}>"

    @property
    def key_ids(self) -> list[str]:
        """Ids of every configured master key, the current one first."""
        return list(self._ciphers)

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Keyring:
        """The keyring the configuration describes; :class:`MasterKeyError` if there is none.

        Every master key found (its base64 text) is registered with the log masker.
        """
        env = os.environ if env is None else env
        enc = settings.encryption
        if enc.key.strip():
            text, origin = enc.key, "[encryption] key (or OPENROUTER_WATCHER_ENCRYPTION_KEY)"
        elif enc.key_file.strip():
            path = Path(enc.key_file).expanduser()
            origin = "[encryption] key_file"
            text = _read_key_file(path, origin, check_mode=True)
        elif env.get("CREDENTIALS_DIRECTORY"):
            path = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
            origin = "systemd credential"
            # systemd creates credentials readable only by the service user; its directory
            # mode is its business, so no mode check here.
            text = _read_key_file(path, origin, check_mode=False)
        else:
            raise MasterKeyError(
                "no master key configured: set OPENROUTER_WATCHER_ENCRYPTION_KEY, "
                "[encryption] key_file, or a systemd credential named encryption-key "
                "(generate one with `openrouter-watcher generate-key`)"
            )
        register_secret(text.strip())
        current = decode_master_key(text, origin)
        previous = []
        for index, old in enumerate(enc.previous_keys):
            register_secret(old.strip())
            previous.append(decode_master_key(old, f"[encryption] previous_keys entry {index + 1}"))
        return cls(current, previous)

    def encrypt(self, plaintext: str, *, user_id: int, key_id: int) -> str:
        """``v1:<key-id>:<base64(nonce‖ciphertext)>`` under the current master key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext.encode("utf-8"), _aad(user_id, key_id))
        blob = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{FORMAT_VERSION}:{self.key_id}:{blob}"

    def decrypt(self, stored: str, *, user_id: int, key_id: int) -> str:
        """The plaintext, or a :class:`DecryptionError` naming the row and master key id."""
        parts = parse_stored(stored)
        if parts is None:
            raise DecryptionError(
                f"cannot decrypt api key {key_id}: stored value is not in the "
                f"{FORMAT_VERSION}:<key-id>:<data> format"
            )
        version, master_id, blob = parts
        if version != FORMAT_VERSION:
            raise DecryptionError(
                f"cannot decrypt api key {key_id}: unknown format version "
                f"{version[:10]!r} (this code reads {FORMAT_VERSION})"
            )
        cipher = self._ciphers.get(master_id)
        if cipher is None:
            raise DecryptionError(
                f"cannot decrypt api key {key_id}: it was encrypted with master key {master_id}, "
                f"which is not configured (have: {', '.join(self._ciphers)})"
            )
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise DecryptionError(
                f"cannot decrypt api key {key_id}: stored value is not valid base64 (altered?)"
            ) from None
        if len(raw) <= NONCE_BYTES:
            raise DecryptionError(
                f"cannot decrypt api key {key_id}: stored value is too short (altered?)"
            )
        from cryptography.exceptions import InvalidTag

        try:
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(user_id, key_id))
        except InvalidTag:
            raise DecryptionError(
                f"cannot decrypt api key {key_id}: ciphertext was altered or "
                "belongs to another key row"
            ) from None
        return plain.decode("utf-8")

    def fingerprints(self, plaintext: str) -> dict[str, str]:
        """The keyed fingerprint of ``plaintext`` under every configured master key, by master
        key id: HMAC-SHA256 under a key derived (HKDF) from that master key.

        Stored beside a ciphertext (computed under the master key that encrypted it), it lets
        the same OpenRouter key be recognised without decrypting every row. Never a plain hash
        of the key: without the master key, a stolen database cannot confirm a guessed key.
        """
        return {
            key_id: hmac.new(secret, plaintext.encode("utf-8"), hashlib.sha256).hexdigest()
            for key_id, secret in self._fingerprint_keys.items()
        }

    def fingerprint_of(self, plaintext: str, stored: str) -> str | None:
        """The fingerprint of ``plaintext`` under the master key ``stored`` names (None when
        that key is not configured)."""
        key_id = master_key_id_of(stored)
        return self.fingerprints(plaintext).get(key_id) if key_id else None

    def needs_rotation(self, stored: str) -> bool:
        """True unless the value is a v1 ciphertext under the current master key."""
        return master_key_id_of(stored) != self.key_id


class StoredKey(NamedTuple):
    """The parts of ``api_keys.key_encrypted``: ``<version>:<master key id>:<data>``."""

    version: str
    master_key_id: str
    blob: str


def parse_stored(stored: str) -> StoredKey | None:
    """The parts of a stored ciphertext, or None if it is not ``<version>:<key-id>:<data>``.

    The one place that reads the format.
    """
    parts = stored.split(":", 2)
    if len(parts) != 3 or not parts[1]:
        return None
    return StoredKey(*parts)


def master_key_id_of(stored: str) -> str | None:
    """The master key id a stored value names, or None if it is not in the v1 format."""
    parts = parse_stored(stored)
    return parts.master_key_id if parts is not None and parts.version == FORMAT_VERSION else None
