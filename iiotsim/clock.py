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
import time
from collections.abc import Container
from datetime import UTC, datetime, timedelta

_EVENT_POLL_SECONDS = 0.005  # how often a thread wait re-checks an event it cannot hook


class _ThreadWait:
    """One thread blocked in :meth:`ManualClock.wait`."""

    __slots__ = ("deadline", "event", "idle", "name", "waker")

    def __init__(
        self,
        deadline: datetime,
        event: threading.Event | None,
        name: str,
        waker: threading.Condition | None,
    ) -> None:
        self.deadline, self.event, self.name, self.waker = deadline, event, name, waker
        self.idle = False
        """counted in ``ManualClock._idle``: deadline ahead, event (None or listenable)
        unset; a plain event's wait is never counted, it is checked when asked"""


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
        self._thread_waits: dict[_ThreadWait, None] = {}
        """Waits on a listenable event (``iiot_device.clock.WakeEvent``) sleep on their
        own condition (sharing the clock's lock) until their deadline or their event:
        woken one by one, never polled. A dict (insertion-ordered set): a wait ends in
        O(1), not a scan of the list of all (1,000 in a hybrid worker)."""
        self._idle = 0
        """Waits with nothing to wake them (deadline ahead, event None or listenable and
        unset), kept up to date as waits begin, end, are woken and as time moves, so
        :meth:`wait_idle` needs no scan (a hybrid worker polled a scan of its 250 waits
        every millisecond: a quarter of its CPU, issue 18)."""
        self._idle_changes = 0
        """Times a wait became idle or stopped being idle."""
        self._became_idle = threading.Condition(self._lock)
        self._idle_targets: list[int] = []
        """What each :meth:`wait_idle` in progress waits for; a wait becoming idle wakes
        them only once the smallest is reached. Woken at every one, a hybrid worker's
        main thread came back ~30 times a step to find its 250 not yet idle, each time
        taking the GIL from the devices at work."""
        self._plain_waits = 0
        """Waits on an event that cannot tell when it is set (a plain
        :class:`threading.Event`): their idleness is read when asked."""

    def now(self) -> datetime:
        # No lock: one attribute read of an immutable datetime is atomic. With the lock,
        # a hybrid run's platform thread spent 7 % of its samples queued behind the
        # coordinator's next_deadline() and step for it (py-spy, 1,000 devices).
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
            return self._idle_count()

    def _idle_count(self) -> int:
        plain = (
            sum(
                1
                for w in self._thread_waits
                if not w.idle
                and w.waker is None
                and w.event is not None
                and w.deadline > self._now
                and not w.event.is_set()
            )
            if self._plain_waits
            else 0
        )
        return self._idle + plain

    def wait_idle(self, threads: int, timeout: float, quiet: float = 0.001) -> bool:
        """Block (real time) until at least ``threads`` threads are idle (see
        :attr:`idle_threads`) and none of them stirred for ``quiet`` seconds; False after
        ``timeout`` seconds. Woken as waits begin, not polled. ``quiet`` covers what no
        thread shows yet: a packet on its way to a socket that will wake a waiting
        thread."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._idle_targets.append(threads)
            try:
                while True:
                    while self._idle_count() < threads:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return False
                        self._became_idle.wait(min(left, 0.05) if self._plain_waits else left)
                    seen = self._idle_changes
                    self._became_idle.wait(quiet)
                    if self._idle_changes == seen and self._idle_count() >= threads:
                        return True
                    if time.monotonic() > deadline:
                        return False
            finally:
                self._idle_targets.remove(threads)

    def waiting_threads(self) -> frozenset[str]:
        """Names of the threads blocked in :meth:`wait` now (a stuck hybrid step names the
        devices that are not)."""
        with self._cond:
            return frozenset(w.name for w in self._thread_waits)

    def next_deadline(self, exclude_threads: Container[str] = ()) -> datetime | None:
        """The earliest time some wait is waiting for, or None if nothing waits; waits of
        threads named in ``exclude_threads`` are left out."""
        with self._cond:
            deadlines = [d for f, (d, _) in self._async_waiters.items() if not f.done()]
            deadlines += [w.deadline for w in self._thread_waits if w.name not in exclude_threads]
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
        for w in self._thread_waits:
            if w.idle and w.deadline <= when:
                self._not_idle(w)  # so notified once, however many moves before it runs
                if w.waker is not None:
                    w.waker.notify()
        return when

    def _not_idle(self, w: _ThreadWait) -> None:
        w.idle = False
        self._idle -= 1
        self._idle_changes += 1

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
            listenable = hasattr(event, "add_listener")
            waker = threading.Condition(self._lock) if listenable else None
            w = _ThreadWait(deadline, event, threading.current_thread().name, waker)
            self._thread_waits[w] = None
            plain = event is not None and not listenable
            self._plain_waits += plain
            if not plain and deadline > self._now and not (event is not None and event.is_set()):
                w.idle = True
                self._idle += 1
                self._idle_changes += 1
                # a wait_idle needs waking once its count is reached (in its quiet period
                # it compares _idle_changes when the period ends)
                if self._idle_targets and self._idle >= min(self._idle_targets):
                    self._became_idle.notify_all()
            elif plain:
                self._became_idle.notify_all()  # a plain wait's idleness is read when asked

            def wake() -> None:
                with self._lock:
                    if w.idle:
                        self._not_idle(w)
                    assert waker is not None
                    waker.notify()

            if listenable:
                event.add_listener(wake)  # type: ignore[union-attr]
            try:
                while True:
                    if event is not None and event.is_set():
                        return True
                    if self._now >= deadline:
                        return False
                    if waker is not None:
                        waker.wait()
                    else:  # a plain event: checked every few ms
                        timeout = _EVENT_POLL_SECONDS if event is not None else None
                        self._cond.wait(timeout=timeout)
            finally:
                if listenable:
                    event.remove_listener(wake)  # type: ignore[union-attr]
                if w.idle:
                    self._not_idle(w)
                self._plain_waits -= plain
                del self._thread_waits[w]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def wall_clock_now() -> datetime:
    """The real current time (UTC): the default for displays such as the approval panel."""
    return datetime.now(UTC)
