"""Password hashing with scrypt (memory-hard, in the standard library).

Stored format, self-describing so the cost can be raised later without breaking old hashes::

    scrypt$n=<N>,r=<r>,p=<p>$<base64 salt>$<base64 hash>

A user created without a password gets :func:`unusable_password`: a value starting with ``!``
that no password verifies against (the same convention as ``/etc/shadow``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
UNUSABLE_PREFIX = "!"
# N=2**15, r=8: 32 MiB and ~0.1 s per hash on a small server, OWASP's minimum for scrypt.
DEFAULT_N = 2**15
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem must exceed 128·N·r or OpenSSL refuses; allow twice that.
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 1024 * 1024,
        dklen=HASH_BYTES,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(
    password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """The self-describing scrypt hash of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"{SCHEME}$n={n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def unusable_password() -> str:
    """A password hash that matches no password (for users without one)."""
    return UNUSABLE_PREFIX + secrets.token_hex(8)


def is_usable(stored: str) -> bool:
    """False for hashes made by :func:`unusable_password` (or anything not scrypt)."""
    return stored.startswith(SCHEME + "$")


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; False for unusable or malformed hashes."""
    if not is_usable(stored):
        return False
    try:
        _scheme, params, salt_b64, digest_b64 = stored.split("$")
        values = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
    except (ValueError, KeyError, binascii.Error):
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)
