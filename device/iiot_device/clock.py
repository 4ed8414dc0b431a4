"""The SDK's only source of time.

Background threads wait through :meth:`Clock.wait`, so a test or a hybrid run can drive
a device through days of token lifetime in seconds by moving an injected clock.
No other module may call ``datetime.now()`` or ``time.time()`` (a test enforces it).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


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
