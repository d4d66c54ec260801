"""The sync against a model of what OpenRouter reported: a differential property test.

Hypothesis draws what OpenRouter reports for three keys, then a sequence of steps: rows
restated, models vanishing, exact and conflicting duplicate rows, an empty answer, the clock
moving days out of the window, syncs (of some keys, with failing keys, stopped between keys,
crossing midnight while the answer is on its way, or with OpenRouter's clock ahead)
and backfills of chosen days. (A real kill -9 between keys is in tests/faults.) Each step
goes through the real sync (:func:`worker.sync.locked_sync`, the real client, the fake
OpenRouter on 127.0.0.1) into SQLite and PostgreSQL. After every sync the stored rows must be
what a small in-memory model of the worker's promises says, to 1e-9 USD, and every key's
outcome (ok, held back, failed with its reason, not started) and the run's status the model's.

The model (:class:`Model`) is the promise, not the implementation:

- a whole-window answer is the truth for the days it covers: its (day, model) totals are
  stored, and a stored model it no longer reports is deleted on the days both the run's
  window and the answer's share, but never before the first day the answer reports;
- an answer that would delete more than ``max_delete_fraction`` of the key's stored rows on
  those days is held back (nothing written), until the same body comes again
  ``confirm_delete_after_hours`` later, when it replaces those days whole;
- a backfill replaces exactly the days it names;
- a failing key, or a key not started because the run was stopped, changes nothing of its own;
- an answer byte for byte the one applied last (same window) changes nothing either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
import structlog
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select, update

from worker.config import Settings
from worker.core import days
from worker.openrouter import OpenRouterClient
from worker.store.db import make_session_factory
from worker.store.models import ApiKey, SyncKeyResult, SyncRun, UsageStats
from worker.sync.run import locked_sync
from worker.testing.activity_data import dumps
from worker.testing.clock import PinnedClock, noon
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.vault import accounts
from worker.vault.crypto import Keyring

# Coverage off: tracing every line tripled the time of each example, and the code they run is
# measured by the other tests anyway. The time goes to examples instead.
pytestmark = pytest.mark.no_cover

KEYS = 3
SECRETS = [f"sk-or-v1-{n + 1:064d}" for n in range(KEYS)]
MODELS = ("a/x", "a/y", "b/z")
ENDPOINTS = ("e1", "e2")
START = noon(dt.date(2026, 11, 26))
FRACTION = 0.5
# Not a whole number of hours: the clock moves in whole hours (and a minute around midnight),
# so no step lands on the boundary, where milliseconds of real time would decide.
CONFIRM_HOURS = 19.5
# A run "just before midnight" starts this long before it. The worker's clock runs in real
# time from where the harness pins it; a second (as before) let a loaded machine carry it
# past midnight before the run, or before the next sync, began.
BEFORE_MIDNIGHT = dt.timedelta(minutes=1)
TOLERANCE = Decimal("1e-9")
# PostgreSQL runs this share of the profile's max_examples: its examples take about twice as long.
POSTGRES_SHARE = 0.5
FAULTS = {
    "unavailable": (Fault(503), "upstream_unavailable"),
    "unauthorized": (Fault(401), "unauthorized"),
    "garbage": (Fault(200, body="not json"), "invalid_response"),
}

Values = tuple[int, int, int, int, Decimal, Decimal]  # requests, in, out, reasoning, $, BYOK $
Identity = tuple[dt.date, str, str]  # OpenRouter's row: (day, model, endpoint)
Pair = tuple[dt.date, str]  # a stored row: (day, model)


def window(today: dt.date) -> tuple[dt.date, dt.date]:
    return days.completed_window(today)


def item(identity: Identity, values: Values) -> dict[str, Any]:
    """One raw ``ActivityItem`` as OpenRouter sends it."""
    day, model, endpoint = identity
    requests, prompt, completion, reasoning, usage, byok = values
    return {
        "date": day.isoformat(),
        "model": model,
        "model_permaslug": model + "-2025",
        "endpoint_id": endpoint,
        "provider_name": "P",
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "reasoning_tokens": reasoning,
        "usage": usage,
        "byok_usage_inference": byok,
    }


# --- steps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Put:
    """OpenRouter reports a row (``offset`` days from today), or restates it."""

    key: int
    offset: int
    model: str
    endpoint: str
    values: Values


@dataclass(frozen=True)
class Drop:
    """A reported row vanishes (a model or endpoint gone): the ``index``-th, modulo."""

    key: int
    index: int


@dataclass(frozen=True)
class Duplicate:
    """A reported row is sent twice, identically (again: once)."""

    key: int
    index: int


@dataclass(frozen=True)
class Conflict:
    """A reported row is sent a second time with other values (None: no longer)."""

    key: int
    index: int | None


@dataclass(frozen=True)
class Clear:
    """Every row of the key vanishes: OpenRouter answers an empty list."""

    key: int


@dataclass(frozen=True)
class Advance:
    """Time passes: days move out of the window, held-back answers age."""

    hours: int


@dataclass(frozen=True)
class Sync:
    """A whole-window sync of ``keys`` (None: all), some failing; ``stop_after``: the run is
    stopped when that many requests have arrived (one key at a time); ``midnight``: the run
    starts a minute before 00:00 UTC and the answers arrive after it; ``skew``: the run starts
    a minute before 00:00 UTC and OpenRouter's clock has already turned."""

    keys: tuple[int, ...] | None = None
    failing: tuple[tuple[int, str], ...] = ()
    stop_after: int | None = None
    midnight: bool = False
    skew: bool = False


