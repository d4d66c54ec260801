"""Delivery through Apprise: one library for Slack, Discord, Telegram, e-mail, Teams, ntfy,
generic webhooks and the rest, instead of hand-written senders.

Why after the poll's commit, in the poll job, and not a queue of its own: the alerts are in the
database before anything is sent (the outbox, ``alert_notifications``), so a crash or a
restart loses nothing and repeats nothing; sending right after the poll keeps one job and one
lock. Each notification is claimed before it is sent (``sending``, a conditional UPDATE), so
two senders (two daemons around a failover) never send the same one; a sender that dies
between its claim and its record leaves the claim, which the next drain hands back after
:func:`claim_timeout`: the one case where a receiver may get a message twice (at-least-once,
documented in docs/alerts.md). It is bounded so it never holds up the
figures: each attempt has short connect and read timeouts, each notification at most
``[live] delivery_attempts`` attempts within ``delivery_deadline_seconds`` (tenacity, with
exponential backoff), and a channel that fails is not tried again until the next poll, which
retries what is still undelivered until ``give_up_hours``.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from worker.config import LiveSettings, Settings
from worker.config.rules import Channel
from worker.core.days import utc_now
from worker.core.errors import ConfigError, WatcherError
from worker.core.logs import get_logger, mask_text, register_secret
from worker.store import alerts as store
from worker.store.db import transaction

log = get_logger(__name__)

SOCKET_TIMEOUT = 4.0  # seconds per connect and per read: a receiver that hangs is a failure


class DeliveryError(WatcherError):
    """The notification could not be delivered."""


@dataclass(slots=True)
class DeliveryCounts:
    sent: int = 0
    failed: int = 0
    abandoned: int = 0
    deferred: int = 0  # left for the next poll: their channel failed earlier in this one
    # Failed and abandoned deliveries by channel name, for the daemon's counter.
    failed_channels: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "abandoned": self.abandoned,
            "deferred": self.deferred,
        }


@functools.cache
def _apprise() -> Any:
    # Apprise's e-mail plugin imports the standard library's imghdr, deprecated since 3.11
    # and removed in 3.13: harmless here, so that one warning is not shown to operators.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        import apprise

        apprise.Apprise.instantiate("json://localhost")  # loads the plugins, once
    # Apprise's own warnings are captured per send and reported in our alert_delivery_failed
    # line (and the notification's error): not twice, and never in Apprise's free text.
    logging.getLogger("apprise").propagate = False
    return apprise


def register_channel_secrets(plugin: Any, url: str) -> None:
    """Mask what Apprise itself marks private in this URL (tokens, passwords, webhook ids)."""
    register_secret(url)
    try:
        parsed = type(plugin).parse_url(url) or {}
    except Exception:  # a URL Apprise accepted but cannot parse again: keep the whole URL only
        return
    private = {
        name
        for name, spec in {**plugin.template_tokens, **plugin.template_args}.items()
        if isinstance(spec, dict) and spec.get("private")
    }
    for name in private | {"password"}:
        value = parsed.get(name)
        for item in value if isinstance(value, list | tuple | set) else [value]:
            if isinstance(item, str):
                register_secret(item)


class Notifier:
    """Sends to the configured channels with bounded retries; thread-safe enough for one
    sender at a time (the poll lock sees to that)."""

    def __init__(
        self,
        channels: Sequence[Channel],
        live: LiveSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.channels = {c.name: c for c in channels}
        self.live = live
        self._sleep = sleep
        self._checked = False

    def check(self) -> None:
        """Every channel's URL must be one Apprise knows: a :class:`ConfigError` naming the
        channel otherwise (exit 2, at start-up rather than when an alert fires)."""
        if self._checked or not self.channels:
            return
        apprise = _apprise()
        problems = []
        for channel in self.channels.values():
            plugin = apprise.Apprise.instantiate(channel.url)
            if plugin is None:
                problems.append(
                    f"[[channels]] {channel.name!r}: Apprise cannot use its URL ({channel.origin}, "
                    f"scheme {channel.scheme}://): see Apprise's list of services"
                )
            else:
                register_channel_secrets(plugin, channel.url)
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        self._checked = True

    def _once(self, channel: Channel, title: str, body: str) -> None:
        apprise = _apprise()
        plugin = apprise.Apprise.instantiate(channel.url)
        if plugin is None:
            raise DeliveryError(f"channel {channel.name!r}: Apprise cannot use its URL")
        register_channel_secrets(plugin, channel.url)
        plugin.socket_connect_timeout = SOCKET_TIMEOUT
        plugin.socket_read_timeout = SOCKET_TIMEOUT
        with apprise.LogCapture(level=apprise.logging.WARNING) as captured:
            ok = plugin.notify(body=body, title=title)
        if not ok:
            lines = [line for line in captured.getvalue().splitlines() if line.strip()]
            reason = lines[-1].split(" - ", 2)[-1] if lines else "the service refused it"
            raise DeliveryError(f"channel {channel.name!r}: {mask_text(reason)}")

    def send(self, channel_name: str, title: str, body: str) -> int:
        """Deliver one message; returns the attempts it took, or raises :class:`DeliveryError`
        (its ``attempts`` set) once the attempts or the deadline run out."""
        channel = self.channels.get(channel_name)
        if channel is None:
            raise DeliveryError(f"channel {channel_name!r} is not configured any more")
        retrying = Retrying(
            stop=stop_after_attempt(self.live.delivery_attempts)
            | stop_after_delay(self.live.delivery_deadline_seconds),
            wait=wait_exponential(multiplier=0.5, max=5),
            retry=retry_if_exception_type(DeliveryError),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._once(channel, title, body)
        except DeliveryError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)  # type: ignore[attr-defined]
            raise
        return int(retrying.statistics.get("attempt_number", 1))


def claim_timeout(live: LiveSettings) -> dt.timedelta:
    """How old a claim is before it counts as its sender's death: well past the longest one
    notification can take (its deadline plus one last attempt's connect and read)."""
    return dt.timedelta(seconds=2 * live.delivery_deadline_seconds + 4 * SOCKET_TIMEOUT + 30)


def drain(
    session_factory: sessionmaker[Session], settings: Settings, notifier: Notifier
) -> DeliveryCounts:
    """Send every undelivered notification; record each one's attempts and result.

    Never raises for a delivery that fails (it stays ``failed`` for the next poll); a channel
    that failed is skipped for the rest of this drain, so a dead receiver costs one deadline.
    """
    counts = DeliveryCounts()
    now = utc_now()
    with transaction(session_factory) as session:
        cutoff = now - dt.timedelta(hours=settings.live.give_up_hours)
        counts.abandoned = store.abandon_stale(session, cutoff)
        reclaimed = store.reclaim_interrupted(session, now - claim_timeout(settings.live))
        todo = store.outgoing(session)
    if reclaimed:
        log.warning("alert_delivery_reclaimed", notifications=reclaimed, error=store.INTERRUPTED)
    broken: set[str] = set()
    for item in todo:
        if item.channel in broken:
            counts.deferred += 1
            continue
        with transaction(session_factory) as session:
            claimed = store.claim(session, item.id, utc_now())
        if not claimed:  # another sender has it (or has sent it) since the list was read
            continue
        status, error, attempts = "sent", None, 0
        try:
            attempts = notifier.send(item.channel, item.title, item.body)
        except DeliveryError as exc:
            attempts = getattr(exc, "attempts", 1)
            status, error = "failed", str(exc)
            if item.channel not in notifier.channels:
                status = "abandoned"
            broken.add(item.channel)
        with transaction(session_factory) as session:
            store.record_attempts(
                session, item.id, attempts=attempts, at=utc_now(), status=status, error=error
            )
        if status == "sent":
            counts.sent += 1
            log.info(
                "alert_delivered", channel=item.channel, event_id=item.event_id, attempts=attempts
            )
        else:
            counts.failed += status == "failed"
            counts.abandoned += status == "abandoned"
            counts.failed_channels[item.channel] += 1
            log.warning(
                "alert_delivery_failed",
                channel=item.channel,
                event_id=item.event_id,
                attempts=attempts,
                error=error,
                retry="next poll" if status == "failed" else "never",
            )
    return counts
