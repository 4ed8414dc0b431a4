"""MQTT ingest throughput: messages stored end to end by the platform, beside what a Debian
mosquitto broker forwards under the same publisher load (ratio printed).

For each broker and QoS: K publishing devices (in their own processes, paho) send N
messages each as fast as the broker takes them; optionally 1,000 idle devices stay
connected and subscribed to their own twin topics (spread over processes: paho uses
select(), keep under ~300 clients a process). The platform's figure counts rows committed
to its SQLite file; mosquitto's counts messages delivered to one subscriber.

    .venv/bin/python benchmarks/ingest.py --publishers 8 --messages 2000 --idle 1000
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

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
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if password is not None:
        c.username_pw_set(client_id, password)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    return c


def idle_worker(
    port: int, creds: list[tuple[str, str | None]], ready: mp.Event, stop: mp.Event
) -> None:
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
        c.loop_stop()


def publish_worker(
    port: int,
    device_id: str,
    password: str | None,
    count: int,
    qos: int,
    start: mp.Event,
    done: mp.Queue,
) -> None:
    c = client(device_id, password)
    acked = threading.Semaphore(0)
    c.on_publish = lambda *_: acked.release()
    c.connect("127.0.0.1", port, keepalive=120)
    c.loop_start()
    start.wait()
    for i in range(count):
        info = c.publish(
            f"devices/{device_id}/messages/bench/mid={device_id}.{i}", b"x" * 64, qos=qos
        )
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.001)
    if qos:
        for _ in range(count):
            acked.acquire(timeout=60)
    else:
        time.sleep(0.2)  # let paho flush its socket
    c.disconnect()
    c.loop_stop()
    done.put(device_id)


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


def run(broker: Platform | Mosquitto, publishers: int, messages: int, qos: int, idle: int) -> float:
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
    go, done = ctx.Event(), ctx.Queue()
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
                go,
                done,
            ),
        )
        p.start()
        pubs.append(p)
    time.sleep(1.0)  # publishers connected
    expected = publishers * messages
    t0 = time.perf_counter()
    go.set()
    deadline = t0 + 300
    while broker.count() - before < expected and time.perf_counter() < deadline:
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    got = broker.count() - before
    for p in pubs:
        p.join(60)
    stop.set()
    for p in idle_procs:
        p.join(60)
    rate = got / elapsed
    lost = expected - got
    print(
        f"  {broker.name:<16} QoS {qos}  idle {idle:>5}: {got:>7} of {expected} in {elapsed:6.2f} s = {rate:9.0f} msg/s"
        + (f"  ({lost} not delivered)" if lost else ""),
        flush=True,
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--messages", type=int, default=2000, help="per publisher")
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("mosquitto") is None:
        print("mosquitto not found: apt-get install mosquitto")
        return 1
    print(
        f"{args.publishers} publishers x {args.messages} messages of 64 B; idle devices: 0 and {args.idle}"
    )
    results: dict[tuple[str, int, int], float] = {}
    for idle in sorted({0, args.idle}):
        for qos in (1, 0):
            for kind in (Mosquitto, Platform):
                with tempfile.TemporaryDirectory() as d:
                    broker = kind(Path(d))
                    try:
                        results[(kind.name, qos, idle)] = run(
                            broker, args.publishers, args.messages, qos, idle
                        )
                    finally:
                        broker.close()
            ours, theirs = results[(Platform.name, qos, idle)], results[(Mosquitto.name, qos, idle)]
            print(
                f"  ratio stored/forwarded, QoS {qos}, idle {idle}: {ours / theirs:.2f}x (target >= 0.3x for QoS 1)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