@dataclass(frozen=True)
class Backfill:
    """A backfill of the days ``offsets`` before today, of ``keys`` (None: all)."""

    offsets: tuple[int, ...]
    keys: tuple[int, ...] | None = None
    failing: tuple[tuple[int, str], ...] = ()


Step = Put | Drop | Duplicate | Conflict | Clear | Advance | Sync | Backfill
Outcome = tuple[str, str | None]  # (ok | failed, reason)

_nanos = st.integers(0, 10**12).map(lambda n: Decimal(n).scaleb(-9))
_money = st.one_of(
    _nanos,
    st.sampled_from([Decimal(0), Decimal("0.000000001"), Decimal("0.1"), Decimal("0.2")]),
    st.just(Decimal("999999.999999999")),
)
_values = st.tuples(
    st.integers(0, 3),
    st.integers(0, 9),
    st.integers(0, 9),
    st.integers(0, 9),
    _money,
    st.one_of(st.just(Decimal(0)), _money),
)
_key = st.integers(0, KEYS - 1)
_index = st.integers(0, 20)
_keys = st.one_of(st.none(), st.sets(_key, min_size=1).map(lambda s: tuple(sorted(s))))
_failing = st.dictionaries(_key, st.sampled_from(sorted(FAULTS)), max_size=2).map(
    lambda d: tuple(sorted(d.items()))
)
_put = st.builds(
    Put, _key, st.integers(-32, 0), st.sampled_from(MODELS), st.sampled_from(ENDPOINTS), _values
)
_sync = st.tuples(
    _keys,
    st.one_of(st.just(()), _failing),
    st.one_of(st.none(), st.integers(1, KEYS - 1)),
    # (midnight, skew): mostly neither
    st.sampled_from([(False, False), (False, False), (True, False), (False, True)]),
).map(lambda t: Sync(t[0], t[1], t[2], *t[3]))
_changes: dict[str, st.SearchStrategy[Step]] = {
    "put": _put,
    "restate": st.builds(  # a few identities, so that puts often restate a reported row
        Put, _key, st.integers(-3, -1), st.sampled_from(MODELS[:2]), st.just("e1"), _values
    ),
    "drop": st.builds(Drop, _key, _index),
    "duplicate": st.builds(Duplicate, _key, _index),
    "conflict": st.builds(Conflict, _key, st.one_of(st.none(), _index)),
    "clear": st.builds(Clear, _key),
    "advance": st.builds(Advance, st.integers(1, 60)),
}
# How often each kind of change comes (sampled_from weighs by repetition).
_KINDS = ["put", "put", "restate", "drop", "drop", "duplicate", "conflict", "clear", "advance"]
_change = st.sampled_from(_KINDS).flatmap(_changes.__getitem__)
_run = st.one_of(
    _sync,
    st.builds(
        Backfill,
        st.sets(st.integers(1, 30), min_size=1, max_size=3).map(lambda s: tuple(sorted(s))),
        _keys,
        st.one_of(st.just(()), _failing),
    ),
)
# A round: what changes at OpenRouter (and how much time passes), then a sync or a backfill.
_round = st.tuples(st.lists(_change, max_size=4), _run).map(lambda r: [*r[0], r[1]])


