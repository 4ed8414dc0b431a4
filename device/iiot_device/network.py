"""One network thread per process for every device's MQTT connection, on ``epoll``.

Why not paho's ``loop_start()`` (a thread per connection, each in ``select()``): ``select()``
takes no file descriptor above 1,023 (``FD_SETSIZE``), and a device holds several (its
MQTT socket, paho's wake-up socket pair, its SQLite files, its HTTP connection). A process
running ~90 devices passes 1,024 descriptors and the next device's paho thread dies at
its first ``select()`` without a word: the connection is never answered (issue 18's
hybrid run stopped at ~170 devices on two workers, 909 descriptors open in each, "MQTT
connection refused: no answer"). Here paho runs through its external-loop interface
(``on_socket_open``/``on_socket_close``/``on_socket_register_write``/
``on_socket_unregister_write``, ``loop_read``/``loop_write``/``loop_misc``) under one
:class:`selectors.DefaultSelector` (``epoll`` on Linux: no descriptor limit but the
process's own), which also takes a thread per device away.

The selector is changed only on its own thread: paho's socket callbacks, which run on
whatever thread calls ``connect``, ``publish`` or ``disconnect``, queue the change and wake
the loop through a socket pair.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MISC_INTERVAL = 1.0
"""Seconds (real time) between paho's keepalive checks (``loop_misc``) of each client, as
paho's own loop does."""


class NetworkLoop:
    """Drives attached paho clients from one thread (started on first use)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._changes: deque[tuple[str, mqtt.Client, Any]] = deque()
        self._sockets: dict[Any, mqtt.Client] = {}
        self._watching: dict[Any, int] = {}  # socket -> the events registered for it
        self._ident: int | None = None  # the loop thread's
        self._closing: dict[mqtt.Client, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def attach(self, client: mqtt.Client) -> None:
        """Let this loop drive ``client`` from its next ``connect()`` (call it before)."""
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="iiot-device-network", daemon=True
                )
                self._thread.start()

    def disconnect(self, client: mqtt.Client, timeout: float = 2.0) -> None:
        """Send DISCONNECT and wait (real time, bounded) until the socket is closed, so a
        clean close is one to the broker (no Will) before this returns; a broker that
        does not take it within ``timeout`` has the socket shut under it."""
        closed = threading.Event()
        self._closing[client] = closed
        try:
            sock: Any = client.socket()
            if sock is None:
                return
            client.disconnect()
            if not closed.wait(timeout):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # paho reads the end and closes
        finally:
            self._closing.pop(client, None)

    # paho's callbacks, on any thread ------------------------------------------------

    def _change(self, kind: str, client: mqtt.Client, sock: Any) -> None:
        self._changes.append((kind, client, sock))
        if threading.get_ident() != self._ident:  # the loop applies its own before it waits
            with contextlib.suppress(BlockingIOError):
                self._wake_w.send(b"\0")

    def _on_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._change("open", client, sock)

    def _on_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._change("close", client, sock)
        closed = self._closing.get(client)
        if closed is not None:
            closed.set()

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._change("write", client, sock)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._change("read", client, sock)

    # the loop's thread --------------------------------------------------------------

    def _apply(self) -> None:
        """The queued changes, in order. A packet to write is written at once: it nearly
        always fits the socket's buffer, and only what does not waits for the socket to
        be writable (registering for that, and off again once written, cost two
        ``epoll_ctl`` calls and a pass of the loop per PUBLISH)."""
        selector, sockets, watching = self._selector, self._sockets, self._watching
        while self._changes:
            kind, client, sock = self._changes.popleft()
            if kind == "close":
                watching.pop(sock, None)
                if sockets.pop(sock, None) is not None:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        selector.unregister(sock)
                continue
            if kind == "write" and sock in sockets and client.socket() is sock:
                try:
                    client.loop_write()  # its "unregister write" queues a "read" change
                except Exception:
                    log.exception("MQTT client %s failed on the network thread", client)
                if not client.want_write():
                    continue
            events = selectors.EVENT_READ
            if kind == "write" or (kind == "open" and client.want_write()):
                events |= selectors.EVENT_WRITE
            if kind == "open":
                sockets[sock] = client
                try:
                    selector.register(sock, events, client)
                    watching[sock] = events
                except (ValueError, OSError):  # closed meanwhile: its close follows
                    sockets.pop(sock, None)
            elif sock in sockets and watching.get(sock) != events:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    selector.modify(sock, events, client)
                    watching[sock] = events

    def _run(self) -> None:
        self._ident = threading.get_ident()
        next_misc = time.monotonic() + MISC_INTERVAL
        while True:
            self._apply()
            timeout = max(0.0, next_misc - time.monotonic())
            for key, mask in self._selector.select(timeout):
                client = key.data
                if client is None:  # the wake-up pair
                    with contextlib.suppress(BlockingIOError):
                        while self._wake_r.recv(4096):
                            pass
                    continue
                try:
                    if mask & selectors.EVENT_READ:
                        client.loop_read()
                        # TLS: records already decrypted wake no epoll
                        while _pending(key.fileobj) and client.socket() is key.fileobj:
                            client.loop_read()
                    if mask & selectors.EVENT_WRITE:
                        client.loop_write()
                except Exception:  # one client's failure is not the others'
                    log.exception("MQTT client %s failed on the network thread", client)
            if time.monotonic() >= next_misc:
                next_misc = time.monotonic() + MISC_INTERVAL
                for client in list(self._sockets.values()):
                    try:
                        client.loop_misc()
                    except Exception:
                        log.exception("MQTT client %s failed its keepalive check", client)


def _pending(sock: Any) -> int:
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0


_shared: NetworkLoop | None = None
_shared_lock = threading.Lock()


def shared_loop() -> NetworkLoop:
    """This process's network loop."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = NetworkLoop()
        return _shared


__all__ = ["MISC_INTERVAL", "NetworkLoop", "shared_loop"]
