"""MQTT ingest throughput: messages stored end to end by the embedded platform (amqtt +
SQLite), every figure also as a ratio to raw mosquitto measured in the same run.

For each QoS (1, then 0) and broker: K publishing devices (own processes, paho) wait for
their CONNACK, then send N messages of 64 B each as fast as the broker takes them. The
platform's figure counts rows committed to its SQLite file; raw mosquitto's counts messages
delivered to one QoS 1 paho subscriber in this process, so on 2 cores the Python clients,
not mosquitto, bound that figure (mosquitto itself spends 14-18 µs of CPU a message). Timed
from the start signal to the last message counted; each line also gives the broker
process's CPU per message, the figure to trust when the machine is shared.
``--idle N`` repeats it with N idle devices connected (paho, subscribed to their twin
topics, under 300 a process: paho uses select()). ``--capacity 500,1000,2000`` measures the
RSS of each broker's process with that many idle devices connected; bytes per device from 0
to the largest count give how many fit in 4 GiB (a linear extrapolation, said so).

Mosquitto mode (``iiotsim serve --broker mosquitto``, class in
``benchmarks/ingest_mosquitto_mode.py``) is measured beside them where mosquitto's dynamic-
security plugin is installed; ``--capacity`` then adds its memory too. At 23:44 (load 0.6),
``.venv/bin/python benchmarks/ingest.py --idle 1000``: QoS 1 without idle devices raw
11,535 msg/s, embedded 1.63x, Mosquitto mode 1.23x; with 1,000 idle devices 1.38x and
1.07x (targets 0.6x and 0.8x); QoS 0: 1.07x and 0.64x, with idle devices 1.14x and 1.08x.

Measured 2026-11-26 on the shared 2-core machine, load average 0.4-3.9:

    .venv/bin/python benchmarks/ingest.py            # 8 publishers x 2,000, 3 runs
    QoS 1: 14,500-18,000 msg/s stored = 1.42-1.99x raw mosquitto (8,700-12,700 msg/s);
           broker CPU 17-23 µs a message (mosquitto 14-18)
    QoS 0: 19,400-22,500 msg/s = 1.06-1.35x raw mosquitto; 17-19 µs (mosquitto 6-7)
    Before the fast path (same harness, the server before cc9bfd3): QoS 1 3,840 msg/s =
    0.33x, 188 µs a message; QoS 0 0.30x, 126 µs (runs at load 7-9: 0.33-0.50x, 194 µs).

    .venv/bin/python benchmarks/ingest.py --idle 1000   # one run
    with 1,000 idle devices connected: QoS 1 15,700 msg/s = 1.27x raw mosquitto, 21 µs a
    message; QoS 0 0.58x, 12 µs (other tests ran meanwhile: load 4.9)

    .venv/bin/python benchmarks/ingest.py --skip-throughput --capacity 500,1000,2000
    mosquitto 2.5 KiB per connected idle device; the platform 56.8 KiB (RSS 106 MiB with
    none, 217 MiB with 2,000): ~72,000 devices in 4 GiB by extrapolation. With this
    machine's 20,000 descriptors (ulimit -n) the platform's connection limit (3/4 of it,
    15,000) comes first.

Where the platform's time goes now (py-spy, QoS 1): the reader loop with parsing and the
ACL about half of the broker's busy samples, the commit (executemany and COMMIT) about a
third, the batched PUBACK writes about a tenth.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

CLIENTS_PER_PROCESS = 250


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def client(client_id: str, password: str | None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if password is not None:
        c.username_pw_set(client_id, password)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    return c


def idle_worker(port: int, creds: list[tuple[str, str | None]], ready: Event, stop: Event) -> None:
    clients = []
    for device_id, password in creds:
        c = client(device_id, password)
        c.connect("127.0.0.1", port, keepalive=120)
        c.subscribe(f"devices/{device_id}/twin/+", 1)
        c.loop_start()
        clients.append(c)
    ready.set()
    stop.wait()
    for c in clients:
        c.disconnect()
        with contextlib.suppress(AttributeError):  # paho 2: its thread ended meanwhile
            c.loop_stop()


def publish_worker(
    port: int,
    device_id: str,
    password: str | None,
    count: int,
    qos: int,
    ready: Queue[bool],
    start: Event,
    done: Queue[int],
) -> None:
    c = client(device_id, password)
    acked = threading.Semaphore(0)
    connected = threading.Event()
    c.on_publish = lambda *_: acked.release()

    def on_connect(*args: Any) -> None:
        if args[3] == 0:  # reason code: accepted
            connected.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port, keepalive=120)
    c.loop_start()
    # paho drops a QoS 0 PUBLISH made before the CONNACK (MQTT_ERR_NO_CONN): wait for it
    ready.put(connected.wait(60))
    start.wait()
    refused = 0
    for i in range(count):
        info = c.publish(
            f"devices/{device_id}/messages/bench/mid={device_id}.{i}", b"x" * 64, qos=qos
        )
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.001)
        elif info.rc != mqtt.MQTT_ERR_SUCCESS:
            refused += 1
    # on_publish: QoS 1 once acknowledged, QoS 0 once written to the socket (a QoS 0
    # message still in paho's queue at loop_stop() is never sent: a slow reader lost
    # thousands with a fixed 0.2 s wait)
    for _ in range(count - refused):
        acked.acquire(timeout=60)
    c.disconnect()
    c.loop_stop()
    done.put(refused)


class Platform:
    name = "iiotsim (amqtt)"

    def __init__(self, directory: Path) -> None:
        self.http_port, self.mqtt_port = free_port(), free_port()
        self.db = directory / "ingest.db"
        self.key = f"ak_{secrets.token_urlsafe(32)}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "iiot_server",
                "--port",
                str(self.http_port),
                "--mqtt-port",
                str(self.mqtt_port),
                "--database-url",
                f"sqlite:///{self.db}",
            ],
            env={**os.environ, "IIOT_ADMIN_KEY": self.key},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.http_port)
        wait_port(self.mqtt_port)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30)
        admin = {"Authorization": f"Bearer {self.key}"}
        self.pt = self.http.post(
            "/api/v1/provisioning-tokens", json={"name": "bench"}, headers=admin
        ).json()["provisioningToken"]
        self.admin = admin

    def credentials(self, device_id: str) -> str:
        auth = {"Authorization": f"DeviceToken {self.pt}"}
        op = self.http.post(
            "/provisioning-operations/init", json={"deviceId": device_id}, headers=auth
        ).json()
        self.http.post(
            f"/api/v1/provisioning-operations/{op['provisioningOperationId']}/approve",
            headers=self.admin,
        )
        rt = self.http.put(
            "/provisioning-operations/complete",
            json={"provisioningOperationId": op["provisioningOperationId"]},
            headers=auth,
        ).json()["registrationToken"]
        return str(
            self.http.put(
                "/devices/register", headers={"Authorization": f"DeviceToken {rt}"}
            ).json()["mqttPassword"]
        )

    def count(self) -> int:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return int(
                conn.execute("select count(*) from messages where stream = 'bench'").fetchone()[0]
            )

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)


class Mosquitto:
    name = "mosquitto"

    def __init__(self, directory: Path) -> None:
        self.mqtt_port = free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        )
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.mqtt_port)
        self.received = 0
        self.lock = threading.Lock()
        self.sub = client("bench-counter", None)
        self.sub.on_message = self._count
        self.sub.connect("127.0.0.1", self.mqtt_port, keepalive=120)
        self.sub.subscribe("devices/+/messages/#", 1)
        self.sub.loop_start()
        time.sleep(0.3)

    def _count(self, *_: object) -> None:
        with self.lock:
            self.received += 1

    def credentials(self, device_id: str) -> str | None:
        return None

    def count(self) -> int:
        with self.lock:
            return self.received

    def close(self) -> None:
        self.sub.disconnect()
        self.sub.loop_stop()
        self.proc.terminate()
        self.proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    """Resident bytes of a process (/proc/<pid>/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def run(broker: Platform | Mosquitto, publishers: int, messages: int, qos: int, idle: int) -> float:
    """Messages per second the broker took (stored, or delivered to mosquitto's counting
    subscriber) from ``publishers`` devices sending ``messages`` each at ``qos``, with
    ``idle`` more devices connected; prints the figure, the broker's CPU per message and
    what was not taken. Timed from the start signal to the last message counted."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    idle_procs = []
    if idle:
        creds = [(f"idle-{i:05d}", broker.credentials(f"idle-{i:05d}")) for i in range(idle)]
        for start in range(0, idle, CLIENTS_PER_PROCESS):
            ready = ctx.Event()
            p = ctx.Process(
                target=idle_worker,
                args=(broker.mqtt_port, creds[start : start + CLIENTS_PER_PROCESS], ready, stop),
            )
            p.start()
            ready.wait(120)
            idle_procs.append(p)
    before = broker.count()
    go, connected, done = ctx.Event(), ctx.Queue(), ctx.Queue()
    pubs = []
    for i in range(publishers):
        device_id = f"pub-q{qos}-{i:03d}-{secrets.token_hex(2)}"
        p = ctx.Process(
            target=publish_worker,
            args=(
                broker.mqtt_port,
                device_id,
                broker.credentials(device_id),
                messages,
                qos,
                connected,
                go,
                done,
            ),
        )
        p.start()
        pubs.append(p)
    if not all(connected.get(timeout=120) for _ in pubs):
        raise RuntimeError("a publisher got no CONNACK")
    expected = publishers * messages
    cpu0 = cpu_seconds(broker.proc.pid)
    t0 = time.perf_counter()
    go.set()
    finished, refused = 0, 0
    got, last_change = 0, t0
    # until everything is counted, or the publishers are done and nothing more comes
    # (QoS 0 may lose messages) for a second, or 300 s
    while got < expected and time.perf_counter() - t0 < 300:
        time.sleep(0.02)
        now = broker.count() - before
        if now != got:
            got, last_change = now, time.perf_counter()
        while not done.empty():
            refused += done.get()
            finished += 1
        if finished == publishers and time.perf_counter() - last_change > 1.0:
            break
    elapsed = last_change - t0
    cpu = cpu_seconds(broker.proc.pid) - cpu0
    for p in pubs:
        p.join(60)
    stop.set()
    for p in idle_procs:
        p.join(60)
    rate = got / elapsed if elapsed > 0 else 0.0
    lost = expected - got
    print(
        f"  {broker.name:<16} QoS {qos}  idle {idle:>5}: {got:>7} of {expected} in {elapsed:6.2f} s"
        f" = {rate:7.0f} msg/s; broker CPU {cpu / max(got, 1) * 1e6:5.0f} µs/msg"
        + (f"  ({lost} not taken, {refused} refused by paho)" if lost else ""),
        flush=True,
    )
    return rate


GIB = 1024**3


def throughput(publishers: int, messages: int, idle: int) -> dict[tuple[str, int, int], float]:
    """Each broker at QoS 1 and 0 (and with ``idle`` devices connected, if any), each
    figure also as a ratio to raw mosquitto's in the same run."""
    results: dict[tuple[str, int, int], float] = {}
    kinds: list[Any] = [Mosquitto, Platform, *mosquitto_mode()]
    targets = {Platform.name: 0.6, "iiotsim (mosquitto)": 0.8}
    for idle_devices in sorted({0, idle}):
        for qos in (1, 0):
            for kind in kinds:
                with tempfile.TemporaryDirectory() as d:
                    broker = kind(Path(d))
                    try:
                        results[(kind.name, qos, idle_devices)] = run(
                            broker, publishers, messages, qos, idle_devices
                        )
                    finally:
                        broker.close()
            raw = results[(Mosquitto.name, qos, idle_devices)]
            for kind in kinds:
                ratio = results[(kind.name, qos, idle_devices)] / raw
                target = (
                    f"  (target >= {targets[kind.name]}x)"
                    if kind.name in targets and qos == 1
                    else ""
                )
                print(
                    f"    {kind.name:<16} QoS {qos}, idle {idle_devices}: "
                    f"{ratio:.2f}x raw mosquitto{target}",
                    flush=True,
                )
    return results


def mosquitto_mode() -> list[Any]:
    """Mosquitto mode (``iiotsim serve --broker mosquitto``) where its plugin is installed."""
    from iiot_server.broker.mosquitto_process import mosquitto_available

    missing = mosquitto_available()
    if missing is not None:
        print(f"  (Mosquitto mode not measured: {missing})")
        return []
    import ingest_mosquitto_mode  # it imports this module: here, not at the top

    return [ingest_mosquitto_mode.MosquittoMode]


def capacity(points: list[int]) -> None:
    """RSS of each broker's process with 0 and ``points`` connected idle devices (paho,
    subscribed to their twin topics); the slope from 0 to the largest count gives bytes per
    connected device and how many fit in 4 GiB: an extrapolation, said so."""
    ctx = mp.get_context("spawn")
    for kind in (Mosquitto, Platform):
        with tempfile.TemporaryDirectory() as d:
            broker = kind(Path(d))
            stop = ctx.Event()
            procs = []
            try:
                creds = [
                    (f"idle-{i:05d}", broker.credentials(f"idle-{i:05d}"))
                    for i in range(max(points))
                ]
                time.sleep(1.0)
                measured = [(0, rss(broker.proc.pid))]
                connected = 0
                for n in sorted(points):
                    for start in range(connected, n, CLIENTS_PER_PROCESS):
                        ready = ctx.Event()
                        p = ctx.Process(
                            target=idle_worker,
                            args=(
                                broker.mqtt_port,
                                creds[start : min(n, start + CLIENTS_PER_PROCESS)],
                                ready,
                                stop,
                            ),
                        )
                        p.start()
                        if not ready.wait(300):
                            raise RuntimeError("idle devices did not connect")
                        procs.append(p)
                    connected = n
                    time.sleep(2.0)
                    measured.append((n, rss(broker.proc.pid)))
                print(
                    f"  {kind.name:<16} RSS with idle devices: "
                    + ", ".join(f"{n}: {r / 2**20:.1f} MiB" for n, r in measured),
                    flush=True,
                )
                (n0, r0), (n1, r1) = measured[0], measured[-1]
                per_device = (r1 - r0) / (n1 - n0)
                print(
                    f"  {kind.name:<16} {per_device / 1024:.1f} KiB per connected idle device; "
                    f"4 GiB holds ~{(4 * GIB - r0) / per_device:,.0f} (extrapolated linearly "
                    f"from 0 and {n1} devices)",
                    flush=True,
                )
            finally:
                stop.set()
                for p in procs:
                    p.join(60)
                broker.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--messages", type=int, default=2000, help="per publisher")
    parser.add_argument(
        "--idle", type=int, default=0, help="also measure with this many idle devices connected"
    )
    parser.add_argument(
        "--capacity",
        default="",
        help="idle device counts (e.g. 500,1000,2000) to measure RSS at and extrapolate to 4 GiB",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if shutil.which("mosquitto") is None:
        print("mosquitto not found: apt-get install mosquitto")
        return 1
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    if not args.skip_throughput:
        print(
            f"{args.publishers} publishers x {args.messages} messages of 64 B"
            + (f"; idle devices: 0 and {args.idle}" if args.idle else "")
        )
        throughput(args.publishers, args.messages, args.idle)
    points = [int(n) for n in args.capacity.split(",") if n]
    if points:
        print("connected idle devices within 4 GiB (RSS of the broker's process)")
        capacity(points)
        if mosquitto_mode():
            import ingest_mosquitto_mode

            print("Mosquitto mode: RSS of the platform and its mosquitto, devices provisioned")
            ingest_mosquitto_mode.memory(points)
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
