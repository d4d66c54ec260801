"""Users, their OpenRouter keys and their API tokens: every database access the operator's
commands (``users …``, ``keys …``, ``tokens …``) need.

Each function is one transaction on the session factory it is given. Expected problems
(unknown user, duplicate email or key name, bad email, disabled user) raise a
:class:`worker.core.errors.WatcherError` *before* anything is written, so the database is unchanged.
Functions return plain frozen views, never ORM rows, and never a plaintext key.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from worker.core.errors import ConflictError, DecryptionError, NotFoundError, UsageError
from worker.store.db import transaction
from worker.store.models import ApiKey, ApiToken, UsageStats, User
from worker.vault import passwords, tokens
from worker.vault.crypto import Keyring, master_key_id_of

# At least as strict as the schema's CHECK (email LIKE '%_@__%.__%'), so a bad address is
# reported here with its value instead of as a constraint violation.
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]{2,}\.[^@\s]{2,}$")
EMAIL_MAX = 255
NAME_MAX = 100
KEY_PREFIX = "sk-or-"


@dataclass(frozen=True)
class UserView:
    id: int
    email: str
    active: bool
    admin: bool  # its API tokens see every user's keys and accounts
    has_password: bool
    created_at: dt.datetime | None
    keys: int
    tokens: int


@dataclass(frozen=True)
class KeyView:
    id: int
    user_id: int
    user: str
    name: str
    active: bool
    kind: str | None
    master_key_id: str | None
    created_at: dt.datetime | None
    last_used_at: dt.datetime | None


@dataclass(frozen=True)
class TokenView:
    id: int
    user_id: int
    user: str
    name: str
    active: bool
    created_at: dt.datetime | None
    last_used_at: dt.datetime | None


@dataclass(frozen=True)
class RotationResult:
    rotated: int
    unchanged: int
    master_key_id: str


# --- validation ---------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """The address trimmed and lower-cased, or a UsageError that names it."""
    value = email.strip().lower()
    if len(value) > EMAIL_MAX or not EMAIL_RE.match(value):
        raise UsageError(f"invalid email address {email.strip()!r}: expected name@domain.tld")
    return value


def check_name(name: str, what: str) -> str:
    """A trimmed, non-empty name of at most 100 characters."""
    value = name.strip()
    if not value:
        raise UsageError(f"{what} name must not be empty")
    if len(value) > NAME_MAX:
        raise UsageError(f"{what} name is {len(value)} characters, at most {NAME_MAX} allowed")
    return value


def check_openrouter_key(raw: str) -> str:
    """The key with surrounding whitespace removed; UsageError if empty or not ``sk-or-…``.

    The message never repeats the value: it may be a secret pasted in the wrong place.
    """
    value = raw.strip()
    if not value:
        raise UsageError("no OpenRouter key given: pipe it on stdin or type it at the prompt")
    if not value.startswith(KEY_PREFIX) or any(ch.isspace() for ch in value):
        raise UsageError(
            "that is not an OpenRouter key: keys begin with the sk-or prefix and contain no spaces"
        )
    return value


def _user_by_email(session: Session, email: str) -> User:
    user = session.execute(select(User).where(User.email == email)).scalar_one_or_none()
    if user is None:
        raise NotFoundError(f"no user {email}: add it with `openrouter-watcher users add {email}`")
    return user


def _key_by_id(session: Session, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError(f"no key with id {key_id}: see `openrouter-watcher keys list`")
    return key


def _key_view(key: ApiKey, email: str) -> KeyView:
    return KeyView(
        id=key.id,
        user_id=key.user_id,
        user=email,
        name=key.name,
        active=bool(key.is_active),
        kind=key.kind,
        master_key_id=master_key_id_of(key.key_encrypted),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
    )


def _token_view(token: ApiToken, email: str) -> TokenView:
    return TokenView(
        id=token.id,
        user_id=token.user_id,
        user=email,
        name=token.name,
        active=bool(token.is_active),
        created_at=token.created_at,
        last_used_at=token.last_used_at,
    )


# --- users ---------------------------------------------------------------------------------


def add_user(
    factory: sessionmaker[Session],
    email: str,
    password: str | None = None,
    *,
    admin: bool = False,
) -> UserView:
    """Create a user (an admin with ``admin``); without a password an unusable hash is stored."""
    address = normalize_email(email)
    if password is not None and not password:
        raise UsageError("the password is empty: omit --password-stdin for a user without one")
    hashed = passwords.hash_password(password) if password else passwords.unusable_password()
    try:
        with transaction(factory) as session:
            if session.execute(select(User.id).where(User.email == address)).first():
                raise ConflictError(f"user {address} already exists")
            user = User(email=address, password_hash=hashed, is_active=True, is_admin=admin)
            session.add(user)
            session.flush()
            return UserView(
                id=user.id,
                email=user.email,
                active=True,
                admin=admin,
                has_password=password is not None,
                created_at=user.created_at,
                keys=0,
                tokens=0,
            )
    except IntegrityError as exc:  # a concurrent `users add` won the race
        raise ConflictError(f"user {address} already exists") from exc


def list_users(factory: sessionmaker[Session]) -> list[UserView]:
    """Every user with the number of keys and tokens, by id."""
    keys = select(ApiKey.user_id, func.count().label("n")).group_by(ApiKey.user_id).subquery()
    toks = select(ApiToken.user_id, func.count().label("n")).group_by(ApiToken.user_id).subquery()
    with factory() as session:
        rows = session.execute(
            select(User, func.coalesce(keys.c.n, 0), func.coalesce(toks.c.n, 0))
            .outerjoin(keys, keys.c.user_id == User.id)
            .outerjoin(toks, toks.c.user_id == User.id)
            .order_by(User.id)
        ).all()
        return [
            UserView(
                id=u.id,
                email=u.email,
                active=bool(u.is_active),
                admin=bool(u.is_admin),
                has_password=passwords.is_usable(u.password_hash),
                created_at=u.created_at,
                keys=int(k),
                tokens=int(t),
            )
            for u, k, t in rows
        ]


def set_user_active(factory: sessionmaker[Session], email: str, active: bool) -> bool:
    """Enable or disable a user; returns whether anything changed."""
    address = normalize_email(email)
    with transaction(factory) as session:
        user = _user_by_email(session, address)
        changed = bool(user.is_active) != active
        user.is_active = active
        return changed


def set_user_admin(factory: sessionmaker[Session], email: str, admin: bool) -> bool:
    """Make a user an admin (its tokens see every user's data) or not; returns whether
    anything changed."""
    address = normalize_email(email)
    with transaction(factory) as session:
        user = _user_by_email(session, address)
        changed = bool(user.is_admin) != admin
        user.is_admin = admin
        return changed


# --- keys ----------------------------------------------------------------------------------


def check_new_key(factory: sessionmaker[Session], email: str, name: str) -> tuple[str, str]:
    """Validate a `keys add` before any network call: (email, name) or an error."""
    address, key_name = normalize_email(email), check_name(name, "key")
    with factory() as session:
        _check_key_owner(session, address, key_name)
    return address, key_name


def _check_key_owner(session: Session, email: str, name: str) -> User:
    user = _user_by_email(session, email)
    if not user.is_active:
        raise UsageError(
            f"user {email} is disabled: enable it with `openrouter-watcher users enable {email}`"
        )
    clash = session.execute(
        select(ApiKey.id).where(ApiKey.user_id == user.id, ApiKey.name == name)
    ).first()
    if clash:
        raise ConflictError(f"user {email} already has a key named {name!r} (id {clash[0]})")
    return user


def add_key(
    factory: sessionmaker[Session],
    keyring: Keyring,
    email: str,
    name: str,
    plaintext: str,
    kind: str | None = None,
) -> KeyView:
    """Encrypt and store a key for a user, in one transaction.

    The ciphertext's associated data includes the row id, so the row is inserted first with a
    placeholder, flushed to learn its id, then given its ciphertext before the commit.
    """
    address, key_name = normalize_email(email), check_name(name, "key")
    secret = check_openrouter_key(plaintext)
    with transaction(factory) as session:
        user = _check_key_owner(session, address, key_name)
        _refuse_registered(session, keyring, secret)
        key = ApiKey(
            user_id=user.id, name=key_name, key_encrypted="pending", kind=kind, is_active=True
        )
        session.add(key)
        session.flush()
        key.key_encrypted = keyring.encrypt(secret, user_id=user.id, key_id=key.id)
        key.fingerprint = keyring.fingerprints(secret)[keyring.key_id]
        session.flush()
        return _key_view(key, user.email)


def check_not_registered(factory: sessionmaker[Session], keyring: Keyring, plaintext: str) -> None:
    """ConflictError if this OpenRouter key is registered already (before any network call)."""
    with transaction(factory) as session:
        _refuse_registered(session, keyring, check_openrouter_key(plaintext))


def _refuse_registered(session: Session, keyring: Keyring, secret: str) -> None:
    """The same OpenRouter key under two names would count its spend twice: refuse it.

    Compared through the keyed fingerprints stored beside the ciphertexts (each computed under
    the master key that encrypted its row); rows from before fingerprints are given theirs
    first, by decrypting them.
    """
    for legacy in session.scalars(select(ApiKey).where(ApiKey.fingerprint.is_(None))):
        try:
            plain = keyring.decrypt(legacy.key_encrypted, user_id=legacy.user_id, key_id=legacy.id)
        except DecryptionError:
            continue  # no configured master key reads it: nothing to compare with
        legacy.fingerprint = keyring.fingerprint_of(plain, legacy.key_encrypted)
    session.flush()
    candidates = list(keyring.fingerprints(secret).values())
    clash = session.execute(
        select(ApiKey.id, ApiKey.name, User.email)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.fingerprint.in_(candidates))
        .limit(1)
    ).first()
    if clash is not None:
        raise ConflictError(
            f"this OpenRouter key is already registered as key {clash.id} ({clash.name!r} of "
            f"{clash.email}): a key registered twice would count its spend twice"
        )


def list_keys(factory: sessionmaker[Session], email: str | None = None) -> list[KeyView]:
    """Keys (of one user, or all) by id; never the key itself."""
    with factory() as session:
        query = select(ApiKey, User.email).join(User, User.id == ApiKey.user_id)
        if email is not None:
            query = query.where(User.id == _user_by_email(session, normalize_email(email)).id)
        rows = session.execute(query.order_by(ApiKey.id)).all()
        return [_key_view(key, mail) for key, mail in rows]


def set_key_active(factory: sessionmaker[Session], key_id: int, active: bool) -> bool:
    """Enable or disable a key; returns whether anything changed."""
    with transaction(factory) as session:
        key = _key_by_id(session, key_id)
        changed = bool(key.is_active) != active
        key.is_active = active
        return changed


def get_key(factory: sessionmaker[Session], key_id: int) -> KeyView:
    """One key's view, or NotFoundError."""
    with factory() as session:
        key = _key_by_id(session, key_id)
        return _key_view(key, key.user.email)


def remove_key(factory: sessionmaker[Session], key_id: int) -> int:
    """Delete a key and its usage rows; returns how many usage rows went with it."""
    with transaction(factory) as session:
        _key_by_id(session, key_id)
        # Explicit, not just ON DELETE CASCADE: the count is reported, and it does not depend
        # on SQLite's foreign_keys pragma being on.
        deleted = session.execute(delete(UsageStats).where(UsageStats.api_key_id == key_id))
        usage = cast("CursorResult[Any]", deleted).rowcount
        session.execute(delete(ApiKey).where(ApiKey.id == key_id))
        return int(usage or 0)


def rotate_master(
    factory: sessionmaker[Session], keyring: Keyring, *, on_row: Callable[[int], None] | None = None
) -> RotationResult:
    """Re-encrypt every key not under the current master key, in one transaction.

    Rows are decrypted with whichever configured key (current or previous) they name; if any
    row cannot be decrypted, or anything else fails, the whole rotation rolls back and every
    row stays as it was. ``on_row(key_id)`` is called after each row (progress; tests use it
    to interrupt the rotation).
    """
    rotated = unchanged = 0
    with transaction(factory) as session:
        for key in session.execute(select(ApiKey).order_by(ApiKey.id)).scalars():
            if not keyring.needs_rotation(key.key_encrypted) and key.fingerprint is not None:
                unchanged += 1
                continue
            plain = keyring.decrypt(key.key_encrypted, user_id=key.user_id, key_id=key.id)
            if not keyring.needs_rotation(key.key_encrypted):
                key.fingerprint = keyring.fingerprints(plain)[keyring.key_id]
                unchanged += 1
                continue
            key.key_encrypted = keyring.encrypt(plain, user_id=key.user_id, key_id=key.id)
            # The fingerprint follows the master key that encrypts the row.
            key.fingerprint = keyring.fingerprints(plain)[keyring.key_id]
            session.flush()
            rotated += 1
            if on_row is not None:
                on_row(key.id)
    return RotationResult(rotated=rotated, unchanged=unchanged, master_key_id=keyring.key_id)


# --- tokens --------------------------------------------------------------------------------


def create_token(factory: sessionmaker[Session], email: str, name: str) -> tuple[TokenView, str]:
    """A new API token for an active user: its view and the plaintext (shown once)."""
    address, token_name = normalize_email(email), check_name(name, "token")
    with transaction(factory) as session:
        user = _user_by_email(session, address)
        if not user.is_active:
            raise UsageError(
                f"user {address} is disabled: enable it with "
                f"`openrouter-watcher users enable {address}`"
            )
        row, plaintext = tokens.create(session, user_id=user.id, name=token_name)
        return _token_view(row, user.email), plaintext


def list_tokens(factory: sessionmaker[Session], email: str | None = None) -> list[TokenView]:
    """Tokens (of one user, or all) by id; never the token or its hash."""
    with factory() as session:
        query = select(ApiToken, User.email).join(User, User.id == ApiToken.user_id)
        if email is not None:
            query = query.where(
                ApiToken.user_id == _user_by_email(session, normalize_email(email)).id
            )
        rows = session.execute(query.order_by(ApiToken.id)).all()
        return [_token_view(tok, mail) for tok, mail in rows]


def revoke_token(factory: sessionmaker[Session], token_id: int) -> bool:
    """Revoke a token; returns whether it was active."""
    with transaction(factory) as session:
        row = session.get(ApiToken, token_id)
        was_active = row is not None and bool(row.is_active)
        tokens.revoke(session, token_id)
        return was_active
