"""A hybrid run's worker: one process holding a share of the real devices, each behind
its own loopback proxies, on a local :class:`~iiotsim.clock.ManualClock` that only the
coordinator (:class:`iiotsim.twin.HybridRun`) moves.

The worker talks to the coordinator over one TCP connection
(:mod:`multiprocessing.connection`, authenticated by a per-run key), so it may run in a
local process, in a Dask worker, or on another machine that can reach the coordinator and
the platform. Each message is a dict with a ``kind``:

- ``init`` (coordinator → worker): the devices (index, Device ID), the platform's HTTP and
  MQTT ports and admin key, the Provisioning Token, the start time, the back-off and the
  message rate. The worker starts its devices (approving their first operations itself:
  a technician standing by, as the simulator's fresh start) and answers ``ready``.
- ``step``: open or cut the listed links, move the local clock to ``to`` (epoch
  seconds), wait until every device is idle, and answer ``idle`` with the earliest
  deadline any online device (or the message producer) waits for and the provisioning
  operations its devices opened since the last answer (the coordinator queues them for
  its technicians). Devices offline or waiting for a technician are left out of the
  deadline: their retries and polls can only fail, and they wake when time passes them.
- ``finish``: answer ``finished`` with the messages each device produced, then close.

*Idle* means every device thread (and the producer) is blocked in the clock's ``wait``
with nothing to wake it (``ManualClock.idle_threads``), and stays so for 1 ms: a
thread with a real call in flight (HTTP, a CONNECT, a PUBLISH awaiting its PUBACK) is not
in ``wait``, so time cannot move under it; and since every deadline a blocked thread
waits for is in the answer, the coordinator never moves time past one.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import httpx
from iiot_device import Backoff, DeviceClient, ProvisioningOperation, Status
from iiot_device.clock import WakeEvent

from .clock import ManualClock

log = logging.getLogger(__name__)

SETTLE_QUIET = 0.001
"""Real seconds every thread must stay idle before the worker answers: what no thread
shows yet (a packet on its way to a socket that will wake a device) has that long to
show."""
SETTLE_POLL = 0.001
"""Real seconds between checks that a starting device is connected."""
HTTP_TIMEOUT = 60.0
"""Real seconds a device's HTTP call may take. Not the SDK's 10 s: a step where 1,000
devices refresh at once keeps the platform busy longer, and a device that gives up
retries a refresh the platform already made (a second token for one refresh)."""
STARTUP_WAVE = 25
"""Devices of one worker started together (:func:`_start_devices`)."""
SETTLE_TIMEOUT = 60.0
"""Real seconds a step may wait for its devices; past it the worker answers anyway and
says which threads were still busy (a device stuck on the network must not hang a run)."""


def epoch(when: datetime) -> float:
    return when.timestamp()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass
class _Device:
    index: int
    device_id: str
    http: Any = None
    mqtt: Any = None
    client: DeviceClient | None = None
    produced: int = 0
    thread: str = ""


@dataclass
class WorkerState:
    """What one worker holds; built from the coordinator's ``init``."""

    index: int
    clock: ManualClock
    devices: list[_Device]
    data_dir: Path
    offline: set[str] = field(default_factory=set)
    awaiting: dict[str, str] = field(default_factory=dict)  # operation id -> thread name
    shown: list[tuple[str, int, float]] = field(default_factory=list)
    setting_up: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    settle_timeouts: int = 0


def serve_worker(address: tuple[str, int], authkey: bytes, index: int) -> None:
    """The worker's main: connect to the coordinator, serve its requests, then stop.
    Runs in a spawned process or a Dask task; returns when the run ends."""
    logging.getLogger("iiot_device").setLevel(logging.ERROR)  # offline devices retry by design
    conn = Client(address, authkey=authkey)
    conn.send({"kind": "hello", "worker": index, "pid": os.getpid()})
    try:
        _serve(_Coordinator(conn), index)
    except _CoordinatorGone:
        pass  # nothing to tell it
    except Exception as exc:  # tell the coordinator why, rather than only dying (an
        # OSError of the worker's own, e.g. a socket, included)
        log.exception("hybrid worker %d failed", index)
        with contextlib.suppress(OSError):
            conn.send({"kind": "failed", "error": repr(exc)})
    finally:
        conn.close()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def serve_local_worker(
    address: tuple[str, int], authkey: bytes, index: int, coordinator_pid: int
) -> None:
    """:func:`serve_worker` in a process the coordinator spawned on this machine, which
    ends with the coordinator: a worker whose coordinator was killed while its devices
    were starting would wait forever (their provisioning retries on a clock nobody moves
    any more). On Linux the kernel sends it SIGTERM when the coordinator's process (the
    thread that spawned it) ends; elsewhere it relies on the connection's end, as a Dask
    worker does."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != coordinator_pid:  # it ended before the request took hold
            return
    serve_worker(address, authkey, index)


class _CoordinatorGone(Exception):
    """The coordinator's connection ended."""


