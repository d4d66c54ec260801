"""The accounts a guard works through: each registered management key (decrypted only for the
run, never logged) and its keys as ``/keys`` lists them now; and which listed keys are
registered management keys, which nothing here ever changes.

OpenRouter's ``/keys`` lists inference keys; should it ever list a management key, its hash is
the SHA-256 of that key (as far as the fake assumes it; no published source confirms it), so a
listed key whose hash is that of a registered management key is refused by every guard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from worker.core.errors import (
    NotFoundError,
    NotManagementKeyError,
    OpenRouterError,
    UnauthorizedError,
)
from worker.core.logs import get_logger
from worker.core.outcomes import describe_failure
from worker.openrouter import CatalogKey, OpenRouterClient
from worker.openrouter.keys import listed_hash
from worker.store import snapshots
from worker.store.db import transaction
from worker.store.models import KIND_MANAGEMENT
from worker.store.snapshots import Source
from worker.vault.crypto import Keyring

log = get_logger("worker.guards")


@dataclass(frozen=True)
class Account:
    """A registered management key and the keys of its account (as listed now)."""

    source: Source
    secret: str = field(repr=False)
    keys: list[CatalogKey]

    @property
    def id(self) -> int:
        return self.source.id

    @property
    def name(self) -> str:
        return self.source.name

    def key(self, key_hash: str) -> CatalogKey | None:
        return next((key for key in self.keys if key.hash == key_hash), None)


def management_sources(factory: sessionmaker[Session]) -> list[Source]:
    """The active registered keys of active users that are (or may be: not known yet)
    management keys, the accounts."""
    with transaction(factory) as session:
        return [s for s in snapshots.poll_sources(session) if s.kind in (KIND_MANAGEMENT, None)]


def management_hashes(
    keyring: Keyring, sources: Iterable[Source], accounts: Iterable[Account] = ()
) -> set[str]:
    """The ``/keys`` hashes the registered management keys would have, never to be changed:
    those known to be management keys, and those that just listed their account's keys."""
    found = {listed_hash(account.secret) for account in accounts}
    for source in sources:
        if source.kind == KIND_MANAGEMENT:
            secret = keyring.decrypt(source.key_encrypted, user_id=source.user_id, key_id=source.id)
            found.add(listed_hash(secret))
            del secret
    return found


def list_accounts(
    client: OpenRouterClient,
    keyring: Keyring,
    sources: Sequence[Source],
    *,
    wanted: Iterable[int] | None = None,
) -> tuple[list[Account], list[tuple[Source, str]]]:
    """Each account's keys now (``/workspaces`` and the ``/keys`` pages: nothing per key), and
    the accounts that could not be listed, with why."""
    ids = None if wanted is None else set(wanted)
    listed, failed = [], []
    for source in sources:
        if ids is not None and source.id not in ids:
            continue
        secret = keyring.decrypt(source.key_encrypted, user_id=source.user_id, key_id=source.id)
        try:
            listed.append(Account(source, secret, client.list_account_keys(secret)))
        except (NotManagementKeyError, UnauthorizedError) as exc:
            if source.kind is None:
                continue  # a key not known to be a management key, and it is not one
            reason, message = describe_failure(exc)
            failed.append((source, message))
        except OpenRouterError as exc:
            reason, message = describe_failure(exc)
            log.warning("guard_account_not_listed", api_key_id=source.id, reason=reason)
            failed.append((source, message))
    return listed, failed


def account_of(accounts: Mapping[int, Account] | Sequence[Account], account_id: int) -> Account:
    """The listed account ``account_id``, or a :class:`NotFoundError` naming it."""
    found = (
        accounts.get(account_id)
        if isinstance(accounts, Mapping)
        else next((a for a in accounts if a.id == account_id), None)
    )
    if found is None:
        raise NotFoundError(
            f"account {account_id} has no active registered management key to change its keys "
            "with: see `openrouter-watcher keys list`"
        )
    return found
