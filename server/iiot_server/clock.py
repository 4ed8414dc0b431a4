"""The server's only source of time.

Everything in ``iiot_server`` reads time through a :class:`Clock` so tests and hybrid
runs can move through days of token lifetime in seconds. No other module may call
``datetime.now()`` or ``time.time()`` (a test enforces it).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Time as the platform sees it: ``now()`` and waits that the clock controls."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until ``seconds`` of this clock's time have passed."""
        ...


class SystemClock:
    """The wall clock (the default)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
