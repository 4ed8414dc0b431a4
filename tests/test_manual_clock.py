import asyncio
import threading
from datetime import UTC, datetime

import pytest

from iiotsim.clock import ManualClock


def test_advance_moves_now() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(90)
    assert clock.now() == datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)


def test_time_never_goes_back() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(datetime(2000, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="seconds must be"):
        clock.advance(-1)


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 1, 1))  # noqa: DTZ001


def test_thread_wait_returns_when_clock_passes_deadline() -> None:
    clock = ManualClock()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(clock.wait(3600)))
    t.start()
    while clock.next_deadline() is None:
        threading.Event().wait(0.001)
    clock.advance(3599)
    t.join(0.05)
    assert t.is_alive()
    clock.advance(1)
    t.join(5)
    assert result == [False]


def test_thread_wait_returns_true_on_event() -> None:
    clock = ManualClock()
    event = threading.Event()
    event.set()
    assert clock.wait(10_000, event) is True


def test_async_sleep_wakes_on_advance() -> None:
    clock = ManualClock()

    async def main() -> bool:
        task = asyncio.create_task(clock.sleep(86400))
        while clock.next_deadline() is None:
            await asyncio.sleep(0)
        threading.Thread(target=clock.advance, args=(86400,)).start()
        await asyncio.wait_for(task, 5)
        return task.done()

    assert asyncio.run(main()) is True


def _waiting(
    clock: ManualClock, seconds: float, event: threading.Event | None = None
) -> threading.Thread:
    t = threading.Thread(target=clock.wait, args=(seconds, event), daemon=True)
    t.start()
    return t


def test_idle_threads_follow_waits_events_and_time() -> None:
    from iiot_device.clock import WakeEvent

    clock = ManualClock()
    listenable, plain = WakeEvent(), threading.Event()
    threads = [_waiting(clock, 60, listenable), _waiting(clock, 120, plain), _waiting(clock, 600)]
    assert clock.wait_idle(3, timeout=5)
    assert clock.idle_threads == 3
    listenable.set()  # woken: no longer idle, at once (before its thread runs)
    assert clock.idle_threads == 2
    threads[0].join(5)
    plain.set()  # a plain event is read when asked
    assert clock.idle_threads == 1
    threads[1].join(5)
    clock.advance(600)  # the last deadline passes: nothing idle
    assert clock.idle_threads == 0
    threads[2].join(5)
    assert not any(t.is_alive() for t in threads)
    assert clock.idle_threads == 0 and clock.waiting_threads() == frozenset()


def test_wait_idle_times_out_while_a_thread_is_busy() -> None:
    clock = ManualClock()
    _waiting(clock, 60)
    assert clock.wait_idle(1, timeout=5)
    assert not clock.wait_idle(2, timeout=0.05)  # the second thread never waits


def test_wait_idle_is_not_woken_by_each_wait_before_its_count() -> None:
    """A hybrid worker's settle waits for its 250 devices: woken by each device that
    began waiting, it took the GIL from the others ~30 times a step for nothing."""
    from iiot_device.clock import WakeEvent

    clock = ManualClock()
    wakes: list[float | None] = []
    condition = clock._became_idle
    original = condition.wait

    def counted(timeout: float | None = None) -> bool:
        wakes.append(timeout)
        return original(timeout)

    condition.wait = counted  # type: ignore[method-assign]
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(clock.wait_idle(20, timeout=10)))
    waiter.start()
    events = [WakeEvent() for _ in range(20)]
    for event in events:  # one at a time, each waiting before the next starts
        seen = clock.idle_threads
        _waiting(clock, 60, event)
        while clock.idle_threads == seen:
            threading.Event().wait(0.001)
    waiter.join(10)
    assert result == [True]
    # woken once the 20th began waiting, then its quiet period (not 20 wake-ups)
    assert len(wakes) <= 3, wakes
    for event in events:
        event.set()


def test_wait_idle_wakes_when_the_last_thread_begins_waiting() -> None:
    clock = ManualClock()
    released = threading.Event()

    def busy_then_wait() -> None:
        released.wait(5)
        clock.wait(60)

    threading.Thread(target=busy_then_wait, daemon=True).start()
    _waiting(clock, 60)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(clock.wait_idle(2, timeout=5)))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive()  # one thread is still busy
    released.set()
    waiter.join(5)
    assert result == [True]
    clock.advance(60)