# --- the model ------------------------------------------------------------------------------


@dataclass
class World:
    """What OpenRouter reports for one key: its rows in order, some sent twice."""

    rows: dict[Identity, Values] = field(default_factory=dict)
    copies: set[Identity] = field(default_factory=set)
    conflict: Identity | None = None

    def raw(self) -> list[dict[str, Any]]:
        """The rows as the fake serves them (it filters them by the window or the day)."""
        out = []
        for identity, values in self.rows.items():
            out.append(item(identity, values))
            if identity in self.copies:
                out.append(item(identity, values))
            if identity == self.conflict:
                out.append(item(identity, (values[0] + 1, *values[1:])))
        return out

    def pick(self, index: int) -> Identity | None:
        return list(self.rows)[index % len(self.rows)] if self.rows else None


def served(world: World, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    return [r for r in world.raw() if first <= dt.date.fromisoformat(r["date"]) <= last]


def totals(rows: list[dict[str, Any]]) -> dict[Pair, Values] | None:
    """Per (day, model) sums, exact duplicates once; None for an invalid answer (one
    (day, model, endpoint) reported twice with different values)."""
    seen: dict[Identity, Values] = {}
    for r in rows:
        identity = (dt.date.fromisoformat(r["date"]), r["model"], r["endpoint_id"])
        values: Values = (
            r["requests"],
            r["prompt_tokens"],
            r["completion_tokens"],
            r["reasoning_tokens"],
            r["usage"],
            r["byok_usage_inference"],
        )
        if seen.setdefault(identity, values) != values:
            return None
    result: dict[Pair, Values] = {}
    for (day, model, _endpoint), values in seen.items():
        old = result.get((day, model))
        result[(day, model)] = (
            values if old is None else tuple(a + b for a, b in zip(old, values, strict=True))  # type: ignore[assignment]
        )
    return result


class Model:
    """What the stored rows must be, and how each key's sync must end."""

    def __init__(self) -> None:
        self.clock = START
        self.worlds = [World() for _ in range(KEYS)]
        self.stored: dict[tuple[int, dt.date, str], Values] = {}
        self.applied: list[str | None] = [None] * KEYS  # digest of the answer applied last
        self.held: list[tuple[str, dt.datetime] | None] = [None] * KEYS  # body, since

    @property
    def today(self) -> dt.date:
        return self.clock.date()

    def mutate(self, step: Step) -> bool:
        """Apply a change at OpenRouter; True if the step was one."""
        if isinstance(step, Put):
            identity = (self.today + dt.timedelta(days=step.offset), step.model, step.endpoint)
            self.worlds[step.key].rows[identity] = step.values
        elif isinstance(step, Drop):
            world = self.worlds[step.key]
            gone = world.pick(step.index)
            if gone is not None:
                del world.rows[gone]
                world.copies.discard(gone)
        elif isinstance(step, Duplicate):
            world = self.worlds[step.key]
            twice = world.pick(step.index)
            if twice is not None:
                world.copies ^= {twice}
        elif isinstance(step, Conflict):
            world = self.worlds[step.key]
            world.conflict = None if step.index is None else world.pick(step.index)
        elif isinstance(step, Clear):
            self.worlds[step.key] = World()
        else:
            return False
        return True

    def sync(self, step: Sync, arrival: dt.datetime) -> dict[int, Outcome]:
        """A whole-window run started at ``self.clock``, its answers arriving at ``arrival``
        (OpenRouter a day ahead with ``skew``)."""
        run_window = window(self.today)
        self.clock = arrival
        answer_window = window(arrival.date())
        server_window = window(arrival.date() + dt.timedelta(days=step.skew))
        failing = dict(step.failing)
        selected = list(step.keys) if step.keys is not None else list(range(KEYS))
        started = selected[: step.stop_after] if step.stop_after else selected
        return {
            key: self._sync_key(key, run_window, answer_window, server_window, failing.get(key))
            for key in started
        }

    def _sync_key(
        self,
        key: int,
        run_window: tuple[dt.date, dt.date],
        answer_window: tuple[dt.date, dt.date],
        server_window: tuple[dt.date, dt.date],
        fault: str | None,
    ) -> Outcome:
        if fault is not None:
            return "failed", FAULTS[fault][1]
        rows = served(self.worlds[key], *server_window)
        answer = totals(rows)
        if answer is not None and any(d > answer_window[1] for d, _ in answer):
            event("answer from a server whose clock turned first, with the new day")
            return "failed", "invalid_response"  # a day not completed yet, by our clock
        if answer is None:
            event("conflicting duplicate")
            return "failed", "invalid_response"
        body = hashlib.sha256(dumps({"data": rows}).encode()).hexdigest()
        first, last = answer_window
        digest = hashlib.sha256(f"{first}..{last} window {body}".encode()).hexdigest()
        if digest == self.applied[key]:
            event("answer applied last, again")
            # Nothing to write; an answer held back before must now wait its time afresh.
            self.held[key] = None
            return "ok", None
        held = self.held[key]
        confirmed = (
            held is not None
            and held[0] == body
            and self.clock - held[1] >= dt.timedelta(hours=CONFIRM_HOURS)
        )
        answered = set(days.span(first, last))
        stored = [p for (k, *p) in self.stored if k == key and p[0] in answered]
        shared = answered & set(days.span(*run_window))
        on_shared = [(d, m) for d, m in stored if d in shared]
        missing = [p for p in on_shared if p not in answer]
        if not confirmed and len(missing) > FRACTION * len(on_shared):
            self.held[key] = (body, held[1] if held and held[0] == body else self.clock)
            event("answer held back")
            return "failed", "suspicious_answer"
        keep_before = None if confirmed else min((d for d, _ in answer), default=dt.date.max)
        event("held-back answer confirmed" if confirmed else "answer applied")
        for day, model in missing:
            if keep_before is None or day >= keep_before:
                del self.stored[(key, day, model)]
                event("row deleted")
            else:
                event("row kept (before the first reported day)")
        if shared != answered:
            event("answer crossed midnight")
        for (day, model), values in answer.items():
            self.stored[(key, day, model)] = values
        self.applied[key], self.held[key] = digest, None
        return "ok", None

    def backfill(self, step: Backfill) -> dict[int, Outcome]:
        wanted = {self.today - dt.timedelta(days=n) for n in step.offsets}
        failing = dict(step.failing)
        outcomes: dict[int, Outcome] = {}
        for key in step.keys if step.keys is not None else range(KEYS):
            if key in failing:
                outcomes[key] = ("failed", FAULTS[failing[key]][1])
                continue
            answers = [totals(served(self.worlds[key], day, day)) for day in sorted(wanted)]
            if any(answer is None for answer in answers):
                outcomes[key] = ("failed", "invalid_response")
                continue
            answer = {pair: v for a in answers if a is not None for pair, v in a.items()}
            for k, day, model in list(self.stored):
                if k == key and day in wanted and (day, model) not in answer:
                    del self.stored[(k, day, model)]
            for (day, model), values in answer.items():
                self.stored[(key, day, model)] = values
            self.applied[key], self.held[key] = None, None
            outcomes[key] = ("ok", None)
        return outcomes


def run_status(outcomes: dict[int, Outcome], selected: int, stopped: bool = False) -> str:
    # A stop ends the run "interrupted" even when every selected key was done: the account-key
    # steps after them are left for the next run.
    if stopped or len(outcomes) < selected:
        return "interrupted"
    return "failed" if any(status == "failed" for status, _ in outcomes.values()) else "ok"


# --- the real thing -------------------------------------------------------------------------


class Harness:
    """The real sync against the fake OpenRouter and one database, reset per example."""

    def __init__(
        self, engine: Engine, keyring: Keyring, fake: FakeOpenRouter, clock: PinnedClock
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.fake = fake
        self.clock = clock
        factory = make_session_factory(engine)
        accounts.add_user(factory, "prop@example.com")
        self.ids = [
            accounts.add_key(factory, keyring, "prop@example.com", f"k{n}", secret).id
            for n, secret in enumerate(SECRETS)
        ]
        self.index = {key_id: n for n, key_id in enumerate(self.ids)}
        self.settings = (
            Settings()
            .replace(
                "sync",
                concurrency=2,
                max_delete_fraction=FRACTION,
                confirm_delete_after_hours=CONFIRM_HOURS,
            )
            .replace(
                "openrouter",
                base_url=fake.base_url,
                max_attempts=1,
                backoff_initial=0.0,
                backoff_max=0.0,
                request_deadline=10.0,
            )
        )
        self.client = OpenRouterClient(self.settings.openrouter)

    def reset(self) -> None:
        """A new example: no rows, no runs, keys that know no answer; OpenRouter empty."""
        with self.engine.begin() as conn:
            conn.execute(delete(UsageStats))
            conn.execute(delete(SyncKeyResult))
            conn.execute(delete(SyncRun))
            conn.execute(
                update(ApiKey).values(
                    activity_digest=None,
                    activity_rows=None,
                    suspicious_digest=None,
                    suspicious_since=None,
                    kind=None,
                    last_used_at=None,
                )
            )
        for secret in SECRETS:
            self.fake.add_key(secret, rows=[])
        self.fake.on_request = None
        self.fake.today = START.date()
        self.clock.at(START)

    def publish(self, model: Model, key: int) -> None:
        self.fake.set_rows(SECRETS[key], model.worlds[key].raw())

    def advance(self, model: Model, hours: int) -> None:
        model.clock += dt.timedelta(hours=hours)
        self.clock.at(model.clock)
        self.fake.today = model.today

    def sync(self, model: Model, step: Sync) -> None:
        arrival = model.clock
        if step.midnight or step.skew:
            midnight = dt.datetime.combine(model.today + dt.timedelta(days=1), dt.time(), dt.UTC)
            model.clock = midnight - BEFORE_MIDNIGHT
            arrival = midnight + dt.timedelta(seconds=1) if step.midnight else model.clock
            self.clock.at(model.clock)
        if step.skew:
            self.fake.today = model.today + dt.timedelta(days=1)
        lock = threading.Lock()
        arrived = [0]
        stop = threading.Event()

        def on_request(path: str, _query: dict[str, str]) -> None:
            if path != "/activity":  # one per key; other endpoints are not counted
                return
            with lock:  # answers arrive on several server threads
                arrived[0] += 1
                if step.midnight and arrived[0] == 1:
                    self.fake.today = arrival.date()
                    self.clock.at(arrival)
                if arrived[0] == step.stop_after:
                    stop.set()

        self.fake.on_request = on_request
        for key, fault in step.failing:
            self.fake.fail_forever(SECRETS[key], FAULTS[fault][0])
        settings = self.settings
        if step.stop_after:
            settings = settings.replace("sync", concurrency=1)  # keys start in id order
        try:
            summary = locked_sync(
                self.engine,
                settings,
                self.keyring,
                trigger="sync",
                key_ids=None if step.keys is None else [self.ids[k] for k in step.keys],
                client=self.client,
                stop=stop,
            )
        finally:
            self.fake.on_request = None
            self.fake.today = arrival.date()
            for key, _fault in step.failing:
                self.fake.clear_faults(SECRETS[key])
        expected = model.sync(step, arrival)
        selected = len(step.keys) if step.keys else KEYS
        stopped = step.stop_after is not None and step.stop_after <= selected
        self.check(summary, expected, selected, model, stopped)

    def backfill(self, model: Model, step: Backfill) -> None:
        for key, fault in step.failing:
            self.fake.fail_forever(SECRETS[key], FAULTS[fault][0])
        try:
            summary = locked_sync(
                self.engine,
                self.settings,
                self.keyring,
                trigger="backfill",
                days=[model.today - dt.timedelta(days=n) for n in step.offsets],
                key_ids=None if step.keys is None else [self.ids[k] for k in step.keys],
                client=self.client,
            )
        finally:
            for key, _fault in step.failing:
                self.fake.clear_faults(SECRETS[key])
        expected = model.backfill(step)
        self.check(summary, expected, len(step.keys) if step.keys else KEYS, model)

    def check(
        self,
        summary: Any,
        expected: dict[int, Outcome],
        selected: int,
        model: Model,
        stopped: bool = False,
    ) -> None:
        assert summary is not None, "the sync lock was taken"
        outcomes = {self.index[o.api_key_id]: (o.status, o.reason) for o in summary.keys}
        assert outcomes == expected
        assert summary.status == run_status(expected, selected, stopped)
        actual = self.stored()
        assert actual == approx(model.stored, actual)

    def stored(self) -> dict[tuple[int, dt.date, str], Values]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    UsageStats.api_key_id,
                    UsageStats.date,
                    UsageStats.model,
                    UsageStats.requests_count,
                    UsageStats.tokens_input,
                    UsageStats.tokens_output,
                    UsageStats.tokens_reasoning,
                    UsageStats.cost,
                    UsageStats.byok_cost,
                )
            ).all()
        return {(self.index[r[0]], r[1], r[2]): tuple(r[3:]) for r in rows}  # type: ignore[misc]

    def close(self) -> None:
        self.client.close()