class _Coordinator:
    """The connection to the coordinator; its end is :class:`_CoordinatorGone`, never an
    ``OSError`` that could be mistaken for the worker's own."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def recv(self) -> Any:
        try:
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            raise _CoordinatorGone from exc

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.conn.send(message)
        except (EOFError, OSError) as exc:
            raise _CoordinatorGone from exc


def _serve(conn: _Coordinator, index: int) -> None:
    from .twin import ProxyHub  # the coordinator's module: imported in the worker only

    init = conn.recv()
    clock = ManualClock(from_epoch(init["start"]))
    tmp = tempfile.TemporaryDirectory(prefix=f"iiotsim-hybrid-worker-{index}-")
    state = WorkerState(
        index=index,
        clock=clock,
        devices=[_Device(i, device_id) for i, device_id in init["devices"]],
        data_dir=Path(tmp.name),
    )
    hub = ProxyHub()
    admin = httpx.Client(
        base_url=init["admin_url"],
        headers={"Authorization": f"Bearer {init['admin_key']}"},
        timeout=60,
    )
    stop = WakeEvent()  # listenable: the producer waits on it without polling
    producer: threading.Thread | None = None
    try:
        _start_devices(state, init, hub, admin)
        state.setting_up = False
        if init["messages_per_hour"] > 0:
            producer = threading.Thread(
                target=_produce,
                args=(state, init["messages_per_hour"], init["message_tick"], init["seed"], stop),
                kwargs={"quantum": init.get("quantum", 0.0)},
                name="iiot-producer",
                daemon=True,
            )
            producer.start()
        busy = _settle(state, producer)
        conn.send({"kind": "ready", **_report(state, busy)})
        while True:
            request = conn.recv()
            if request["kind"] == "finish":
                conn.send(
                    {"kind": "finished", "produced": _produced(state), "pending": _pending(state)}
                )
                return
            began = time.monotonic()
            _step(state, request, hub)
            stepped = time.monotonic()
            busy = _settle(state, producer)
            settled = time.monotonic()
            conn.send(
                {
                    "kind": "idle",
                    **_report(state, busy),
                    "took": (stepped - began, settled - stepped),
                }
            )
    finally:
        stop.set()
        for device in state.devices:
            if device.client is not None:
                with contextlib.suppress(Exception):
                    device.client.close()
        hub.close()
        admin.close()
        with contextlib.suppress(Exception):
            tmp.cleanup()


def _start_devices(state: WorkerState, init: dict[str, Any], hub: Any, admin: httpx.Client) -> None:
    """Start the devices a wave at a time, in parallel (a start provisions the device: its
    HTTP round trips and database file), each wave's first MQTT connections up before the
    next wave starts (the fleet's start takes no simulated time). One device at a time,
    1,000 devices over 4 workers took about 150 s to start, nearly all of it waiting on
    each device's round trips; all at once, 300 devices kept an embedded broker on a
    loaded machine past the SDK's 10 s CONNACK wait, each retry storm coming back a
    simulated second later (issue 18)."""

    def shown(device: _Device) -> Any:
        def on_operation(op: ProvisioningOperation) -> None:
            if state.setting_up:  # the fleet's first start: approved at once
                answer = admin.post(f"/api/v1/provisioning-operations/{op.id}/approve", json={})
                answer.raise_for_status()
                return
            with state.lock:  # a lockout: the coordinator's technicians decide when
                state.shown.append((op.id, device.index, epoch(state.clock.now())))
                state.awaiting[op.id] = threading.current_thread().name

        return on_operation

    def start(device: _Device) -> None:
        _start_device(state, init, hub, device, shown(device))
        _wait_connected(state, device)

    with ThreadPoolExecutor(STARTUP_WAVE, thread_name_prefix="iiot-start") as pool:
        for wave in range(0, len(state.devices), STARTUP_WAVE):
            list(pool.map(start, state.devices[wave : wave + STARTUP_WAVE]))  # raises


def _start_device(
    state: WorkerState, init: dict[str, Any], hub: Any, device: _Device, on_operation: Any
) -> None:
    backoff = init["backoff"]
    device.http, device.mqtt = hub.link(init["http_port"]), hub.link(init["mqtt_port"])
    device.thread = f"iiot-device-{device.device_id}"
    device.client = DeviceClient.start(
        init["provisioning_token"],
        state.data_dir / f"{device.device_id}.db",
        server_url=f"http://127.0.0.1:{device.http.port}",
        mqtt_address=("127.0.0.1", device.mqtt.port),
        device_id=device.device_id,
        clock=state.clock,
        on_provisioning_operation=on_operation,
        http_timeout=HTTP_TIMEOUT,
        backoff=Backoff(base=backoff["base"], cap=backoff["cap"], rng=random.Random(device.index)),
    )


def _wait_connected(state: WorkerState, device: _Device) -> None:
    """Wait (real time, bounded) until the device's first MQTT connection is up."""
    assert device.client is not None
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while device.client.status is not Status.CONNECTED:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{device.device_id} not connected within {SETTLE_TIMEOUT:.0f} s of its start"
                f" (status {device.client.status}, last error {device.client.last_error!r})"
            )
        time.sleep(SETTLE_POLL)


