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
