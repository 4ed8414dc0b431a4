"""A clock that only moves when told to, shared by platform, devices and simulator.

:class:`ManualClock` satisfies both ``iiot_server.clock.Clock`` (async ``sleep``) and
``iiot_device.clock.Clock`` (thread ``wait``), so one instance can drive the embedded
platform, real SDK clients and a simulation through days of token lifetime in seconds.

Example::

    clock = ManualClock()
    with Platform(clock=clock) as platform:
        ...
        clock.advance(3600)  # one hour passes for everyone at once
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Container
from datetime import UTC, datetime, timedelta

_EVENT_POLL_SECONDS = 0.005  # how often a thread wait re-checks an event it cannot hook


class ManualClock:
    """A clock whose time moves only through :meth:`advance` or :meth:`set`."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._async_waiters: dict[asyncio.Future[None], tuple[datetime, asyncio.AbstractEventLoop]]
        self._async_waiters = {}
        """Keyed by future: a platform sleeps once per live MQTT session (its credentials'
        expiry), and a list made each ending sleep a scan of all (issue 18)."""
        self._thread_deadlines: list[datetime] = []
        self._thread_waits: list[tuple[datetime, threading.Event | None, str]] = []
        self._wakers: dict[int, tuple[datetime, threading.Condition]] = {}
        """Waits on a listenable event (``iiot_device.clock.WakeEvent``) sleep on their
        own condition (sharing the clock's lock) until their deadline or their event:
        woken one by one, never polled."""

    def now(self) -> datetime:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move time forward by ``seconds`` and wake every wait that has run out."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        with self._cond:
            return self._move_to(self._now + timedelta(seconds=seconds))

    def set(self, when: datetime) -> datetime:
        """Move time forward to ``when`` (never backwards)."""
        with self._cond:
            if when < self._now:
                raise ValueError(f"time cannot go back from {self._now} to {when}")
            return self._move_to(when)

    @property
    def idle_threads(self) -> int:
        """Threads blocked in :meth:`wait` with nothing to wake them yet: their deadline
        is ahead and their event unset. Hybrid runs move time on only when every device
        is idle."""
        with self._cond:
            return sum(
                1
                for deadline, event, _name in self._thread_waits
                if deadline > self._now and (event is None or not event.is_set())
            )

    def waiting_threads(self) -> frozenset[str]:
        """Names of the threads blocked in :meth:`wait` now (a stuck hybrid step names the
        devices that are not)."""
        with self._cond:
            return frozenset(name for _, _, name in self._thread_waits)

    def next_deadline(self, exclude_threads: Container[str] = ()) -> datetime | None:
        """The earliest time some wait is waiting for, or None if nothing waits; waits of
        threads named in ``exclude_threads`` are left out."""
        with self._cond:
            deadlines = [d for f, (d, _) in self._async_waiters.items() if not f.done()]
            deadlines += [d for d, _, name in self._thread_waits if name not in exclude_threads]
            return min(deadlines, default=None)

    def _move_to(self, when: datetime) -> datetime:
        self._now = when
        due = [(f, loop) for f, (d, loop) in self._async_waiters.items() if d <= when]
        for fut, loop in due:
            del self._async_waiters[fut]
            # A closed loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut)
        self._cond.notify_all()
        for deadline, waker in self._wakers.values():
            if deadline <= when:
                waker.notify()
        return when

    # iiot_server.clock.Clock
    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            self._async_waiters[fut] = (self._now + timedelta(seconds=seconds), loop)
        try:
            await fut
        finally:
            with self._cond:
                self._async_waiters.pop(fut, None)

    # iiot_device.clock.Clock
    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        with self._cond:
            deadline = self._now + timedelta(seconds=max(0.0, seconds))
            self._thread_deadlines.append(deadline)
            waiting = (deadline, event, threading.current_thread().name)
            self._thread_waits.append(waiting)
            listenable = hasattr(event, "add_listener")
            waker = threading.Condition(self._lock) if listenable else self._cond
            key = id(waiting)
            if listenable:
                self._wakers[key] = (deadline, waker)

                def wake() -> None:
                    with self._lock:
                        waker.notify()

                event.add_listener(wake)  # type: ignore[union-attr]
            try:
                while True:
                    if event is not None and event.is_set():
                        return True
                    if self._now >= deadline:
                        return False
                    if listenable:
                        waker.wait()
                    else:  # a plain event: checked every few ms
                        timeout = _EVENT_POLL_SECONDS if event is not None else None
                        self._cond.wait(timeout=timeout)
            finally:
                if listenable:
                    event.remove_listener(wake)  # type: ignore[union-attr]
                    del self._wakers[key]
                self._thread_deadlines.remove(deadline)
                self._thread_waits.remove(waiting)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def wall_clock_now() -> datetime:
    """The real current time (UTC): the default for displays such as the approval panel."""
    return datetime.now(UTC)