def _produce(
    state: WorkerState,
    per_hour: float,
    tick: float,
    seed: int,
    stop: threading.Event,
    *,
    quantum: float = 0.0,
) -> None:
    """Each device's messages at Poisson times (its own stream of draws), stored in the
    device's outbox as the simulator's devices produce them, online or not. Messages due
    within ``tick`` seconds of the first are produced together at its time: the clock then
    stops for messages at most once a ``tick`` (for 1,000 devices at 1 message an hour,
    once a minute instead of every 3.6 s), each produced at most ``tick`` early. With a
    ``quantum`` (the run's grid), the producer wakes only on the grid, producing what is
    due by then, each at most ``quantum`` late."""
    rng = random.Random(seed * 1_000_003 + state.index)
    rate = per_hour / 3600.0
    now = origin = epoch(state.clock.now())
    due = [(now + rng.expovariate(rate), k) for k in range(len(state.devices))]
    heapq.heapify(due)
    while not stop.is_set():
        wake = due[0][0]
        if quantum:
            wake = origin + math.ceil((wake - origin) / quantum - 1e-9) * quantum
        wait = wake - epoch(state.clock.now())
        if wait > 1e-3:  # a clock in whole microseconds: a smaller wait would return at once
            if state.clock.wait(wait, stop):
                return
            continue
        now = epoch(state.clock.now())
        while due[0][0] < (now + 1e-3 if quantum else now + tick):
            at, k = due[0]
            heapq.heapreplace(due, (at + rng.expovariate(rate), k))
            device = state.devices[k]
            assert device.client is not None
            device.client.send_message(json.dumps({"produced": now}), stream="hybrid")
            device.produced += 1


def _step(state: WorkerState, request: dict[str, Any], hub: Any) -> None:
    """Links first, then time. The devices are idle (the previous step settled them), so a
    link changes under no request in flight; then the clock moves, and what the devices
    do at the new instant they do with the links of that instant, and settle once.
    (Time first and links after a second settle cost 40-70 % of a 1,000-device step, and
    a device whose retry fell due at the instant its link came back failed it.)"""
    changes: list[tuple[_Device, bool]] = []
    if request.get("links"):
        by_index = {d.index: d for d in state.devices}
        changes = [(by_index[index], up) for index, up in request["links"]]
        hub.call(_change_links(changes))
        for device, up in changes:
            (state.offline.discard if up else state.offline.add)(device.thread)
    state.clock.set(max(state.clock.now(), from_epoch(request["to"])))
    with state.lock:
        for operation_id in request.get("approved", ()):
            state.awaiting.pop(operation_id, None)
    # a device learns its network is back, as from its modem, once the clock is at the
    # instant it came back: it retries then, not at its back-off's next delay
    for device, up in changes:
        if up and device.client is not None:
            device.client.network_available()


async def _change_links(changes: list[tuple[_Device, bool]]) -> None:
    """Every link change of a step in one call to the proxies' loop."""
    for device, up in changes:
        if up:
            await device.http.up()
            await device.mqtt.up()
        else:
            await device.mqtt.down()
            await device.http.down()


def _settle(state: WorkerState, producer: threading.Thread | None) -> list[str]:
    """Wait (real time) until every device thread and the producer is blocked on the
    clock and none stirred for ``SETTLE_QUIET``; the names of threads still busy if that
    took over ``SETTLE_TIMEOUT``. Woken by the clock as threads begin waiting
    (:meth:`ManualClock.wait_idle`), not polled: a scan of every wait each millisecond was
    a quarter of a 250-device worker's CPU (issue 18)."""
    need = len(state.devices) + (1 if producer is not None else 0)
    if state.clock.wait_idle(need, SETTLE_TIMEOUT, quiet=SETTLE_QUIET):
        return []
    state.settle_timeouts += 1
    waiting = state.clock.waiting_threads()
    return [d.thread for d in state.devices if d.thread not in waiting]


def _report(state: WorkerState, busy: list[str]) -> dict[str, Any]:
    with state.lock:
        shown, state.shown = state.shown, []
        excluded = state.offline | set(state.awaiting.values())
    nxt = state.clock.next_deadline(exclude_threads=excluded)
    return {
        "next": None if nxt is None else epoch(nxt),
        "operations": shown,
        "busy": busy,
    }


def _produced(state: WorkerState) -> dict[str, int]:
    return {d.device_id: d.produced for d in state.devices}


def _pending(state: WorkerState) -> dict[str, int]:
    """Messages still in each device's outbox at the end (produced, not yet delivered)."""
    return {d.device_id: d.client.pending_messages_count for d in state.devices if d.client}
