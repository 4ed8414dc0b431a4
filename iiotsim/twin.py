"""Hybrid ("digital twin") runs: real SDK clients against the real embedded platform,
their network cut and restored by the simulator's connectivity model, on one
:class:`~iiotsim.clock.ManualClock` shared by platform, devices and simulation.

Each device reaches the platform only through its own pair of loopback TCP proxies
(HTTP and MQTT). Going offline closes the device's sockets and stops its listeners, so
the device sees a dropped connection and refused reconnects, not silence. Simulated time
moves from one event to the next (connectivity changes, and every deadline a device or
the platform waits for); before each move the run waits until every device is idle
(blocked on the clock), so time stands still while a real call is in flight. The servers
run in their own thread and loop, the proxies in another; never in a notebook's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
from iiot_device import Backoff, DeviceClient, ProvisioningOperation

from .clock import ManualClock
from .platform import Platform
from .sim import Scenario, SimulationResult, connection_intervals, draw_fleet, simulate

_SETTLE_POLL = 0.003  # real seconds between idleness checks
_SETTLE_STABLE = 2  # consecutive idle checks before time may move
_SETTLE_TIMEOUT = 30.0


class _Link:
    """One device's path to one platform port: a listener that forwards, or nothing."""

    def __init__(self, hub: ProxyHub, target: int) -> None:
        self.hub, self.target = hub, target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        if self.server is not None:
            return
        self.server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for writer in list(self.writers):
            writer.transport.abort()  # the device sees its connection drop at once
        self.writers.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.discard(writer)
        self.writers.discard(up_writer)


