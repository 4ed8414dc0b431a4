"""The SDK's only source of time.

Background threads wait through :meth:`Clock.wait`, so a test or a hybrid run can drive
a device through days of token lifetime in seconds by moving an injected clock.
No other module may call ``datetime.now()`` or ``time.time()`` (a test enforces it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


class WakeEvent(threading.Event):
    """A :class:`threading.Event` that also calls its listeners when set, so a clock that
    is not the wall clock can wait for it without polling. A manual clock used to check
    each waiting thread's event every 5 ms: 200 wake-ups a second per idle device, the
    CPU a hybrid run of a few hundred devices spent doing nothing (issue 18).

    >>> event = WakeEvent()
    >>> event.add_listener(lambda: print("set"))
    >>> event.set()
    set
    """

    def __init__(self) -> None:
        super().__init__()
        self._listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()

    def add_listener(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def set(self) -> None:
        super().set()
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()


@runtime_checkable
class Clock(Protocol):
    """Time as the device sees it."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        """Wait until ``seconds`` of clock time pass or ``event`` is set.

        Returns True when the event was set, False when the time ran out.
        """
        ...


class SystemClock:
    """The wall clock (the default)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        if event is None:
            event = threading.Event()
        return event.wait(max(0.0, seconds))
