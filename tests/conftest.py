"""Shared fixtures: databases (SQLite file and a real PostgreSQL server), sessions, samples.

The ``db_url`` fixture is parametrised over ``sqlite`` and ``postgres``: a test that takes it
(or ``engine``, ``session_factory``, ``session``) runs on both. The PostgreSQL server is started
once per test session by :class:`worker.testing.postgres.PostgresServer`; every test gets a
fresh database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.store.db import create_db_engine, init_db, make_session_factory
from worker.store.models import ApiKey, User
from worker.testing.postgres import PostgresServer, find_bindir

_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark by directory (unit / integration / faults / property) and mark every PostgreSQL
    case `postgres`; leave out the long variants (marker `long`, minutes each) unless the
    marker expression asks for them (`make test-long`: ``-m long``)."""
    if "long" not in (config.option.markexpr or ""):
        long = [item for item in items if item.get_closest_marker("long") is not None]
        if long:
            config.hook.pytest_deselected(items=long)
            items[:] = [item for item in items if item.get_closest_marker("long") is None]
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        elif "faults" in path.parts:
            item.add_marker(pytest.mark.faults)
        elif "property" in path.parts:
            item.add_marker(pytest.mark.property)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgres" in callspec.id.split("-"):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (initdb, postgres) found: set PG_BINDIR")
    server = PostgresServer(bindir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A database migrated to head, cloned for every test (much faster than migrating)."""
    url = pg_server.create_database("template_head")
    engine = create_db_engine(url)
    init_db(engine)
    engine.dispose()
    return "template_head"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "head.db"
    engine = create_db_engine(f"sqlite:///{path}")
    init_db(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh SQLite file at the head revision."""
    path = tmp_path / "watcher.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


class _ReusedDatabase:
    """The PostgreSQL tests' database, cloned from the template once and emptied after each
    test (TRUNCATE, 20 ms) instead of cloned for each (0.3 s). A test that changed its schema
    or settings (a trigger, ``ALTER DATABASE``) gets it dropped: the next one clones anew."""

    def __init__(self, server: PostgresServer, template: str) -> None:
        self.server, self.template = server, template
        self.schema = ""  # the fingerprint of a fresh clone, read from the first one
        self.name: str | None = None

    def take(self) -> str:
        if self.name is None:
            self.name = f"t{next(_counter)}"
            self.server.create_database(self.name, template=self.template)
            self.schema = self.schema or self.server.fingerprint(self.name)
        return self.name

    def give_back(self) -> None:
        if self.name is not None and not self.server.empty_for_reuse(self.name, self.schema):
            self.name = None


@pytest.fixture(scope="session")
def _pg_database(pg_server: PostgresServer, pg_template: str) -> _ReusedDatabase:
    return _ReusedDatabase(pg_server, pg_template)


@pytest.fixture
def postgres_url(pg_server: PostgresServer, _pg_database: _ReusedDatabase) -> Iterator[str]:
    """A PostgreSQL database at the head revision, with no rows (see :class:`_ReusedDatabase`)."""
    name = _pg_database.take()
    yield pg_server.url(name)
    _pg_database.give_back()


@pytest.fixture
def empty_postgres_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (no schema): for migration tests."""
    name = f"e{next(_counter)}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL (no schema): for migration tests, on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("empty_postgres_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL: the test runs once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def sample_user(session: Session) -> User:
    user = User(email="alice@example.com", password_hash="!unusable")
    session.add(user)
    session.commit()
    return user


@pytest.fixture
def sample_key(session: Session, sample_user: User) -> ApiKey:
    # The ciphertext is not decryptable: tests that need a real one build it with
    # worker.vault.crypto.
    key = ApiKey(user_id=sample_user.id, name="production", key_encrypted="v1:test:AAAA")
    session.add(key)
    session.commit()
    return key


class UsageTriggers:
    """Database triggers on ``usage_stats`` that see every row written, whatever the driver
    path (the store writes through the raw driver, COPY included, which SQLAlchemy's events
    never see): :meth:`writes` lists them, :meth:`fail` makes an operation fail."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE test_usage_writes (op VARCHAR(10))")
            for op in ("INSERT", "UPDATE", "DELETE"):
                if self.postgres:
                    conn.exec_driver_sql(
                        f"CREATE FUNCTION test_log_{op.lower()}() RETURNS trigger AS $$ BEGIN "  # noqa: S608
                        f"INSERT INTO test_usage_writes VALUES ('{op.lower()}'); RETURN NULL; "
                        "END $$ LANGUAGE plpgsql"
                    )
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER test_log_{op.lower()} AFTER {op} ON usage_stats "
                        f"FOR EACH ROW EXECUTE FUNCTION test_log_{op.lower()}()"
                    )
                else:
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER test_log_{op.lower()} AFTER {op} ON usage_stats BEGIN "  # noqa: S608
                        f"INSERT INTO test_usage_writes VALUES ('{op.lower()}'); END"
                    )

    def writes(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.exec_driver_sql("SELECT op FROM test_usage_writes").scalars())

    def fail(self, op: str, message: str = "disk full") -> None:
        """Every later ``op`` (INSERT, UPDATE, DELETE) on usage_stats fails with ``message``."""
        with self.engine.begin() as conn:
            if self.postgres:
                conn.exec_driver_sql(
                    "CREATE FUNCTION test_fail() RETURNS trigger AS $$ BEGIN "
                    f"RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql"
                )
                conn.exec_driver_sql(
                    f"CREATE TRIGGER test_fail BEFORE {op} ON usage_stats "
                    "FOR EACH ROW EXECUTE FUNCTION test_fail()"
                )
            else:
                conn.exec_driver_sql(
                    f"CREATE TRIGGER test_fail BEFORE {op} ON usage_stats BEGIN "
                    f"SELECT RAISE(ABORT, '{message}'); END"
                )

    def heal(self) -> None:
        """Writes succeed again."""
        with self.engine.begin() as conn:
            suffix = " ON usage_stats" if self.postgres else ""
            conn.exec_driver_sql(f"DROP TRIGGER test_fail{suffix}")


