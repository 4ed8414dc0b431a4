"""Device SDK figures against a real platform (``python -m iiot_server`` in its own
process, SQLite):

* durable ``send_message`` calls/s (crash-durable default, and power-loss durable);
* ``send_message`` latency with the platform unreachable (mean, p50, p99, max);
* end-to-end delivered messages/s for one device (send N, until every PUBACK, which the
  platform sends only after storing);
* memory per idle client: RSS growth for 100 connected clients in this process.

Targets: >= 20,000 crash-durable calls/s, >= 2,000 delivered/s, <= 2 MiB per idle client.

    .venv/bin/python benchmarks/sdk_throughput.py --messages 50000 --clients 100
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from iiot_device import DeviceClient, ProvisioningOperation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(self, directory: Path) -> None:
        self.http_port, self.mqtt_port = free_port(), free_port()
        self.key = f"ak_{secrets.token_urlsafe(32)}"
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()
        self.admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )
        r = self.admin.post(
            "/api/v1/provisioning-tokens", json={"name": "bench", "allowInfiniteLifetime": True}
        )
        r.raise_for_status()
        self.pt = r.json()["provisioningToken"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "iiot_server", "--port", str(self.http_port),
                "--mqtt-port", str(self.mqtt_port),
                "--database-url", f"sqlite:///{self.directory / 'platform.db'}",
            ],
            env={**os.environ, "IIOT_ADMIN_KEY": self.key},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def approve(self, op: ProvisioningOperation) -> None:
        self.admin.post(f"/api/v1/provisioning-operations/{op.id}/approve").raise_for_status()

    def device(self, db: Path, device_id: str, **options: object) -> DeviceClient:
        return DeviceClient.start(
            self.pt, db, server_url=self.url, device_id=device_id,
            on_provisioning_operation=self.approve, **options,
        )  # fmt: skip


def wait_connected(client: DeviceClient, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.status != "connected":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{client.device_id} not connected: {client.last_error}")
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    n = args.messages
    payload = b'{"temperature": 21.5, "pressure": 1013.2, "vibration": [0.1, 0.2, 0.3]}'
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        server = Server(d)
        print(f"platform: python -m iiot_server (SQLite), payload {len(payload)} B")

        # 1. end to end: one device, N messages, until the last PUBACK
        client = server.device(d / "e2e.db", "bench-e2e")
        wait_connected(client)
        t0 = time.perf_counter()
        for _ in range(n):
            client.send_message(payload)
        sent = time.perf_counter() - t0
        client.wait_sent()
        total = time.perf_counter() - t0
        print(f"send_message while connected: {n / sent:10.0f} calls/s")
        print(f"end-to-end delivered (stored) : {n / total:10.0f} msg/s  ({n} in {total:.2f} s)")
        client.close()

        # 2. platform down: durable calls/s and latency
        for durability in ("crash", "power"):
            count = n if durability == "crash" else max(1000, n // 20)
            client = server.device(d / f"off-{durability}.db", f"bench-{durability}",
                                   durability=durability)  # fmt: skip
            wait_connected(client)
            server.stop()
            while client.status == "connected":
                time.sleep(0.01)
            latencies = []
            t0 = time.perf_counter()
            for _ in range(count):
                s = time.perf_counter()
                client.send_message(payload)
                latencies.append(time.perf_counter() - s)
            elapsed = time.perf_counter() - t0
            latencies.sort()
            print(
                f"send_message, platform down, durability={durability:<5}: "
                f"{count / elapsed:8.0f} calls/s; latency mean {statistics.mean(latencies) * 1e6:6.1f} us, "
                f"p50 {latencies[len(latencies) // 2] * 1e6:6.1f} us, "
                f"p99 {latencies[int(len(latencies) * 0.99)] * 1e6:7.1f} us, max {latencies[-1] * 1e3:6.2f} ms"
            )
            assert client.pending_messages_count == count
            client.close()
            server.start()

        # 3. memory per idle client
        gc.collect()
        before = rss_bytes()
        clients = [server.device(d / f"idle-{i}.db", f"bench-idle-{i:03d}")
                   for i in range(args.clients)]  # fmt: skip
        for c in clients:
            wait_connected(c)
        gc.collect()
        time.sleep(1.0)
        after = rss_bytes()
        per = (after - before) / args.clients
        print(
            f"memory per idle connected client: {per / 1024 / 1024:.2f} MiB "
            f"({args.clients} clients, RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB)"
        )
        for c in clients:
            c.close()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
