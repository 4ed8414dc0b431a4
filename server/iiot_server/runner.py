"""Run the platform in one background thread with its own event loop.

Used by ``python -m iiot_server``, the embedded ``iiotsim.Platform`` and the tests: the
HTTP app (and, through ``on_ready`` hooks, the MQTT broker) share that one loop, so a
notebook kernel's own loop is never involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from .app import Hook, create_app
from .clock import Clock, SystemClock
from .http_timeouts import deadline_protocol
from .services import Services
from .settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

try:  # uvloop: a faster loop where it exists (not on Windows)
    import uvloop

    _BaseLoop: type[asyncio.AbstractEventLoop] = uvloop.Loop
except ImportError:  # pragma: no cover
    _BaseLoop = asyncio.SelectorEventLoop


class _PlatformLoop(_BaseLoop):  # type: ignore[valid-type,misc]
    """The server's loop: every TLS listener on it (uvicorn's and amqtt's, neither of which
    takes the option) gets ``ssl_handshake_timeout`` (``Settings.tls_handshake_timeout``)
    instead of asyncio's 60 s."""

    tls_handshake_timeout: float = 10.0

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.tls_handshake_timeout)
        server: asyncio.Server = await super().create_server(*args, **kwargs)
        return server


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class ServerRunner:
    """The platform server on ``settings.host:settings.port`` (0 = a free port).

    >>> with ServerRunner(Settings(port=0, database_url="sqlite:///:memory:")) as r:
    ...     r.http_url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        on_ready: list[Hook] | None = None,
        on_shutdown: list[Hook] | None = None,
        on_admin_key: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._on_ready = [self._capture_services, *(on_ready or [])]
        self._on_shutdown = list(on_shutdown or [])
        self._on_admin_key = on_admin_key
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.services: Services | None = None
        self.port: int = settings.port
        self.leftover_tasks: list[str] = []
        """Names of tasks still pending when the server had stopped (cancelled then)."""

    async def _capture_services(self, services: Services) -> None:
        self.services = services

    @property
    def http_url(self) -> str:
        scheme = "https" if self.settings.tls else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerRunner:
        """Start serving; returns once the server answers (or raises why it could not)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._socket = bind_socket(self.settings.host, self.settings.port)
        self.port = self._socket.getsockname()[1]
        app = create_app(
            self.settings,
            self.clock,
            on_ready=self._on_ready,
            on_shutdown=self._on_shutdown,
            on_admin_key=self._on_admin_key,
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            # httptools, with deadlines on incomplete requests (uvicorn has no header
            # timeout; see http_timeouts.py) and a bounded idle keep-alive
            http=deadline_protocol(
                self.settings.http_header_timeout, self.settings.http_body_timeout
            ),
            timeout_keep_alive=self.settings.http_keep_alive_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=5,
            ssl_certfile=self.settings.tls_cert_file,
            ssl_keyfile=self.settings.tls_key_file,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="iiot-server", daemon=True)
        self._thread.start()
        waited = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            waited.wait(0.01)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the platform server did not start: {self._error or 'timeout'}")
        return self

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        loop = _PlatformLoop()
        loop.tls_handshake_timeout = self.settings.tls_handshake_timeout
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported by start(); a thread must not die silently
            self._error = exc
            log.exception("platform server stopped with an error")
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            self.leftover_tasks = sorted(t.get_name() for t in pending)
            if pending:
                log.warning("tasks left running at shutdown: %s", self.leftover_tasks)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop from another thread and return its result."""
        if self.loop is None:
            raise RuntimeError("server not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and wait for the thread; idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("platform server thread did not stop within %s s", timeout)
        if self._socket is not None:
            self._socket.close()
        self._thread = None
        self._server = None
        self._socket = None

    def __enter__(self) -> ServerRunner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