@pytest.fixture
def usage_triggers(engine: Engine) -> UsageTriggers:
    """Triggers on usage_stats that record and can fail writes (see :class:`UsageTriggers`)."""
    return UsageTriggers(engine)


# Appended by issue 3 (keys at rest): a master key and its keyring for any test that encrypts.
import base64  # noqa: E402

from worker.vault.crypto import Keyring, generate_master_key  # noqa: E402


@pytest.fixture
def master_key() -> str:
    """A fresh base64 master key (what `generate-key` prints)."""
    return generate_master_key()


@pytest.fixture
def keyring(master_key: str) -> Keyring:
    """A keyring holding only ``master_key``."""
    return Keyring(base64.b64decode(master_key))


# --- reports (issue 6) -----------------------------------------------------------------------
# Known usage for the report and view tests: two users, three keys, four models, days with a
# gap, rows just outside the range, and sub-cent / 9-decimal costs where float sums would drift.
REPORT_USERS = ("alice@example.com", "bob@example.com")
REPORT_KEYS = (("production", 0), ("staging", 0), ("research", 1))  # (name, user index)
REPORT_USAGE = (  # (key index, date, model, requests, in, out, reasoning, cost, byok cost)
    (0, "2026-10-31", "openai/gpt-4o", 9, 900, 90, 0, "9.999999999", "0"),  # before the range
    (0, "2026-11-01", "openai/gpt-4o", 12, 12_000, 3_400, 0, "0.1", "0"),
    (0, "2026-11-01", "anthropic/claude-3.5-sonnet", 3, 4_500, 1_200, 0, "0.2", "0.000000001"),
    (1, "2026-11-01", "openai/gpt-4o", 1, 10, 5, 0, "0.000000001", "0"),
    (2, "2026-11-01", "google/gemini-flash", 40, 1_234_567, 89_012, 5_000, "0.004999999", "0"),
    (0, "2026-11-02", "openai/gpt-4o", 7, 7_000, 1_000, 0, "1234.567891234", "0.3"),
    (2, "2026-11-02", "anthropic/claude-3.5-sonnet", 2, 300, 200, 100, "0.000004999", "0"),
    (1, "2026-11-03", "meta/llama-3", 5, 500, 50, 0, "0.000000499", "0.000000499"),
    (2, "2026-11-03", "openai/gpt-4o", 1, 1, 1, 1, "0.7", "0.1"),
    # 2026-11-04: no usage at all
    (2, "2026-11-05", "google/gemini-flash", 10, 100_000, 20_000, 0, "0.333333333", "0"),
    (0, "2026-11-06", "openai/gpt-4o", 1, 1, 1, 0, "5", "0"),  # after the range
)
REPORT_SINCE, REPORT_UNTIL = "2026-11-01", "2026-11-05"


