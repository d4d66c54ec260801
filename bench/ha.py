"""`make bench`'s two-daemons scenario (issue 22): what a hot standby costs, and how fast it
takes over.

Real ``openrouter-watcher run`` daemons on one PostgreSQL database and the fake OpenRouter (its
own process), polling every 10 s, beating every 2 s, taking over after 10 s:

* OpenRouter requests per hour, one daemon against two (the leader and a standby), over the
  same window, and what each daemon's own counter says (``/metrics``): the standby's must be 0;
* the database load of a standby on the defaults (a heartbeat every 10 s): statements,
  transactions and new connections per minute, counted on a standby run in this process
  (its election is all a standby does: its jobs skip before touching the database);
* the takeover: ``kill -9`` of the leader (its connection goes, the lock with it) and a frozen
  leader (``SIGSTOP``: the server keeps its connection until the standby ends it), from the
  signal to the standby's row saying ``leader``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness import ENTRY, ROOT, TODAY, Findings, Row, fake_server, fmt_s

HEARTBEAT, TAKEOVER, POLL = 2.0, 10.0, 10
KILLS = 3


class Daemon:
    """One ``openrouter-watcher run`` process; its JSON log lines in a file."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"ha-{name}-{time.monotonic_ns()}.log"
        cli = str(Path(sys.executable).parent / "openrouter-watcher")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [cli, "run"],
                env={**env, "OPENROUTER_WATCHER_HA_INSTANCE_NAME": name},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        found = [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]
        return [e for e in found if e.get("event") == name]

    def requests_counted(self) -> int:
        """This daemon's own count of its OpenRouter requests (its /metrics)."""
        import httpx

        (started,) = self.events("http_started")
        text = httpx.get(started["url"] + "/metrics", timeout=10).text
        return int(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("openrouter_watcher_openrouter_requests_total{")
            )
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait(condition: Any, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held (RuntimeError after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"bench ha: not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def _role(factory: Any, name: str) -> str | None:
    from sqlalchemy import select

    from worker.store.models import Instance

    with factory() as session:
        return session.scalar(select(Instance.role).where(Instance.name == name))


def _is(factory: Any, name: str, role: str) -> Any:
    return lambda: _role(factory, name) == role


def _standby_load(db_url: str, seconds: float) -> dict[str, float]:
    """A standby's election on the defaults, in this process, for ``seconds``: what it sends
    the database, per minute."""
    from sqlalchemy import event

    from worker.config import HaSettings
    from worker.daemon.leader import Leadership
    from worker.store.db import create_db_engine

    engine = create_db_engine(db_url)
    counts = {"statements": 0, "transactions": 0, "connections": 0}

    def statement(*_args: Any) -> None:
        counts["statements"] += 1

    def commit(*_args: Any) -> None:
        counts["transactions"] += 1

    def connect(*_args: Any) -> None:
        counts["connections"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    event.listen(engine.pool, "connect", connect)
    standby = Leadership(engine, HaSettings(instance_name="bench-standby"))
    standby.start()
    for key in counts:
        counts[key] = 0  # the steady state, not the registration
    time.sleep(seconds)
    leads = standby.is_leader
    standby.stop()
    engine.dispose()
    per_minute = {key: value * 60 / seconds for key, value in counts.items()}
    return {**per_minute, "led": float(leads)}


def rows(params: dict[str, Any], workdir: Path, pg: Any) -> Findings:
    """The standby's cost and the takeover times."""
    from worker.store.db import create_db_engine, make_session_factory
    from worker.testing.env import clean_env
    from worker.vault.crypto import generate_master_key

    found = Findings()
    keys, window = params["ha"]
    db_url = pg.create_database("ha")
    master_key = generate_master_key()
    seed = {"db_url": db_url, "keys": keys, "master_key": master_key}
    subprocess.run([sys.executable, str(ENTRY), "prepare", json.dumps(seed)], cwd=ROOT, check=True)
    config = workdir / "ha.toml"
    config.write_text(
        f"[live]\ninterval_seconds = {POLL}\n\n[ha]\nheartbeat_seconds = {HEARTBEAT}\n"
        f"takeover_seconds = {TAKEOVER}\n"
    )
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    daemons: list[Daemon] = []
    with fake_server(keys, 3, 2, 0.0, workdir) as fake:
        env = clean_env(
            OPENROUTER_WATCHER_CONFIG=str(config),
            OPENROUTER_WATCHER_DATABASE_URL=db_url,
            OPENROUTER_WATCHER_OPENROUTER_BASE_URL=fake.base_url,
            OPENROUTER_WATCHER_ENCRYPTION_KEY=master_key,
            OPENROUTER_WATCHER_LOGGING_FORMAT="json",
            OPENROUTER_WATCHER_HTTP_LISTEN="127.0.0.1:0",
            OPENROUTER_WATCHER_SYNC_HISTORY_DAYS="0",
            OPENROUTER_WATCHER_TESTING_CLOCK=f"{TODAY.isoformat()}T12:00:00Z",
            PYTHONUNBUFFERED="1",
        )
        try:
            a = Daemon("a", env, workdir)
            daemons.append(a)
            _wait(lambda: a.events("sync_finished") and a.events("poll_finished"), 120, "a")
            before = fake.requests()
            time.sleep(window)
            alone = fake.requests() - before

            b = Daemon("b", env, workdir)
            daemons.append(b)
            _wait(lambda: _role(factory, "b") == "standby" and b.events("http_started"), 60, "b")
            before, counted = fake.requests(), a.requests_counted()
            load: dict[str, float] = {}
            measuring = threading.Thread(
                target=lambda: load.update(_standby_load(db_url, max(window, 60.0)))
            )
            measuring.start()
            time.sleep(window)
            paired = fake.requests() - before
            by_leader = a.requests_counted() - counted
            by_standby = b.requests_counted()
            measuring.join()

            # kill -9 of the leader, three times (the standby's next heartbeat decides: the
            # figure varies within one heartbeat); each time the dead one comes back standby.
            killed: list[float] = []
            leader, standby = a, b
            for _ in range(KILLS):
                os.kill(leader.proc.pid, signal.SIGKILL)
                killed.append(_wait(_is(factory, standby.name, "leader"), 60, "takeover"))
                leader.proc.wait()
                back = Daemon(leader.name, env, workdir)
                daemons.append(back)
                _wait(_is(factory, back.name, "standby"), 60, "back as standby")
                leader, standby = standby, back
            leader.proc.send_signal(signal.SIGSTOP)
            frozen = _wait(_is(factory, standby.name, "leader"), 120, "frozen taken over")
            leader.proc.send_signal(signal.SIGCONT)
            _wait(lambda: leader.events("leadership_lost"), 60, "the frozen leader steps down")
        finally:
            for daemon in daemons:
                daemon.stop()
    engine.dispose()
    per_hour = 3600 / window
    about = (
        f"postgresql, {keys} management keys, poll every {POLL} s, "
        f"heartbeat {HEARTBEAT:g} s, takeover {TAKEOVER:g} s"
    )
    found.rows.append(
        Row(
            "two daemons: requests",
            about + f", {window:g} s windows",
            {
                "requests": f"{alone * per_hour:,.0f}/h with one daemon; "
                f"{paired * per_hour:,.0f}/h with two (× {paired / alone if alone else 0:.2f}): "
                "the leader's own count "
                f"{by_leader * per_hour:,.0f}/h, the standby's {by_standby}",
            },
        )
    )
    found.rows.append(
        Row(
            "standby: database load",
            "postgresql, [ha] defaults (heartbeat 10 s), one standby's election for "
            f"{max(window, 60.0):g} s",
            {
                "requests": f"{load['statements']:.0f} statements/min, "
                f"{load['transactions']:.0f} transactions/min, "
                f"{load['connections']:.1f} new connections/min; 0 to OpenRouter",
            },
        )
    )
    bound = TAKEOVER + HEARTBEAT
    found.rows.append(
        Row(
            "takeover",
            about,
            {
                "wall": f"kill -9 of the leader: {', '.join(fmt_s(k) for k in killed)} (max "
                f"{fmt_s(max(killed))}: the standby's next heartbeat, every {HEARTBEAT:g} s); "
                f"frozen leader (SIGSTOP): {fmt_s(frozen)} (bound {bound:g} s)",
            },
        )
    )
    return found