def approx(
    expected: dict[tuple[int, dt.date, str], Values], actual: dict[tuple[int, dt.date, str], Values]
) -> dict[tuple[int, dt.date, str], Values]:
    """``expected``, with each amount replaced by the stored one where they differ by at most
    1e-9 USD: comparing the result with ``actual`` shows every real difference in full."""
    result = {}
    for pair, values in expected.items():
        stored = actual.get(pair)
        if stored is not None and all(
            abs(Decimal(a) - Decimal(b)) <= TOLERANCE
            for a, b in zip(values[4:], stored[4:], strict=True)
        ):
            values = (*values[:4], *stored[4:])  # type: ignore[assignment]
        result[pair] = values
    return result


def _v(cost: str, requests: int = 1) -> Values:
    return (requests, 10, 5, 1, Decimal(cost), Decimal(0))


class Explicit(NamedTuple):
    initial: list[Put]
    rounds: list[list[Step]]


# Each promise at least once per run, whatever Hypothesis draws:
EXPLICIT = [
    # an empty answer held back, then applied when seen again 20 hours later;
    Explicit(
        initial=[Put(0, -2, "a/x", "e1", _v("0.1")), Put(0, -1, "a/y", "e1", _v("0.2"))],
        rounds=[[Clear(0), Sync()], [Advance(20), Sync()]],
    ),
    # a sync crossing midnight keeps the day that left OpenRouter's window, stores the new one;
    Explicit(
        initial=[Put(0, -30, "a/x", "e1", _v("7")), Put(0, -1, "a/x", "e1", _v("1"))],
        rounds=[[Put(0, 0, "a/x", "e1", _v("3")), Sync(midnight=True)]],
    ),
    # rows before the first day an answer reports are kept, later vanished ones deleted;
    Explicit(
        initial=[
            Put(1, -20, "a/x", "e1", _v("1")),
            Put(1, -10, "a/x", "e1", _v("2")),
            Put(1, -5, "a/x", "e1", _v("3")),
            Put(1, -5, "a/y", "e2", _v("4")),
            Put(1, -4, "b/z", "e1", _v("5")),
        ],
        rounds=[[Drop(1, 0), Drop(1, 2), Sync()]],
    ),
    # a run stopped after its first key; failing keys; a backfill applying what a sync held back;
    Explicit(
        initial=[Put(k, -3, "a/x", "e1", _v("0.3")) for k in range(KEYS)],
        rounds=[
            [
                Put(1, -3, "a/x", "e2", _v("0.000000001")),
                Put(2, -2, "a/y", "e1", _v("1")),
                Sync(stop_after=1),
            ],
            [Sync(failing=((0, "unavailable"), (1, "garbage"), (2, "unauthorized")))],
            [Clear(0), Sync(keys=(0,))],
            [Backfill((3, 2), failing=((2, "unavailable"),))],
        ],
    ),
    # 2 of 4 rows vanished is half (applied), 3 of 5 more (held back); OpenRouter's clock ahead;
    Explicit(
        initial=[Put(0, -n, m, "e1", _v("1")) for n in (3, 4) for m in MODELS[:2]]
        + [Put(1, -n, "a/x", "e1", _v("1")) for n in (2, 3, 4, 5, 6)],
        rounds=[
            [Drop(0, 0), Drop(0, 0), Drop(1, 1), Drop(1, 1), Drop(1, 1), Sync()],
            [Put(2, -1, "a/x", "e1", _v("1")), Sync(skew=True)],
            [Put(2, 0, "a/x", "e1", _v("1")), Sync(skew=True)],
        ],
    ),
    # exact duplicates counted once, conflicting ones refused; days leaving the window kept.
    Explicit(
        initial=[
            Put(2, -29, "a/x", "e1", _v("999999.999999999")),
            Put(2, -1, "b/z", "e2", _v("9")),
        ],
        rounds=[
            [Duplicate(2, 1), Sync()],
            [Conflict(2, 1), Sync()],
            [Conflict(2, None), Advance(60), Advance(60), Sync()],
        ],
    ),
]