class ReportData:
    """Inserts REPORT_* into a migrated database: ``report_data(engine) -> {key name: id}``."""

    users = REPORT_USERS
    keys = REPORT_KEYS
    usage = REPORT_USAGE
    since, until = REPORT_SINCE, REPORT_UNTIL

    def __call__(self, engine: Engine) -> dict[str, int]:
        import datetime as dt
        from decimal import Decimal

        from sqlalchemy import text

        from worker.store.models import UsageStats

        with engine.begin() as conn:
            user_ids = []
            for email in REPORT_USERS:
                conn.execute(
                    text("INSERT INTO users (email, password_hash) VALUES (:e, '!')"), {"e": email}
                )
                user_ids.append(
                    conn.execute(
                        text("SELECT id FROM users WHERE email = :e"), {"e": email}
                    ).scalar_one()
                )
            key_ids = {}
            for name, user in REPORT_KEYS:
                conn.execute(
                    text(
                        "INSERT INTO api_keys (user_id, name, key_encrypted) "
                        "VALUES (:u, :n, 'v1:test:AAAA')"
                    ),
                    {"u": user_ids[user], "n": name},
                )
                key_ids[name] = conn.execute(
                    text("SELECT id FROM api_keys WHERE name = :n"), {"n": name}
                ).scalar_one()
        # Through the ORM so money is bound exactly as the sync binds it.
        with Session(engine) as session, session.begin():
            for key, day, model, requests, t_in, t_out, t_reason, cost, byok in REPORT_USAGE:
                session.add(
                    UsageStats(
                        api_key_id=key_ids[REPORT_KEYS[key][0]],
                        date=dt.date.fromisoformat(day),
                        model=model,
                        requests_count=requests,
                        tokens_input=t_in,
                        tokens_output=t_out,
                        tokens_reasoning=t_reason,
                        cost=Decimal(cost),
                        byok_cost=Decimal(byok),
                    )
                )
        return key_ids

    def expected(
        self,
        by: str,
        since: str | None = None,
        until: str | None = None,
        *,
        user: str | None = None,
        key: str | None = None,
        model: str | None = None,
    ) -> dict[tuple[str, ...], tuple[object, ...]]:
        """The reference answer, summed in Python with Decimal: {group: (requests, in, out,
        reasoning, cost, byok cost)}; groups are (date,), (model,), (account name,) or (email,);
        every REPORT_KEYS key is an account (no catalogue)."""
        from decimal import Decimal

        since, until = since or self.since, until or self.until
        out: dict[tuple[str, ...], list[object]] = {}
        for k, day, mdl, *metrics in self.usage:
            name, owner = self.keys[k]
            email = self.users[owner]
            if (
                not since <= day <= until
                or (user and email != user)
                or (key and name != key)
                or (model and mdl != model)
            ):
                continue
            group = {"day": (day,), "model": (mdl,), "account": (name,), "user": (email,)}[by]
            sums = out.setdefault(group, [0, 0, 0, 0, Decimal(0), Decimal(0)])
            for i, value in enumerate(metrics):
                sums[i] += Decimal(value) if i >= 4 else value  # type: ignore[operator]
        return {g: tuple(v) for g, v in out.items()}


@pytest.fixture
def report_data() -> ReportData:
    """Call it with an engine to fill the database with the known report rows."""
    return ReportData()