class ProxyHub:
    """Loopback TCP proxies, one event loop in one background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="iiot-proxies", daemon=True
        )
        self.thread.start()
        self.links: list[_Link] = []

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def link(self, target_port: int) -> _Link:
        link = _Link(self, target_port)
        self.call(link.up())
        self.links.append(link)
        return link

    async def _shutdown(self) -> None:
        for link in self.links:
            await link.down()
        # connections still being opened or forwarded end here, not with a closed loop
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        self.call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class HybridResult:
    comparison: pd.DataFrame
    """hybrid vs simulator, one row per metric"""
    lockouts: int
    off_periods: int
    simulated: SimulationResult
    events: pd.DataFrame = field(default_factory=pd.DataFrame)
    """the connectivity the run imposed: ``time`` (s), ``device``, ``kind``"""
    online: pd.DataFrame = field(default_factory=pd.DataFrame)
    """devices online, mean per ``scenario.timeline_resolution`` (index ``hours`` from the
    start, as the simulator's timeline): ``hybrid`` from the platform's connection records
    of the real devices, ``simulator`` the prediction's ``timeline["online"]``"""


def _nothing() -> None:
    pass


Progress = Callable[[float, float], None]
"""``progress(done, total)``: simulated seconds run so far and in all"""


def online_per_bin(
    intervals: pd.DataFrame, start: datetime, duration: float, resolution: float
) -> pd.Series:
    """Mean number of devices online in each ``resolution``-second bin of ``duration``
    seconds from ``start`` (time-weighted, as the simulator's timeline), from online
    intervals (:func:`iiotsim.sim.connection_intervals`: ``state``, ``start``, ``end``).

    >>> import pandas as pd
    >>> t0 = pd.Timestamp("2026-01-01", tz="UTC")
    >>> at = [t0 + pd.Timedelta(seconds=s) for s in (0, 1800, 3600, 7200)]
    >>> iv = pd.DataFrame({"state": ["online", "online"],
    ...                    "start": [at[0], at[1]], "end": [at[3], at[2]]})
    >>> online_per_bin(iv, t0, 7200, 3600).tolist()
    [1.5, 1.0]
    """
    bins = int(np.ceil(duration / resolution))
    edges = np.minimum(np.arange(bins + 1) * resolution, duration)
    online = intervals[intervals["state"] == "online"]
    origin = pd.Timestamp(start)
    a = ((pd.to_datetime(online["start"], utc=True) - origin).dt.total_seconds()).to_numpy()
    b = ((pd.to_datetime(online["end"], utc=True) - origin).dt.total_seconds()).to_numpy()
    a, b = np.clip(a, 0, duration), np.clip(b, 0, duration)
    # seconds online inside each bin: overlap of [a, b) with [edge_i, edge_i+1)
    lo = np.maximum(a[:, None], edges[None, :-1])
    hi = np.minimum(b[:, None], edges[None, 1:])
    seconds = np.clip(hi - lo, 0, None).sum(axis=0)
    index = pd.Index(np.arange(bins) * resolution / 3600, name="hours")
    return pd.Series(seconds / np.diff(edges), index=index, name="online")


class HybridRun:
    """``HybridRun(scenario, devices=50).run()``: the scenario's connectivity applied to
    real devices; lockouts counted from what the platform and devices did, beside the
    simulator's prediction for the same scenario."""

    def __init__(
        self, scenario: Scenario, *, devices: int | None = None, data_dir: Path | None = None
    ) -> None:
        n = devices or scenario.fleet_size
        # real devices start now, each online with a new token: the prediction must too
        self.scenario = scenario.replace(fleet_size=n, start="fresh")
        self.clock = ManualClock()
        self._tmp = (
            tempfile.TemporaryDirectory(prefix="iiotsim-hybrid-") if data_dir is None else None
        )
        self.data_dir = Path(self._tmp.name) if self._tmp else Path(data_dir or ".")
        self.platform = Platform(self.data_dir / "platform", clock=self.clock)
        self.hub: ProxyHub | None = None
        self.clients: list[DeviceClient] = []
        self.operations = 0
        self._lock = threading.Lock()
        self._offline: set[str] = set()  # supervisor thread names of offline devices

    def __enter__(self) -> HybridRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # set-up -------------------------------------------------------------------------

    def _approve(self, op: ProvisioningOperation) -> None:
        with self._lock:
            self.operations += 1
        self.platform.admin.approve_operation(op.id)  # a technician standing by

    def _start(self) -> None:
        s = self.scenario
        self.platform.start()
        self.hub = ProxyHub()
        token = self.platform.admin.create_provisioning_token(
            "hybrid",
            max_registration_token_lifetime=s.token.lifetime,
            allow_infinite_lifetime=s.token.lifetime is None,
        )
        http_port, mqtt_port = self.platform.runner.port, self.platform.mqtt_port
        self.links: list[tuple[_Link, _Link]] = []
        for i in range(s.fleet_size):
            http, mqtt = self.hub.link(http_port), self.hub.link(mqtt_port)
            self.links.append((http, mqtt))
            client = DeviceClient.start(
                token.provisioning_token,
                self.data_dir / f"device-{i:04d}.db",
                server_url=f"http://127.0.0.1:{http.port}",
                mqtt_address=("127.0.0.1", mqtt.port),
                device_id=f"hybrid-{i:04d}",
                clock=self.clock,
                on_provisioning_operation=self._approve,
                backoff=Backoff(
                    base=s.backoff.base, cap=min(s.backoff.cap, 60.0), rng=random.Random(i)
                ),
            )
            self.clients.append(client)
        self.settle()

    def settle(self) -> None:
        """Wait (real time) until every device is blocked on the clock."""
        need = len(self.clients)
        stable = 0
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        while stable < _SETTLE_STABLE:
            if time.monotonic() > deadline:
                return  # a device stuck on the network: go on rather than hang
            stable = stable + 1 if self.clock.idle_threads >= need else 0
            time.sleep(_SETTLE_POLL)

    def _advance_to(self, target: float, start: Any) -> None:
        """Move the clock to ``start + target`` s, stopping at every deadline on the way
        except those of offline devices (their retries can only fail; they wake when
        time passes them anyway)."""
        goal = start + timedelta(seconds=target)
        while self.clock.now() < goal:
            nxt = self.clock.next_deadline(exclude_threads=self._offline)
            step = goal if nxt is None or nxt >= goal or nxt <= self.clock.now() else nxt
            if step <= self.clock.now():
                step = min(goal, self.clock.now() + timedelta(seconds=1))
            self.clock.set(step)
            self.settle()

    # the run ------------------------------------------------------------------------

    def run(self, *, progress: bool | Progress = False) -> HybridResult:
        """Start the devices, impose the scenario's connectivity, compare.

        ``progress=True`` shows a bar (tqdm) of simulated hours; a callable is called as
        ``progress(done, total)`` in simulated seconds, ``done`` never decreasing, ending
        at ``total``. Starting 50 devices takes a few seconds, and one simulated day with
        them about 30 s on the 2-core machine (notebook 06).
        """
        s = self.scenario
        report, finish = self._progress(progress, s.duration)
        report(0.0)
        self._start()
        assert self.hub is not None
        start = self.clock.now()
        provisioned = self.operations
        fleet = draw_fleet(s)  # the simulator's own connectivity draw
        events: list[tuple[float, int, bool]] = []
        for d in range(s.fleet_size):
            times, online = fleet.times[d], fleet.online[d]
            prev = True
            for k in range(online.shape[0]):
                if times[k + 1] <= times[k] or bool(online[k]) == prev:
                    continue
                events.append((float(times[k]), d, bool(online[k])))
                prev = bool(online[k])
        events.sort()
        log = []
        off_periods = 0
        for t, d, up in events:
            self._advance_to(t, start)
            http, mqtt = self.links[d]
            thread = f"iiot-device-hybrid-{d:04d}"
            if up:
                self.hub.call(http.up())
                self.hub.call(mqtt.up())
                self._offline.discard(thread)
                off_periods += 1
            else:
                self.hub.call(mqtt.down())
                self.hub.call(http.down())
                self._offline.add(thread)
            log.append((t, d, "reconnect" if up else "disconnect"))
            self.settle()
            report(min(t, s.duration))
        self._advance_to(s.duration, start)
        report(s.duration)
        finish()
        lockouts = self.operations - provisioned
        refreshes = self._refreshes()
        predicted = simulate(s)
        sim_lockouts = int(predicted.summary["lockouts"])
        sim_off = int(predicted.devices["connects"].sum())
        sim_refreshes = int(predicted.devices["refreshes"].sum())
        comparison = pd.DataFrame(
            {
                "hybrid": [lockouts, off_periods, lockouts / max(1, off_periods), refreshes],
                "simulator": [sim_lockouts, sim_off, sim_lockouts / max(1, sim_off), sim_refreshes],
            },
            index=["lockouts", "off periods", "lockouts per off period", "token refreshes"],
        )
        frame = pd.DataFrame(log, columns=["time", "device", "kind"])
        intervals = connection_intervals(
            self.platform.admin,
            [f"hybrid-{i:04d}" for i in range(s.fleet_size)],
            until=self.clock.now(),
        )
        hybrid_online = online_per_bin(intervals, start, s.duration, s.timeline_resolution)
        n = min(len(hybrid_online), len(predicted.timeline))
        online = pd.DataFrame(
            {
                "hybrid": hybrid_online.to_numpy()[:n],
                "simulator": predicted.timeline["online"].to_numpy()[:n],
            },
            index=hybrid_online.index[:n],
        )
        return HybridResult(comparison, lockouts, off_periods, predicted, frame, online)

    @staticmethod
    def _progress(
        progress: bool | Progress, total: float
    ) -> tuple[Callable[[float], None], Callable[[], None]]:
        """(report(done), finish()) for ``run``'s ``progress`` argument; reports that do
        not move forward are dropped, so a callback sees ``done`` only grow."""
        callback: Progress | None = None
        close: Callable[[], None] = _nothing
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=round(total / 3600, 2), desc="simulated hours", unit="h")

            def to_bar(done: float, _total: float) -> None:
                bar.update(round(done / 3600, 2) - bar.n)

            callback, close = to_bar, bar.close
        elif progress is not False:
            callback = progress
        last = -1.0

        def report(done: float) -> None:
            nonlocal last
            if callback is not None and done > last:
                last = done
                callback(done, total)

        return report, close

    def _refreshes(self) -> int:
        """Registration Tokens the platform issued by refresh (each has a parent)."""
        import sqlite3

        path = self.platform.data_dir / "iiot.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT count(*) FROM registration_tokens WHERE parent_id IS NOT NULL"
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.close()
        self.clients.clear()
        if self.hub is not None:
            self.hub.close()
            self.hub = None
        self.platform.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


__all__ = ["HybridResult", "HybridRun", "Progress", "ProxyHub", "online_per_bin"]