@pytest.fixture
def pinned_day() -> dt.date:
    """The harness pins the clock itself, from START on, at the start of every example."""
    return START.date()


def test_stored_rows_are_what_openrouter_reported(
    engine: Engine, keyring: Keyring, pinned_clock: PinnedClock
) -> None:
    """Random worlds through the real sync: the stored rows are always the model's.

    The harness (database, fake OpenRouter, client) is built once per database and reset at
    the start of every example; PostgreSQL runs fewer examples than SQLite (each is slower).
    It is built here rather than in a fixture so that its threads (the fake's, the sync's)
    start while coverage is off for this test; the log lines are captured, not rendered.
    """
    share = 1.0 if engine.dialect.name == "sqlite" else POSTGRES_SHARE
    with FakeOpenRouter(today=START.date()) as fake, structlog.testing.capture_logs():
        harness = Harness(engine, keyring, fake, pinned_clock)
        try:
            play = _play(harness)
            for case in reversed(EXPLICIT):
                play = example(*case)(play)
            settings(max_examples=max(1, round(settings.default.max_examples * share)))(play)()
        finally:
            harness.close()


def _play(harness: Harness) -> Any:
    @given(initial=st.lists(_put, max_size=12), rounds=st.lists(_round, min_size=1, max_size=6))
    def play(initial: list[Put], rounds: list[list[Step]]) -> None:
        harness.reset()
        model = Model()
        for put in initial:
            model.mutate(put)
        for key in range(KEYS):
            harness.publish(model, key)
        harness.sync(model, Sync())
        for step in (step for steps in rounds for step in steps):
            if model.mutate(step):
                harness.publish(model, step.key)  # type: ignore[union-attr]
            elif isinstance(step, Advance):
                harness.advance(model, step.hours)
            elif isinstance(step, Sync):
                harness.sync(model, step)
            else:
                assert isinstance(step, Backfill)
                harness.backfill(model, step)

    return play