# --- the command line in-process, on a pinned clock ------------------------------------------
# Most CLI tests call worker.cli.main in this process (a subprocess costs about a second of
# interpreter start and imports, more under coverage); a few smoke tests keep a real process.
import datetime as dt  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from typing import TextIO  # noqa: E402

from worker.cli import main as cli_main  # noqa: E402
from worker.testing.clock import PinnedClock  # noqa: E402

PINNED_DAY = dt.date(2026, 11, 20)


@pytest.fixture
def pinned_day() -> dt.date:
    """The day :func:`pinned_clock` pins noon of: :data:`PINNED_DAY` (2026-11-20), unless a test
    module or a conftest below this one overrides this fixture with a day of its own."""
    return PINNED_DAY


@pytest.fixture
def pinned_clock(pinned_day: dt.date) -> Iterator[PinnedClock]:
    """Pin "now" at noon UTC on :func:`pinned_day` for the test, and unpin after it.

    Nothing a test asserts may depend on the real date, or it flakes at midnight UTC. The one
    hook is ``OPENROUTER_WATCHER_TESTING_CLOCK``, which :mod:`worker.core.days` reads once, at
    its first reading of the clock: a subprocess gets it in its environment (``clean_env(
    OPENROUTER_WATCHER_TESTING_CLOCK=noon_iso(day))``, :mod:`worker.testing.clock`); in this
    process, where the module is long imported, this fixture pins the clock with
    :func:`worker.core.days.pin_clock` instead (a :class:`~worker.testing.clock.PinnedClock`),
    and unpins it (the real clock) after the test. ``utc_now()`` runs forward in real time from
    midday, twelve hours from the next midnight, and every "today" in the worker (sync,
    backfill, report, status, the fake's default) is the pinned day: ``pinned_clock.day``, e.g.
    for ``FakeOpenRouter(today=…)``. A test moves the clock with ``pinned_clock.at(instant)``.
    """
    with PinnedClock(pinned_day) as clock:
        yield clock


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pinned_clock: PinnedClock
) -> Callable[..., tuple[int, str, str]]:
    """``cli("keys", "list", "--json")`` → ``(exit code, stdout, stderr)``, run in-process.

    The same as ``openrouter-watcher keys list --json < stdin`` in a shell: it calls
    ``worker.cli.main(argv, stdin=…, stdout=…, stderr=…)`` from ``tmp_path`` (so no stray
    ``./config.toml`` is read), with every ``OPENROUTER_WATCHER_*`` variable and
    ``CREDENTIALS_DIRECTORY`` of the real environment removed (the loader rejects unknown
    ``OPENROUTER_WATCHER_*`` names; see :func:`worker.testing.env.clean_env`) and the clock
    pinned (:func:`pinned_clock`). Configure it like a shell, with
    ``monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", url)``; ``env`` sets variables for
    one call only (``None`` unsets one). ``stdin`` is the text piped in, or a stream (e.g. one
    whose ``isatty()`` is true, for the prompts).
    """
    for name in list(os.environ):
        if name.startswith("OPENROUTER_WATCHER_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def run(
        *argv: str, stdin: str | TextIO = "", env: Mapping[str, str | None] | None = None
    ) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as call_env:
            for name, value in (env or {}).items():
                if value is None:
                    call_env.delenv(name, raising=False)
                else:
                    call_env.setenv(name, value)
            code = cli_main(
                list(argv),
                stdin=io.StringIO(stdin) if isinstance(stdin, str) else stdin,
                stdout=out,
                stderr=err,
            )
        return code, out.getvalue(), err.getvalue()

    return run


# --- the report rows, loaded once per module for the tests that only read them ---------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def report_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, dict[str, int]]]:
    """``(engine, {key name: id})``: a database holding the REPORT_* rows, on both backends.

    Built once per test module and backend, not per test (a PostgreSQL clone costs about half a
    second): for tests that only read. Reading in a session that is closed, or on a connection
    that is not committed, leaves nothing behind; a test that writes takes ``engine`` and
    ``report_data`` for a database of its own.
    """
    server: PostgresServer | None = None
    name = f"r{next(_counter)}"
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("report") / "report.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        server = request.getfixturevalue("pg_server")
        url = server.create_database(name, template=request.getfixturevalue("pg_template"))
    engine = create_db_engine(url)
    try:
        yield engine, ReportData()(engine)
    finally:
        engine.dispose()
        if server is not None:
            server.drop_database(name)


