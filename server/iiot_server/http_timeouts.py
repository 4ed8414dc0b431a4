"""uvicorn's HTTP protocol with deadlines on incomplete requests.

uvicorn (httptools) only times out an *idle keep-alive* connection, and only after a
response: a fresh connection that sends nothing gets no timer, and any byte cancels the
keep-alive timer without re-arming it. Measured before this guard: a raw socket that sent
nothing, or trickled a header byte every 0.2 s, or stalled inside a declared body, was
still open after 10 s with every timeout at 1 s (400 such connections stayed open in the
issue 10 run). Here a connection gets ``header_timeout`` seconds, from opening or from the
first byte of its next request, to finish the headers, then ``body_timeout`` seconds to
finish the body; past either, the server closes it. Time is real time: these guard
sockets, not simulated token lifetimes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that closes a connection whose request is not complete
    in time. Configure through :func:`deadline_protocol`."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._awaiting_headers = True

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)  # a connection that never sends is closed too

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers and self._deadline is None:
            self._arm(self.header_timeout)  # the next request on a kept-alive connection
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()  # the handler's own time is not bounded here
        self._awaiting_headers = True
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def deadline_protocol(
    header_timeout: float, body_timeout: float
) -> type[DeadlineHttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``, with these deadlines."""
    return type(
        "DeadlineHttpToolsProtocol",
        (DeadlineHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
