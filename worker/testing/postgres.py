"""A throw-away PostgreSQL server for tests and benchmarks.

``initdb`` into a fresh temporary directory, ``postgres`` listening on 127.0.0.1 on a free port
(and a socket in that directory), trust authentication, durability off (the data dies with the
directory anyway). PostgreSQL refuses to run as root, so when we are root the server runs as
the unprivileged user ``nobody`` and the directory is handed to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from worker.testing.waiting import wait_until

_END_OTHER_SESSIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = %s AND pid <> pg_backend_pid()"
)
_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
_TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
    "AND tablename <> 'alembic_version' ORDER BY tablename"
)
_FINGERPRINT = """
SELECT md5(coalesce(string_agg(item, ',' ORDER BY item), '')) FROM (
  SELECT 'c ' || c.relname || '.' || a.attname || ' ' || a.atttypid::text || ' '
         || a.attnotnull::text || ' ' || c.relkind::text AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid
   WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT 'k ' || conrelid::regclass::text || ' ' || conname || ' '
         || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL SELECT 't ' || tgname FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT 'f ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
  UNION ALL SELECT 'n ' || nspname FROM pg_namespace
  UNION ALL SELECT 'v ' || version_num FROM alembic_version
  UNION ALL SELECT 's ' || array_to_string(setconfig, ' ') FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS schema
"""


def find_bindir() -> Path | None:
    """Where initdb and postgres live: $PG_BINDIR, PATH, or /usr/lib/postgresql/*/bin."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "postgres").is_file():
            return Path(directory)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, bindir: Path, *, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.settings = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **(settings or {}),
        }
        self.tmp = Path(tempfile.mkdtemp(prefix="orw-pg-"))
        self.datadir = self.tmp / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self._user: str | None = "nobody" if os.geteuid() == 0 else None

    def _prepare_dir(self) -> None:
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.tmp, entry.pw_uid, entry.pw_gid)
        self.tmp.chmod(0o700)

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self._user,
            cwd=self.tmp,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr.decode(errors='replace')}")

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """``initdb`` a fresh data directory, then serve it."""
        self._prepare_dir()
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        return self._serve(timeout)

    def restart(self, timeout: float = 30.0) -> PostgresServer:
        """Stop the server as ``pg_ctl restart`` does (fast shutdown: every session is ended,
        open transactions roll back) and serve the same data directory on the same port."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self._serve(timeout)

    def _serve(self, timeout: float) -> PostgresServer:
        options = [arg for key, value in self.settings.items() for arg in ("-c", f"{key}={value}")]
        log = (self.tmp / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.tmp),
                *options,
            ],
            user=self._user,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    "postgres exited at start: "
                    + (self.tmp / "server.log").read_text(errors="replace")
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                if self._accepts_queries():
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not start within {timeout} s")

    def _accepts_queries(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for the worker (postgresql+psycopg://…)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            # FILE_COPY (PostgreSQL 15's other strategy) copies the template's files instead
            # of WAL-logging every block: half the time for a small database (0.49 → 0.24 s
            # measured), and the tests clone one per PostgreSQL test.
            suffix = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def empty_for_reuse(self, name: str, schema: str) -> bool:
        """Make a test's database as it was cloned, cheaply: end every other session on it,
        then ``TRUNCATE`` every table but ``alembic_version``. Only when its schema and settings
        still have the fingerprint ``schema`` (see :meth:`fingerprint`); otherwise, or when it
        cannot be emptied, drop it and return False (the next test clones a fresh one)."""
        import psycopg

        try:
            with psycopg.connect(self.dsn(), autocommit=True) as conn:
                if conn.execute(_END_OTHER_SESSIONS, (name,)).fetchall():
                    wait_until(
                        lambda: conn.execute(_SESSIONS, (name,)).fetchone() == (0,),
                        timeout=10,
                        what=f"the sessions on {name} ended",
                    )
            with psycopg.connect(self.dsn(name), autocommit=True) as conn:
                if self._fingerprint(conn) != schema:
                    raise ValueError("schema or settings changed")
                tables = [row[0] for row in conn.execute(_TABLES).fetchall()]
                conn.execute("SET lock_timeout = '5s'")
                conn.execute(
                    "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
                )
            return True
        except (psycopg.Error, AssertionError, ValueError):
            self.drop_database(name)
            return False

    def fingerprint(self, name: str) -> str:
        """A digest of a database's schema (tables, columns, indexes, constraints, triggers,
        functions, schemas), its revision and its own settings."""
        import psycopg

        with psycopg.connect(self.dsn(name)) as conn:
            return self._fingerprint(conn)

    @staticmethod
    def _fingerprint(conn: Any) -> str:
        row = conn.execute(_FINGERPRINT).fetchone()
        return str(row[0])

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.dsn()) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: smart shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
