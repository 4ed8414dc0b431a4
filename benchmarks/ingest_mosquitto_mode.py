"""Mosquitto mode's ingest (``iiotsim serve --broker mosquitto``) beside raw mosquitto in
the same run, and its memory per connected idle device.

Throughput: K publishing devices (own processes, paho) send N QoS 1 messages each as fast
as the broker takes them. Raw mosquitto's figure counts messages delivered to one QoS 1
subscriber; Mosquitto mode's counts rows committed to the platform's SQLite file (the
platform subscribes through its persistent session and acknowledges after its commit).
Optionally with idle devices connected and subscribed to their twin topics (spread over
processes, under 300 clients each: paho uses select()).

Memory: RSS of the platform process plus its mosquitto child with no device, then with
all devices provisioned (a dynamic-security client and role each) and a few numbers of them
connected; the growth per device gives the devices that fit in 4 GiB (an extrapolation
from the measured points, said so in the output).

    .venv/bin/python benchmarks/ingest_mosquitto_mode.py --publishers 8 --messages 10000 \
        --idle 1000 --rss ""
    .venv/bin/python benchmarks/ingest_mosquitto_mode.py --messages 2000 --idle 1000 \
        --rss 500,2000

Measured 2026-11-26 23:36 on the shared 2-core machine (load average about 1), two runs of
``--publishers 8 --messages 10000 --idle 1000 --rss ""``:

- 8 x 10,000 QoS 1: raw mosquitto 13,625 and 13,648 msg/s, Mosquitto mode stored 16,832 and
  17,796 msg/s = 1.24x and 1.30x; with 1,000 idle devices connected 1.76x and 1.09x (target
  0.8x). The platform spends 13-16 us of CPU per message, mosquitto 15-19 us. Raw
  mosquitto's figure is what one paho subscriber counts, so above 1 the platform's own
  ingest subscriber (broker/mqtt_subscriber.py) is faster than paho, not than mosquitto.
  With paho as the ingest connection (before): 0.56-0.79x and 0.68-0.87x, at 71-94 us.
- Memory: RSS platform + mosquitto 112 MiB with no device; 140 MiB with 2,000 devices
  provisioned (a dynamic-security client and role each) and 500 or 2,000 of them connected:
  14.2 KiB per device (platform 3.2, mosquitto 11.0, most of it the plugin's state), so
  4 GiB would hold ~287,000 such devices, a linear extrapolation far beyond the 2,000
  measured. Connections themselves barely show (500 -> 2,000 connected: +0.1 MiB). Before
  memory, the dynamic-security plugin's rewrite of its whole JSON file at every register
  (1.3 KB per device) is what limits a large fleet.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # benchmarks/ingest.py: the publisher and idle workers, raw mosquitto

GIB = 1024**3


class MosquittoMode(ingest.Platform):
    """The platform with ``--broker mosquitto`` (a child mosquitto in the data dir)."""

    name = "iiotsim (mosquitto)"

    def __init__(self, directory: Path) -> None:  # as ingest.Platform, one more option
        self.http_port, self.mqtt_port = ingest.free_port(), ingest.free_port()
        self.db = directory / "ingest.db"
        self.key = f"ak_{secrets.token_urlsafe(32)}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iiot_server", "--port", str(self.http_port),
             "--mqtt-port", str(self.mqtt_port), "--database-url", f"sqlite:///{self.db}",
             "--data-dir", str(directory), "--broker", "mosquitto"],
            env={**os.environ, "IIOT_ADMIN_KEY": self.key},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.directory = directory
        ingest.wait_port(self.http_port)
        ingest.wait_port(self.mqtt_port)
        import httpx

        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30)
        self.admin = {"Authorization": f"Bearer {self.key}"}
        self.pt = self.http.post(
            "/api/v1/provisioning-tokens", json={"name": "bench"}, headers=self.admin
        ).json()["provisioningToken"]

    def rss(self) -> tuple[int, int]:
        """Bytes resident: the platform process, its mosquitto child."""
        mosquitto = int((self.directory / "mosquitto" / "mosquitto.pid").read_text())
        return ingest.rss(self.proc.pid), ingest.rss(mosquitto)


def established(port: int) -> int:
    """Connections established to ``port`` on this machine (from /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
            count += 1
    return count


def throughput(args: argparse.Namespace) -> None:
    raw = {}
    for idle in sorted({0, args.idle}):
        for kind in (ingest.Mosquitto, MosquittoMode):
            with tempfile.TemporaryDirectory() as d:
                broker = kind(Path(d))
                try:
                    rate = ingest.run(broker, args.publishers, args.messages, 1, idle)
                finally:
                    broker.close()
            if kind is ingest.Mosquitto:
                raw[idle] = rate
            else:
                print(
                    f"  Mosquitto mode stored / raw mosquitto, QoS 1, idle {idle}: "
                    f"{rate / raw[idle]:.2f}x (target >= 0.8x)",
                    flush=True,
                )


def show(point: tuple[int, int, int], connections: int) -> None:
    n, platform, mosquitto = point
    print(
        f"  idle {n:>6}: RSS platform {platform / 2**20:7.1f} MiB + mosquitto "
        f"{mosquitto / 2**20:6.1f} MiB = {(platform + mosquitto) / 2**20:7.1f} MiB "
        f"({connections} connections to mosquitto)",
        flush=True,
    )


def memory(points: list[int]) -> None:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        platform = MosquittoMode(Path(d))
        stop = ctx.Event()
        procs = []
        try:
            connected = 0
            measured = [(0, *platform.rss())]
            show(measured[-1], 2)
            creds = [
                (f"idle-{i:05d}", platform.credentials(f"idle-{i:05d}")) for i in range(max(points))
            ]
            for n in sorted(points):
                for start in range(connected, n, ingest.CLIENTS_PER_PROCESS):
                    batch = creds[start : min(n, start + ingest.CLIENTS_PER_PROCESS)]
                    ready = ctx.Event()
                    p = ctx.Process(
                        target=ingest.idle_worker, args=(platform.mqtt_port, batch, ready, stop)
                    )
                    p.start()
                    ready.wait(120)
                    procs.append(p)
                connected = n
                time.sleep(2.0)
                measured.append((n, *platform.rss()))
                show(measured[-1], established(platform.mqtt_port))
            # every device provisioned (a dynamic-security client and role each) and connected,
            # against the platform with none: the whole cost of a device in this mode
            (_, pa, ma), (n1, p1, m1) = measured[0], measured[-1]
            per_device = (p1 + m1 - pa - ma) / n1
            fits = (4 * GIB - pa - ma) / per_device
            print(
                f"  {per_device / 1024:.1f} KiB per provisioned, connected idle device (0 -> {n1}: "
                f"platform {(p1 - pa) / n1 / 1024:.1f} KiB, mosquitto {(m1 - ma) / n1 / 1024:.1f} "
                f"KiB); 4 GiB would hold ~{fits:,.0f} such devices (a linear extrapolation from "
                "these points, far beyond what was measured)",
                flush=True,
            )
        finally:
            stop.set()
            for p in procs:
                p.join(60)
            platform.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--messages", type=int, default=2000, help="per publisher")
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--rss", default="250,500,1000", help="idle device counts for RSS")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if not args.skip_throughput:
        print(f"{args.publishers} publishers x {args.messages} messages of 64 B, QoS 1")
        throughput(args)
    points = [int(n) for n in args.rss.split(",") if n]
    if points:
        print("memory with connected idle devices (Mosquitto mode)")
        memory(points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
