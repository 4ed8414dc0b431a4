"""Hybrid ("digital twin") runs: real SDK clients against the real embedded platform,
their network cut and restored by the simulator's connectivity model, on one simulated
clock: the platform's :class:`~iiotsim.clock.ManualClock`, mirrored by each worker
process holding a share of the devices (:mod:`iiotsim.twin_worker`).

Each device reaches the platform only through its own pair of loopback TCP proxies
(HTTP and MQTT, in its worker). Going offline closes the device's sockets and stops its
listeners, so the device sees a dropped connection and refused reconnects, not silence.
Simulated time moves from one event to the next (connectivity changes, technicians'
approvals, and every deadline a device or the platform waits for); before each move every
worker waits until its devices are idle (blocked on the clock), so time stands still while
a real call is in flight. The servers run in their own thread and loop, never in a
notebook's loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import json
import math
import multiprocessing
import os
import queue
import secrets
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, Listener, wait
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
import pandas as pd

from .clock import ManualClock
from .errors import HybridWorkerFailed, PlatformError
from .platform import Platform
from .sim import Scenario, SimulationResult, draw_fleet, simulate
from .sim.fit import intervals_from_events
from .sim.model import approval_handling_times
from .sim.technicians import next_working_time
from .twin_worker import serve_local_worker, serve_worker


class _Relay(asyncio.Protocol):
    """One end of a proxied connection: what arrives is written to the other end's
    transport as it comes, in the loop's own callback. Asyncio streams (a task per
    direction, each chunk a ``read`` future, a ``write`` and a ``drain``) made the proxies'
    thread a worker's busiest (issue 18: a third of a 250-device worker's CPU)."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.link.transports.add(self.transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:  # before the other end is up (uvloop reads on despite pause_reading in
            # connection_made): kept, and written first once it is
            self.early.append(data)

    def eof_received(self) -> bool:
        return False  # close this end; connection_lost closes the other

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.link.transports.discard(self.transport)
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if exc is None:  # an orderly end: what is on its way still arrives
                peer.transport.close()
            else:
                peer.transport.abort()

    # the other end's transport is full: stop reading here until it drains
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Accepted(_Relay):
    """The device's end: on accepting, connect to the platform's port, reading nothing
    from the device until that connection is up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self.link.hub.loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = _Relay(self.link)
        try:
            await loop.create_connection(lambda: upstream, "127.0.0.1", self.link.target)
        except OSError:
            if self.transport is not None:
                self.transport.abort()
            return
        assert self.transport is not None and upstream.transport is not None
        if self.transport.is_closing():  # the device left (or the link went down) meanwhile
            upstream.transport.abort()
            return
        self.peer, upstream.peer = upstream, self
        if self.early:
            upstream.transport.write(b"".join(self.early))
            self.early.clear()
        self.transport.resume_reading()


class _Link:
    """One device's path to one platform port: a listener that forwards, or nothing."""

    def __init__(self, hub: ProxyHub, target: int) -> None:
        self.hub, self.target = hub, target
        # The device knows this port for the whole run, so it stays reserved while the
        # link is down: a socket bound to it (SO_REUSEPORT, never listening) keeps the
        # kernel from handing it to an outgoing connection as its local port (a 1,000-
        # device run lost a port that way: "address already in use" at the next up),
        # and a connection attempt meanwhile is refused, as with no listener at all.
        self.reservation = socket.socket()
        self.reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.reservation.bind(("127.0.0.1", 0))
        self.port = int(self.reservation.getsockname()[1])
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.Transport] = set()

    async def up(self) -> None:
        if self.server is not None:
            return
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Accepted(self), "127.0.0.1", self.port, reuse_port=True
        )

    async def down(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for transport in list(self.transports):
            transport.abort()  # the device sees its connection drop at once
        self.transports.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ProxyHub:
    """Loopback TCP proxies, one event loop in one background thread."""

    def __init__(self) -> None:
        self.loop = _new_loop()
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
            link.reservation.close()
        # connections still being opened or forwarded end here, not with a closed loop:
        # their sockets are aborted, so most end by themselves (a cancelled one is logged
        # by asyncio's server callback as an error: noise at the end of every large run)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=1.0)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)

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
    load: pd.DataFrame = field(default_factory=pd.DataFrame)
    """requests per simulated second in each timeline bin, from the platform's records
    (``connect_per_s``, ``refresh_per_s``, ``provisioning_per_s``) and the simulator's
    timeline beside each (``… simulator``)"""
    latency: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    """each delivered message's latency (simulated seconds from production to storage)"""
    steps: int = 0
    """times the simulated clock moved"""


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


@dataclass
class _Worker:
    index: int
    devices: list[int]
    conn: Connection | None = None
    process: Any = None  # a multiprocessing Process, or a Dask future
    pid: int | None = None  # where it runs (a Dask worker's process, or its own)
    reply: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        first, last = self.devices[0], self.devices[-1]
        return f"worker {self.index} (devices {first}-{last})"

    def gone(self) -> str | None:
        """Why the worker's process is gone, or None while it runs."""
        process = self.process
        if process is None:
            return None
        if hasattr(process, "exitcode"):
            return None if process.exitcode is None else f"exit code {process.exitcode}"
        status = getattr(process, "status", "pending")  # a Dask future
        return None if status == "pending" else f"Dask task {status}"


class HybridRun:
    """``HybridRun(scenario, devices=50).run()``: the scenario's connectivity applied to
    real devices; what the platform and devices did, beside the simulator's prediction for
    the same scenario.

    The devices are spread over ``processes`` worker processes
    (:mod:`iiotsim.twin_worker`); paho's ``select()`` loop and the GIL make one process
    hold a few hundred at most. The platform runs here, in its own thread, on the run's
    :class:`~iiotsim.clock.ManualClock`; each worker mirrors that clock and moves it only
    when told to. Workers talk to this coordinator over TCP, so ``dask=`` a
    ``distributed.Client`` places them on Dask workers instead (they must reach this
    machine's coordinator and platform ports: ``host``).

    Time moves from one event to the next: a connectivity change, a technician's approval,
    a deadline the platform waits for, or the earliest deadline any worker reports (after
    all its devices are idle, see :mod:`iiotsim.twin_worker`). Every wait for a worker is
    bounded (``worker_timeout``, real seconds); a worker that dies or stops answering ends
    the run with :class:`HybridWorkerFailed` naming it.

    Technicians: the fleet's first start is approved at once (the simulator's fresh start);
    every later operation (a lockout) is queued for ``scenario.provisioning.technicians``
    technicians, first come first served, within working hours, each approval taking a
    draw of ``approval_time``, and approved through the admin API at that simulated time.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        devices: int | None = None,
        processes: int = 1,
        data_dir: Path | None = None,
        dask: Any = None,
        host: str = "127.0.0.1",
        worker_timeout: float = 300.0,
        message_tick: float = 60.0,
        time_quantum: float = 0.0,
    ) -> None:
        n = devices or scenario.fleet_size
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        if processes > n:
            raise ValueError(f"{processes} processes for {n} devices: at most one per device")
        # real devices start now, each online with a new token: the prediction must too
        self.scenario = scenario.replace(fleet_size=n, start="fresh")
        self.processes = processes
        self.clock = ManualClock()
        self._tmp = (
            tempfile.TemporaryDirectory(prefix="iiotsim-hybrid-") if data_dir is None else None
        )
        self.data_dir = Path(self._tmp.name) if self._tmp else Path(data_dir or ".")
        self.platform = Platform(self.data_dir / "platform", clock=self.clock, host=host)
        self.host = host
        self.dask = dask
        self.worker_timeout = worker_timeout
        self.message_tick = message_tick
        if time_quantum < 0:
            raise ValueError(f"time_quantum must be >= 0, got {time_quantum}")
        self.time_quantum = time_quantum
        """0: exact. Else connectivity changes, technicians' approvals, message production
        and every deadline the devices or the platform wait for (a retry, a refresh, a
        poll, a token's end) happen on multiples of it from the start (each at most this
        late), so events of many devices share one clock step: at most one step per
        quantum (``benchmarks/hybrid.py`` prints what each step was for)."""
        """Messages due within this many simulated seconds are produced together (see
        :func:`iiotsim.twin_worker._produce`)."""
        self.workers: list[_Worker] = []
        self._listener: Listener | None = None
        self.operations = 0
        """Provisioning operations the technicians approved during the run."""
        self.approval_delays: list[float] = []
        """Seconds from each approved operation's creation to its approval."""
        self.steps = 0
        """Times the clock moved."""
        self.step_causes: collections.Counter[str] = collections.Counter()
        """What each clock step was for: connectivity, devices (a deadline a device or the
        message producer waits for), platform, technicians, end."""
        self.wall: collections.defaultdict[str, float] = collections.defaultdict(float)
        """Real seconds spent by phase: ``start`` (workers launched, devices connected),
        ``steps`` (the clock's steps), of which ``waiting`` (for the workers' answers; of
        that, the slowest worker's ``links`` (links cut or opened, clock moved) and
        ``settle`` (its devices idle again)), and ``result`` (the platform's records read,
        the simulator run, compared)."""
        self.settle_timeouts = 0
        """Worker answers given with devices still busy after the worker's settle timeout
        (a device stuck on the network; the step went on without it)."""

    def __enter__(self) -> HybridRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def device_id(self, index: int) -> str:
        return f"hybrid-{index:04d}"

    # workers ------------------------------------------------------------------------

    def _launch(self) -> None:
        n = self.scenario.fleet_size
        authkey = secrets.token_bytes(32)
        self._listener = Listener((self.host, 0), authkey=authkey)
        address = self._listener.address
        shares = np.array_split(np.arange(n), self.processes)
        self.workers = [_Worker(k, [int(i) for i in share]) for k, share in enumerate(shares)]
        if self.dask is not None:
            for w in self.workers:
                w.process = self.dask.submit(
                    serve_worker,
                    address,
                    authkey,
                    w.index,
                    pure=False,
                    key=f"hybrid-{uuid.uuid4()}",
                )
        else:
            context = multiprocessing.get_context("spawn")
            for w in self.workers:
                w.process = context.Process(
                    target=serve_local_worker,
                    args=(address, authkey, w.index, os.getpid()),
                    name=f"iiotsim-hybrid-worker-{w.index}",
                    daemon=True,
                )
                w.process.start()
        self._accept()

    def _accept(self) -> None:
        """Take each worker's connection, waiting at most ``worker_timeout`` in all and
        noticing a worker that died before it connected."""
        assert self._listener is not None
        accepted: queue.Queue[Connection | BaseException] = queue.Queue()
        listener = self._listener

        def accept() -> None:
            for _ in self.workers:
                try:
                    accepted.put(listener.accept())
                except BaseException as exc:  # the listener closed, a bad key
                    accepted.put(exc)
                    return

        threading.Thread(target=accept, name="iiotsim-hybrid-accept", daemon=True).start()
        deadline = time.monotonic() + self.worker_timeout
        waiting = len(self.workers)
        while waiting:
            try:
                conn = accepted.get(timeout=0.2)
            except queue.Empty:
                self._check_alive(deadline, "to connect")
                continue
            if isinstance(conn, BaseException):
                raise HybridWorkerFailed(f"a worker could not connect: {conn!r}") from conn
            hello = conn.recv()
            worker = self.workers[hello["worker"]]
            worker.conn, worker.pid = conn, hello["pid"]
            waiting -= 1

    def _check_alive(self, deadline: float, doing: str) -> None:
        for w in self.workers:
            why = w.gone()
            if why is not None:
                raise HybridWorkerFailed(f"{w.describe()} ended ({why}) before it {doing[3:]}")
        if time.monotonic() > deadline:
            late = [w.describe() for w in self.workers if w.conn is None]
            raise HybridWorkerFailed(
                f"no answer within {self.worker_timeout:.0f} s from {', '.join(late) or 'workers'}"
            )

    def _send_all(self, messages: dict[int, dict[str, Any]]) -> None:
        for w in self.workers:
            assert w.conn is not None
            try:
                w.conn.send(messages[w.index])
            except (OSError, EOFError) as exc:
                raise HybridWorkerFailed(f"{w.describe()} is gone: {exc!r}") from exc

    def _gather(self, expect: str, timeout: float | None = None) -> None:
        """Each worker's next answer (of kind ``expect``), within ``timeout`` real seconds
        (``worker_timeout`` by default); a worker that ends, fails or stays silent raises
        :class:`HybridWorkerFailed` naming it."""
        pending = {w.conn: w for w in self.workers if w.conn is not None}
        deadline = time.monotonic() + (self.worker_timeout if timeout is None else timeout)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(w.describe() for w in pending.values())
                raise HybridWorkerFailed(
                    f"no answer within {self.worker_timeout:.0f} s from {names}"
                )
            for ready in wait(list(pending), timeout=min(left, 1.0)):
                conn = cast(Connection, ready)
                w = pending.pop(conn)
                try:
                    reply: dict[str, Any] = conn.recv()
                except (EOFError, OSError) as exc:
                    why = w.gone() or "connection closed"
                    raise HybridWorkerFailed(f"{w.describe()} died ({why})") from exc
                if reply.get("kind") == "failed":
                    raise HybridWorkerFailed(f"{w.describe()} failed: {reply['error']}")
                if reply.get("kind") != expect:
                    raise HybridWorkerFailed(f"{w.describe()} answered {reply.get('kind')!r}")
                w.reply = reply
            for w in pending.values():
                ended = w.gone()
                if ended is not None:
                    raise HybridWorkerFailed(f"{w.describe()} died ({ended})")

    # set-up -------------------------------------------------------------------------

    def _start(self) -> None:
        s = self.scenario
        self.platform.start()
        token = self.platform.admin.create_provisioning_token(
            "hybrid",
            max_registration_token_lifetime=s.token.lifetime,
            allow_infinite_lifetime=s.token.lifetime is None,
        )
        self._launch()
        common = {
            "kind": "init",
            "start": self.clock.now().timestamp(),
            "admin_url": self.platform.http_url,
            "admin_key": self.platform.admin_key,
            "provisioning_token": token.provisioning_token,
            "http_port": self.platform.runner.port,
            "mqtt_port": self.platform.mqtt_port,
            "backoff": {"base": s.backoff.base, "cap": s.backoff.cap},
            "messages_per_hour": s.messages.rate_per_hour,
            "message_tick": self.time_quantum or self.message_tick,
            "quantum": self.time_quantum,
            "seed": s.seed,
        }
        self._send_all(
            {
                w.index: common | {"devices": [(i, self.device_id(i)) for i in w.devices]}
                for w in self.workers
            }
        )
        self._gather("ready")

    # the run ------------------------------------------------------------------------

    def run(self, *, progress: bool | Progress = False) -> HybridResult:
        """Start the devices, impose the scenario's connectivity, compare.

        ``progress=True`` shows a bar (tqdm) of simulated hours; a callable is called as
        ``progress(done, total)`` in simulated seconds, ``done`` never decreasing, ending
        at ``total``. 50 devices over one simulated day take about 30 s on the 2-core
        machine (notebook 06); ``benchmarks/hybrid.py`` measures larger fleets.
        """
        s = self.scenario
        report, finish = self._progress(progress, s.duration)
        report(0.0)
        began = time.monotonic()
        self._start()
        self.wall["start"] += time.monotonic() - began
        began = time.monotonic()
        start = self.clock.now()
        t0 = start.timestamp()
        fleet = draw_fleet(s)  # the simulator's own connectivity draw
        changes: list[tuple[float, int, bool]] = []
        for d in range(s.fleet_size):
            times, online = fleet.times[d], fleet.online[d]
            prev = True
            for k in range(online.shape[0]):
                if times[k + 1] <= times[k] or bool(online[k]) == prev:
                    continue
                changes.append((float(times[k]), d, bool(online[k])))
                prev = bool(online[k])
        q = self.time_quantum
        if q:  # on the grid: a change happens at the first multiple of q at or after it
            changes = [(math.ceil(t / q - 1e-9) * q, d, up) for t, d, up in changes]
        changes.sort()
        owner = {d: w.index for w in self.workers for d in w.devices}
        technicians = _Technicians(s, start=t0, quantum=q)
        log: list[tuple[float, int, str]] = []
        off_periods = 0
        c = 0
        end = t0 + s.duration
        while True:
            now = self.clock.now().timestamp()
            candidates = [(end, "end"), (technicians.next_approval(), "technicians")]
            if c < len(changes):
                candidates.append((t0 + changes[c][0], "connectivity"))
            candidates += [
                (w.reply["next"], "devices") for w in self.workers if w.reply.get("next")
            ]
            platform_next = self.clock.next_deadline()
            if platform_next is not None:
                candidates.append((platform_next.timestamp(), "platform"))
            target, cause = min((x, why) for x, why in candidates if x is not None)
            if q and cause in ("devices", "platform"):
                # on the grid too: a device's retry, refresh or poll, and the platform's
                # timers, each at most q late, share steps with the connectivity changes
                # (300 devices x 1 d: 1,699 of 2,823 steps were device deadlines off it)
                target = min(end, t0 + math.ceil((target - t0) / q - 1e-9) * q)
            if target <= now:
                target, cause = min(end, now + 1.0), "no progress"
            self.step_causes[cause] += 1
            self.clock.set(datetime.fromtimestamp(target, UTC))
            self.steps += 1
            messages: dict[int, dict[str, Any]] = {
                w.index: {"kind": "step", "to": target, "links": [], "approved": []}
                for w in self.workers
            }
            for operation_id, device, created in technicians.due(target):
                with contextlib.suppress(PlatformError):  # expired meanwhile: a new one comes
                    self.platform.admin.approve_operation(operation_id)
                    self.operations += 1
                    self.approval_delays.append(target - created)
                messages[owner[device]]["approved"].append(operation_id)
            while c < len(changes) and t0 + changes[c][0] <= target:
                t, d, up = changes[c]
                messages[owner[d]]["links"].append((d, up))
                off_periods += int(up)
                log.append((t, d, "reconnect" if up else "disconnect"))
                c += 1
            waiting = time.monotonic()
            self._send_all(messages)
            self._gather("idle")
            self.wall["waiting"] += time.monotonic() - waiting
            for phase, took in zip(("links", "settle"), self._slowest_worker(), strict=True):
                self.wall[phase] += took
            self.settle_timeouts += sum(1 for w in self.workers if w.reply.get("busy"))
            for w in self.workers:
                for operation_id, device, shown_at in w.reply["operations"]:
                    technicians.arrive(operation_id, device, shown_at)
            report(min(target - t0, s.duration))
            if target >= end:
                break
        finish()
        self.wall["steps"] += time.monotonic() - began
        began = time.monotonic()
        self._send_all({w.index: {"kind": "finish"} for w in self.workers})
        self._gather("finished")
        produced: dict[str, int] = {}
        pending: dict[str, int] = {}
        for w in self.workers:
            produced |= w.reply["produced"]
            pending |= w.reply["pending"]
        result = self._result(start, log, off_periods, produced, pending)
        self.wall["result"] += time.monotonic() - began
        return result

    def _slowest_worker(self) -> tuple[float, float]:
        """Real seconds the slowest worker of the last step took to move its clock and
        links, and then to settle."""
        took = [w.reply.get("took", (0.0, 0.0)) for w in self.workers]
        return max(t[0] for t in took), max(t[1] for t in took)

    def _result(
        self,
        start: datetime,
        log: list[tuple[float, int, str]],
        off_periods: int,
        produced_by_device: dict[str, int],
        pending_by_device: dict[str, int],
    ) -> HybridResult:
        s = self.scenario
        predicted = simulate(s)
        records = _Records(self.platform.data_dir / "iiot.db", start.timestamp(), s.duration)
        summary = predicted.summary
        days = s.duration / 86400
        lockouts = self.operations
        sim_off = int(predicted.devices["connects"].sum())
        delivered, latency = records.messages()
        produced = sum(produced_by_device.values())
        # Lost: neither stored nor still in its device's outbox, counted per device. A
        # message stored whose PUBACK had not reached its device at the end is in both
        # (a 1,000-device run counted -1 lost): that device's count stops at 0.
        stored_by_device = records.messages_per_device()
        lost = sum(
            max(0, n - stored_by_device.get(d, 0) - pending_by_device.get(d, 0))
            for d, n in produced_by_device.items()
        )
        rows = [
            ("off periods", off_periods, sim_off, 0, "the simulator's own connectivity draw"),
            ("lockouts", lockouts, int(summary["lockouts"]), None, "see lockouts per off period"),
            (
                "lockouts per off period",
                lockouts / max(1, off_periods),
                int(summary["lockouts"]) / max(1, sim_off),
                0.05,
                "same off periods; the platform decides a token's end where the model does",
            ),
            (
                "token refreshes",
                records.refreshes(),
                int(predicted.devices["refreshes"].sum()),
                0.1,
                "relative: refresh points agree, a lockout moves a device's later ones",
            ),
            (
                "approval delay mean (h)",
                float(np.mean(self.approval_delays)) / 3600 if self.approval_delays else 0.0,
                float(summary["lockout_recovery_mean_h"]),
                0.25,
                "relative: each lockout's approval the simulator's own draw; the queues"
                " differ (first come first served here, a damped fixed point there)",
            ),
            (
                "messages produced",
                produced,
                int(summary["messages_produced"]),
                _poisson_tolerance(summary["messages_produced"]),
                "relative, 4 sigma of a Poisson count: the workers draw their own times",
            ),
            (
                "messages delivered fraction",
                delivered / max(1, produced),
                summary["messages_delivered"] / max(1, summary["messages_produced"]),
                0.02,
                "absolute: what is still in outboxes at the end differs by the draws",
            ),
            (
                "messages lost",
                lost,
                int(summary["messages_lost"]),
                0,
                "nothing stored in an outbox is lost below its capacity",
            ),
            (
                "message latency p50 (s)",
                float(np.percentile(latency, 50)) if len(latency) else 0.0,
                float(summary["message_latency_p50_s"]),
                60.0,
                "absolute seconds: online devices send at once in both",
            ),
            (
                "connects per day",
                records.connects() / days,
                float(summary["mean_connect_per_s"]) * 86400,
                0.2,
                "relative: one per restored network and per refresh; the simulator counts"
                " both when a refresh comes at a reconnect, which is one connect on the wire",
            ),
            (
                "provisioning operations",
                records.operations(),
                int(predicted.devices["provisioning_operations"].sum()),
                0.5,
                "relative: one per lockout, one more per operation expiring unapproved",
            ),
        ]
        comparison = pd.DataFrame(
            rows, columns=["metric", "hybrid", "simulator", "tolerance", "why"]
        ).set_index("metric")
        comparison["within"] = [
            _within(h, p, tol, relative=name not in _ABSOLUTE)
            for name, h, p, tol in zip(
                comparison.index,
                comparison["hybrid"],
                comparison["simulator"],
                comparison["tolerance"],
                strict=True,
            )
        ]
        frame = pd.DataFrame(log, columns=["time", "device", "kind"])
        intervals = intervals_from_events(
            records.connection_events({self.device_id(i) for i in range(s.fleet_size)}),
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
        load = records.load(s.timeline_resolution)
        for column in ("connect_per_s", "refresh_per_s", "provisioning_per_s"):
            load[f"{column} simulator"] = predicted.timeline[column].to_numpy()[: len(load)]
        return HybridResult(
            comparison,
            lockouts,
            off_periods,
            predicted,
            frame,
            online,
            load=load,
            latency=pd.Series(latency, name="latency_s", dtype=float),
            steps=self.steps,
        )

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

    def close(self) -> None:
        for w in self.workers:
            if w.conn is not None:
                with contextlib.suppress(Exception):
                    w.conn.send({"kind": "finish"})
                    if w.conn.poll(10):
                        w.conn.recv()
                with contextlib.suppress(Exception):
                    w.conn.close()
            process = w.process
            if hasattr(process, "join"):
                if process.pid is None:  # never started
                    continue
                process.join(10)
                if process.is_alive():
                    process.kill()
                    process.join(10)
            elif process is not None:
                with contextlib.suppress(Exception):
                    process.cancel()
        self.workers = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.platform.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


_ABSOLUTE = {
    "lockouts per off period",
    "messages delivered fraction",
    "message latency p50 (s)",
    "off periods",
    "messages lost",
}


def _within(
    hybrid: float, predicted: float, tolerance: float | None, *, relative: bool
) -> bool | None:
    if tolerance is None or np.isnan(tolerance):
        return None
    allowed = tolerance * abs(predicted) if relative else tolerance
    return bool(abs(hybrid - predicted) <= allowed + 1e-9)


def _poisson_tolerance(expected: float) -> float:
    """4 standard deviations of a Poisson count around ``expected``, relative."""
    return float(4 / np.sqrt(expected)) if expected > 0 else 0.0


class _Technicians:
    """The simulator's technicians (``scenario.provisioning``) for real devices: first
    come first served by ``technicians`` people, starting within working hours, each
    approval taking the time the simulator drew for the same device's same lockout
    (:func:`~iiotsim.sim.model.approval_handling_times`). A request is a device's: an
    operation that expires while it waits is replaced by the device's next one, and the
    technician approves whichever is open when done, as the simulator's queue counts one
    wait per lockout however many operations it spans."""

    def __init__(self, scenario: Scenario, *, start: float, quantum: float = 0.0) -> None:
        self.quantum = quantum
        self.provisioning = scenario.provisioning
        self.start = start
        self.handling = approval_handling_times(scenario)  # the simulator's own draws
        self.lockouts: collections.Counter[int] = collections.Counter()  # per device so far
        self.free = [start] * self.provisioning.technicians
        heapq.heapify(self.free)
        self.queue: list[tuple[float, int]] = []  # (approved at, device)
        self.requests: dict[int, tuple[str, float]] = {}  # device -> (open operation, since)

    def arrive(self, operation_id: str, device: int, created: float) -> None:
        if device in self.requests:  # the device's next operation of the same request
            self.requests[device] = (operation_id, self.requests[device][1])
            return
        self.requests[device] = (operation_id, created)
        free = heapq.heappop(self.free)
        hours = self.provisioning.working_hours
        begin = self.start + next_working_time(max(created, free) - self.start, hours)
        done = begin + self.handling(device, self.lockouts[device])
        self.lockouts[device] += 1
        heapq.heappush(self.free, done)
        if self.quantum:  # the approval lands on the run's grid
            done = self.start + math.ceil((done - self.start) / self.quantum) * self.quantum
        heapq.heappush(self.queue, (done, device))

    def next_approval(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def due(self, now: float) -> list[tuple[str, int, float]]:
        """(operation to approve, device, when its request began) for each approval due."""
        out = []
        while self.queue and self.queue[0][0] <= now:
            _, device = heapq.heappop(self.queue)
            operation_id, since = self.requests.pop(device)
            out.append((operation_id, device, since))
        return out


class _Records:
    """What the platform's own database says happened during the run (read-only)."""

    def __init__(self, path: Path, start: float, duration: float) -> None:
        self.path, self.start, self.end = path, start, start + duration

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
            return db.execute(sql, args).fetchall()

    def _count(self, table: str, column: str, where: str = "1") -> int:
        """Rows of ``table`` whose ``column`` time is inside the run: after the set-up (the
        devices' first start, at the start instant) and before the end instant (what the
        devices do as the clock reaches the end is the next period's, as the simulator's
        horizon excludes it)."""
        sql = f"SELECT count(*) FROM {table} WHERE {where} AND {column} > ? AND {column} < ?"
        return int(self._query(sql, self.start, self.end)[0][0])

    def refreshes(self) -> int:
        """Registration Tokens replaced by a refresh: distinct parents, as the simulator
        counts refresh events. A device that retries a refresh whose answer it did not get
        (a real-time HTTP timeout while a 1,000-device step keeps the platform busy) gets a
        second child of the same parent: the same refresh, not another one (a 1,000-device
        run counted 1,521 children for 1,000 refreshes)."""
        sql = (
            "SELECT count(DISTINCT parent_id) FROM registration_tokens"
            " WHERE parent_id IS NOT NULL AND issued_at > ? AND issued_at < ?"
        )
        return int(self._query(sql, self.start, self.end)[0][0])

    def connects(self) -> int:
        return self._count("connection_events", "at", "connected")

    def connection_events(self, device_ids: set[str]) -> pd.DataFrame:
        """Every connect and disconnect of these devices (``device_id``, ``at``,
        ``connected``), what :func:`iiotsim.sim.connection_intervals` reads over HTTP: in
        one query instead of a request per device (1,000 devices: 8 of a week's 10 s of
        result)."""
        rows = self._query("SELECT device_id, at, connected FROM connection_events ORDER BY seq")
        frame = pd.DataFrame(rows, columns=["device_id", "at", "connected"])
        frame = frame[frame["device_id"].isin(device_ids)]
        return frame.assign(at=pd.to_datetime(frame["at"], unit="s", utc=True))

    def operations(self) -> int:
        return self._count("provisioning_operations", "created_at")

    def messages(self) -> tuple[int, np.ndarray]:
        """Messages stored from the producer's stream, and each one's latency (seconds
        from its production to its storage, both simulated)."""
        rows = self._query("SELECT payload, received_at FROM messages WHERE stream = 'hybrid'")
        latency = np.array(
            [at - json.loads(payload)["produced"] for payload, at in rows], dtype=float
        )
        return len(rows), latency

    def messages_per_device(self) -> dict[str, int]:
        """Messages stored from the producer's stream, per device."""
        rows = self._query(
            "SELECT device_id, count(*) FROM messages WHERE stream = 'hybrid' GROUP BY device_id"
        )
        return {str(d): int(n) for d, n in rows}

    def load(self, resolution: float) -> pd.DataFrame:
        """Requests per simulated second in each ``resolution`` bin, from the platform's
        records: connects, refreshes, provisioning operations opened."""
        bins = int(np.ceil((self.end - self.start) / resolution))
        edges = self.start + np.arange(bins + 1) * resolution
        series = {
            "connect_per_s": [
                r[0] for r in self._query("SELECT at FROM connection_events WHERE connected")
            ],
            "refresh_per_s": [
                r[0]
                for r in self._query(
                    "SELECT issued_at FROM registration_tokens WHERE parent_id IS NOT NULL"
                )
            ],
            "provisioning_per_s": [
                r[0] for r in self._query("SELECT created_at FROM provisioning_operations")
            ],
        }
        index = pd.Index(np.arange(bins) * resolution / 3600, name="hours")
        return pd.DataFrame(
            {
                name: np.histogram(times, bins=edges)[0] / resolution
                for name, times in series.items()
            },
            index=index,
        )


__all__ = [
    "HybridResult",
    "HybridRun",
    "HybridWorkerFailed",
    "Progress",
    "ProxyHub",
    "online_per_bin",
]
