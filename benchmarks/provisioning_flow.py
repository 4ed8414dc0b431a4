"""Provisioning throughput against a running platform server over real HTTP.

Starts ``python -m iiot_server`` (SQLite) in its own process, then drives, with aiohttp
from this process (httpx tops out near 200 requests/s here and would be the bottleneck):

* N complete provisioning flows: init → approve → complete → register (4 requests each);
* N token refreshes spread over the provisioned devices (each refreshes its own chain).

Prints flows/s and refreshes/s with p50/p99 latency and, on Linux, the server process's CPU
time per flow and per refresh (it moves far less than flows/s when the shared machine is busy:
``docs/audit.md`` compares two trees that way). Targets on a 2-core machine with SQLite:
≥200 flows/s and ≥1,000 refreshes/s.

    .venv/bin/python benchmarks/provisioning_flow.py --flows 2000 --refreshes 5000 --concurrency 32

The same load then runs on another database beside SQLite, in the same run:
``--database-url postgresql+psycopg://user@host/empty_db`` (an empty database: the server
migrates it), or ``--postgres`` for a throw-away PostgreSQL cluster started here from
Debian's binaries (``tests/postgres.py``; fsync on, default settings, loopback TCP).
Measured with ``--postgres`` (2026-11-26 23:51, the shared 2-core machine at load 0.7
before the run; server, load generator and PostgreSQL on the same 2 cores): SQLite 263.5
flows/s and 1,173.8 refreshes/s (targets met), PostgreSQL 15 91.8 flows/s and 706.6
refreshes/s. At load 2-12 earlier: 173 / 1,105 and 88 / 581.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from sqlalchemy.engine import make_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds the server process has used (Linux ``/proc``; None
    elsewhere). Per flow it varies far less with the shared machine's load than flows/s
    does, so a change's own cost shows through a busy machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(
    name: str,
    count: int,
    elapsed: float,
    latencies: list[float],
    unit: str,
    cpu: float | None = None,
) -> None:
    one = {"flows": "flow", "refreshes": "refresh"}.get(unit, unit)
    server = "" if cpu is None else f"   server CPU {1000 * cpu / count:6.2f} ms/{one}"
    print(
        f"{name:<22} {count:>7} in {elapsed:6.2f} s = {count / elapsed:8.1f} {unit}/s   "
        f"p50 {1000 * statistics.median(latencies):7.2f} ms   p99 {1000 * percentile(latencies, 0.99):7.2f} ms"
        f"{server}"
    )


def cpu_since(pid: int | None, start: float | None) -> float | None:
    now = server_cpu_seconds(pid)
    return None if now is None or start is None else now - start


async def run(
    base: str,
    admin_key: str,
    flows: int,
    refreshes: int,
    concurrency: int,
    server_pid: int | None = None,
) -> None:
    admin = {"Authorization": f"Bearer {admin_key}"}
    # Idle connections closed here before the server's keep-alive timeout (5 s) closes them:
    # on a busy machine a request sent on a connection the server was closing failed the run
    # (ServerDisconnectedError, connection reset by peer; twice in four runs at load 8-11).
    connector = aiohttp.TCPConnector(limit=concurrency * 2, keepalive_timeout=2.0)
    async with aiohttp.ClientSession(base, connector=connector) as http:
        async with http.post(
            "/api/v1/provisioning-tokens", json={"name": "bench"}, headers=admin
        ) as r:
            assert r.status == 201, await r.text()
            pt = (await r.json())["provisioningToken"]
        device = {"Authorization": f"DeviceToken {pt}"}

        async def flow(i: int) -> str:
            async with http.post(
                "/provisioning-operations/init", json={"deviceId": f"bench-{i:06d}"}, headers=device
            ) as r:
                assert r.status == 200, await r.text()
                op = (await r.json())["provisioningOperationId"]
            async with http.post(
                f"/api/v1/provisioning-operations/{op}/approve", headers=admin
            ) as r:
                assert r.status == 200, await r.text()
            async with http.put(
                "/provisioning-operations/complete",
                json={"provisioningOperationId": op},
                headers=device,
            ) as r:
                assert r.status == 200, await r.text()
                rt = str((await r.json())["registrationToken"])
            async with http.put(
                "/devices/register", headers={"Authorization": f"DeviceToken {rt}"}
            ) as r:
                assert r.status == 200, await r.text()
            return rt

        tokens: list[str] = []
        flow_latencies: list[float] = []
        next_index = iter(range(flows))

        async def flow_worker() -> None:
            for i in next_index:
                t0 = time.perf_counter()
                tokens.append(await flow(i))
                flow_latencies.append(time.perf_counter() - t0)

        t0, cpu0 = time.perf_counter(), server_cpu_seconds(server_pid)
        await asyncio.gather(*(flow_worker() for _ in range(concurrency)))
        report(
            "provisioning flows",
            flows,
            time.perf_counter() - t0,
            flow_latencies,
            "flows",
            cpu_since(server_pid, cpu0),
        )

        refresh_latencies: list[float] = []
        per_worker = [
            refreshes // concurrency + (1 if w < refreshes % concurrency else 0)
            for w in range(concurrency)
        ]

        # A fleet refreshes: worker w takes devices w, w + concurrency, ... in turn, so each
        # device refreshes a few times (one device hammering refresh meets the device API's
        # per-device rate limit, 1/s with a burst of 20: docs/security.md).
        async def refresh_worker(w: int) -> None:
            mine = list(range(w % len(tokens), len(tokens), concurrency)) or [w % len(tokens)]
            for n in range(per_worker[w]):
                i = mine[n % len(mine)]
                t = time.perf_counter()
                async with http.put(
                    "/devices/registration-tokens/refresh",
                    json={"registrationToken": tokens[i]},
                    headers=device,
                ) as r:
                    assert r.status == 201, await r.text()
                    tokens[i] = (await r.json())["registrationToken"]
                refresh_latencies.append(time.perf_counter() - t)

        t0, cpu0 = time.perf_counter(), server_cpu_seconds(server_pid)
        await asyncio.gather(*(refresh_worker(w) for w in range(concurrency)))
        report(
            "token refreshes",
            refreshes,
            time.perf_counter() - t0,
            refresh_latencies,
            "refreshes",
            cpu_since(server_pid, cpu0),
        )


def serve_and_run(database_url: str, label: str, args: argparse.Namespace) -> int:
    """Start ``python -m iiot_server`` on ``database_url`` and run the load against it."""
    port = free_port()
    admin_key = f"ak_{secrets.token_urlsafe(32)}"
    env = {**os.environ, "IIOT_ADMIN_KEY": admin_key}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iiot_server",
            "--port",
            str(port),
            "--mqtt-port",
            str(free_port()),  # not 1883: another broker (or the previous run's) may hold it
            "--database-url",
            database_url,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print(
                        "server did not start:",
                        server.stderr.read().decode() if server.stderr else "",
                    )
                    return 1
                time.sleep(0.05)
        print(
            f"server: python -m iiot_server ({label}, 1 process); load: aiohttp, concurrency {args.concurrency}"
        )
        asyncio.run(run(base, admin_key, args.flows, args.refreshes, args.concurrency, server.pid))
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--refreshes", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--database-url",
        help="also run on this (empty) database, e.g. postgresql+psycopg://user@host/db",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run on a throw-away PostgreSQL cluster (tests/postgres.py), fsync on",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        status = serve_and_run(f"sqlite:///{Path(data) / 'bench.db'}", "SQLite", args)
    if status == 0 and args.database_url:
        print()
        status = serve_and_run(
            args.database_url, make_url(args.database_url).get_backend_name(), args
        )
    if status == 0 and args.postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.postgres import ThrowawayCluster

        with ThrowawayCluster(durable=True) as cluster:
            print()
            url = cluster.create_database("bench")
            status = serve_and_run(url, "PostgreSQL, throw-away cluster on loopback", args)
    return status


if __name__ == "__main__":
    sys.exit(main())
