"""uvicorn in a thread beside the scheduler: bind early, serve once the database answers, stop
with the daemon.

:meth:`HttpServer.bind` runs before the daemon waits for its database, so an address that
cannot be used (taken, not of this machine, a privileged port) stops ``run`` at once with one
line and exit code 2, like the other start-up checks, and systemd does not restart it in a
loop. The socket is bound but not listening until :meth:`HttpServer.start`, so a client
meanwhile is refused rather than left waiting. :meth:`HttpServer.stop` lets the requests in
flight finish within the daemon's shutdown grace time.

Plain uvicorn: h11 and asyncio, no websockets, no lifespan, no uvloop, its logging left to
ours (its own lines only from WARNING up), no access log: a scrape every 15 s would bury the
sync's lines, and refused tokens are logged as ``http_auth_failed``.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from worker.config import HttpSettings, parse_listen
from worker.core.errors import HttpListenError, WatcherError
from worker.core.logs import get_logger

log = get_logger("worker.http")
START_TIMEOUT = 10.0


class HttpServer:
    """One uvicorn server on one socket, run in a daemon thread."""

    def __init__(self, app: ASGIApp, settings: HttpSettings, *, grace_seconds: float) -> None:
        address = parse_listen(settings.listen)
        if address is None:
            raise ValueError("[http] listen is empty: the HTTP server is off")
        self.host, self.port = address
        self.listen = settings.listen
        self.config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies) or None,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=max(1, int(grace_seconds)),
        )
        self.server = uvicorn.Server(self.config)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def bind(self) -> None:
        """Claim the address now; :class:`HttpListenError` (exit code 2) if it cannot be."""
        try:
            infos = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise HttpListenError(self._cannot(exc)) from None
        try:
            # Lets a restarted daemon rebind while the old connections sit in TIME_WAIT; it
            # does not let two servers share a listening port on Linux.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise HttpListenError(self._cannot(exc)) from None
        self._socket = sock
        self.port = sock.getsockname()[1]  # the port chosen for ":0"

    def _cannot(self, exc: OSError) -> str:
        reason = exc.strerror or str(exc)
        return (
            f"cannot listen on {self.listen} ([http] listen): {reason}; choose another "
            "address or port, or set [http] listen to an empty string to turn the HTTP "
            "server off"
        )

    def start(self) -> None:
        """Serve on the bound socket in a thread; returns once it accepts connections."""
        if self._socket is None:
            self.bind()
        sock = self._socket
        assert sock is not None
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise WatcherError(f"the HTTP server on {self.url} did not start")
            time.sleep(0.01)
        log.info("http_started", url=self.url)

    def request_stop(self) -> None:
        """Stop accepting connections; the requests in flight go on (see :meth:`stop`)."""
        self.server.should_exit = True

    def stop(self, timeout: float) -> bool:
        """Stop and wait up to ``timeout`` seconds; returns whether it stopped in time.

        Safe to call more than once, and before :meth:`start` (it then releases the socket).
        """
        self.request_stop()
        thread, self._thread = self._thread, None
        sock, self._socket = self._socket, None
        if thread is None:
            if sock is not None:
                sock.close()
            return True
        thread.join(timeout=max(timeout, 0.0))
        if thread.is_alive():
            self.server.force_exit = True
            thread.join(timeout=1.0)
            log.warning("http_stop_timed_out", timeout_seconds=round(timeout, 3))
            return False
        log.info("http_stopped")
        return True