# --- process-wide logging state that in-process commands change -----------------------------


@pytest.fixture(autouse=True)
def _sql_log_level() -> Iterator[None]:
    """Every test starts with the ``sqlalchemy.engine`` logger at the level it found.

    ``[database] echo`` (``OPENROUTER_WATCHER_DATABASE_ECHO``) routes SQL through the log
    pipeline by raising that logger to INFO, for the whole process: right for a command line,
    which runs once per process, but a command run in-process would leave every later test
    logging each statement (and failing on what it finds on stderr).
    """
    logger = logging.getLogger("sqlalchemy.engine")
    level = logger.level
    try:
        yield
    finally:
        logger.setLevel(level)


# --- the sync against the fake OpenRouter, on the pinned day -------------------------------
# What tests/integration/test_sync.py, test_history_import.py and test_account_keys.py share
# (and the modules that want only the fake): a module overrides `pinned_day` for a day of its
# own, and `settings` or `register` by a fixture of the same name that takes the shared one.
from collections.abc import Iterable  # noqa: E402
from decimal import Decimal  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import select  # noqa: E402

from worker.config import Settings  # noqa: E402
from worker.testing.activity_data import as_stored, expected_totals  # noqa: E402
from worker.testing.fake_openrouter import FakeOpenRouter  # noqa: E402

Sums = dict[tuple[dt.date, str], tuple[Any, ...]]


@pytest.fixture
def fake(pinned_clock: PinnedClock) -> Iterator[FakeOpenRouter]:
    """The fake OpenRouter on 127.0.0.1 on the pinned day: its window ends the day before."""
    with FakeOpenRouter(today=pinned_clock.day) as server:
        yield server


@pytest.fixture
def settings(fake: FakeOpenRouter) -> Settings:
    """A sync against :func:`fake`: four keys at a time, no history import, three attempts per
    request and no wait between them."""
    return (
        Settings()
        .replace("sync", concurrency=4, history_days=0)
        .replace(
            "openrouter",
            base_url=fake.base_url,
            max_attempts=3,
            backoff_initial=0.0,
            backoff_max=0.0,
        )
    )


@pytest.fixture
def register(session: Session, keyring: Keyring) -> Callable[..., int]:
    """register(secret, name, email=…, active=…) → api_keys.id: stored encrypted, as `keys add`
    does, for the user of that email (ops@example.com unless named; created with their first
    key). The fake learns the key separately (``fake.add_account`` / ``fake.add_key``)."""

    def add(secret: str, name: str, email: str = "ops@example.com", active: bool = True) -> int:
        user = session.scalar(select(User).where(User.email == email))
        if user is None:
            user = User(email=email, password_hash="!x")
            session.add(user)
            session.flush()
        key = ApiKey(user_id=user.id, name=name, key_encrypted="pending", is_active=active)
        session.add(key)
        session.flush()
        key.key_encrypted = keyring.encrypt(secret, user_id=user.id, key_id=key.id)
        session.commit()
        return key.id

    return add


def stored_sums(rows: Iterable[dict[str, Any]], first: dt.date, last: dt.date) -> Sums:
    """What a correct sync stores for raw ActivityItems, per (day, model), ``first`` …
    ``last``: for /activity and analytics (cost = total_usage - byok_usage) alike."""
    return {p: v for p, v in as_stored(expected_totals(rows)).items() if first <= p[0] <= last}


def add_sums(*parts: Sums) -> Sums:
    """Per-(day, model) sums of several owners (e.g. an account's keys)."""
    out: dict[tuple[dt.date, str], list[Any]] = {}
    for part in parts:
        for pair, values in part.items():
            acc = out.setdefault(pair, [0, 0, 0, 0, Decimal(0), Decimal(0)])
            for index, value in enumerate(values):
                acc[index] += value
    return {pair: tuple(acc) for pair, acc in out.items()}
