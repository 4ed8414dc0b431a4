"""Hybrid run speed and memory (issue 18): real devices over worker processes against the
embedded platform, on the simulated clock.

Prints, for each fleet: wall time, clock steps, simulated seconds per wall second, the
peak of the run's total RSS (coordinator with the platform, plus every worker, sampled
every 0.5 s from /proc) and that peak per device, from which the largest fleet that fits
in 8 GiB is estimated (linear in devices: each device is a client, two proxies and a
database in a worker, and a session in the platform).

Default: 100, 300 and 1,000 devices for one simulated day each. ``--full``: 1,000
devices for 7 simulated days (target: within 10 minutes on the 2-core machine).
``--devices N --days D`` runs one fleet. Workers: one per 250 devices (``--processes``).
Events on a 60 s grid by default (``HybridRun(time_quantum=60)``; ``--quantum 0``: exact).

The scenario: connectivity on ~exp(6 h) / off ~exp(20 min), Registration Tokens of 1 day
(refreshed at 12 h), 2 technicians approving in ~exp(10 min), 1 message per device-hour.

Measured 2026-11-27 on the shared 2-core machine (another session's tests ran meanwhile:
load 3-10), quantum 60 s, every compared metric within its tolerance (in the 1,000-device
run "messages lost" read -1: one message stored and still in its outbox, its PUBACK on the
way, counted twice; the count is per device now, and stops at 0):

| devices x days | workers | wall | steps | simulated s / wall s | peak RSS |
|---|---|---|---|---|---|
| 100 x 1 | 1 | 37.3 s | 1,384 | 2,317 | 632 MiB |
| 300 x 1 | 2 | 100.9 s | 1,439 | 856 | 1,110 MiB |
| 1,000 x 1 | 4 | 349.1 s | 1,440 | 247 | 2,410 MiB |

- 1,000 x 7 d: not run; at 247 simulated s per wall s it would take ~41 minutes, four times
  the 10-minute target. Steps are no longer the cost (one per quantum at most); the
  devices' own work is: 1,000 SDK clients, their proxies and the platform on two cores.
- 8 GiB: RSS grows 1.86 MiB a device from 300 to 1,000 devices (the coordinator with the
  platform, and the workers), so ~4,100 devices would fit: an extrapolation, not run.
- The wall of the previous figures (no CONNACK past ~170 devices on 2 workers) was paho's
  ``select()`` past descriptor 1,023 in the workers (docs/hybrid.md); before its fix 100 x 1
  took 63.6 s and 1,856 steps.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path

from iiotsim.sim import Connectivity, Distribution, Messages, Provisioning, Scenario, TokenPolicy
from iiotsim.twin import HybridRun

DEVICES_PER_PROCESS = 250


def scenario(devices: int, days: float) -> Scenario:
    return Scenario(
        fleet_size=devices,
        duration_days=days,
        connectivity=Connectivity(
            on=Distribution.exponential(6 * 3600), off=Distribution.exponential(20 * 60)
        ),
        token=TokenPolicy(lifetime=86_400),
        provisioning=Provisioning(
            technicians=2, approval_time=Distribution.exponential(600), working_hours=None
        ),
        messages=Messages(rate_per_hour=1),
        seed=1,
    )


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakMemory:
    """The peak of the summed RSS of this process and the run's workers."""

    def __init__(self, run: HybridRun) -> None:
        self.run, self.peak = run, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import os

        while not self._stop.wait(0.5):
            pids = [os.getpid()] + [w.pid for w in self.run.workers if w.pid]
            self.peak = max(self.peak, sum(rss_mib(pid) for pid in pids))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(devices: int, days: float, processes: int | None, quantum: float) -> None:
    processes = processes or math.ceil(devices / DEVICES_PER_PROCESS)
    began = time.monotonic()
    with (
        HybridRun(scenario(devices, days), processes=processes, time_quantum=quantum) as run,
        PeakMemory(run) as mem,
    ):
        result = run.run()
    wall = time.monotonic() - began
    simulated = days * 86400
    per_device = mem.peak / devices
    outside = result.comparison[result.comparison["within"].eq(False)]
    print(
        f"{devices:>5} devices x {days:g} d on {processes} worker(s), quantum {quantum:g} s: "
        f"{wall:7.1f} s wall, "
        f"{run.steps:,} steps, {simulated / wall:,.0f} simulated s per wall s, "
        f"peak RSS {mem.peak:,.0f} MiB ({per_device:.1f} MiB/device: ~{8192 / per_device:,.0f} "
        f"devices in 8 GiB); lockouts {result.lockouts}, "
        f"metrics outside tolerance: {', '.join(outside.index) or 'none'}",
        flush=True,
    )
    causes = ", ".join(f"{why} {n:,}" for why, n in run.step_causes.most_common())
    print(f"      steps for: {causes}", flush=True)
    w = run.wall
    print(
        f"      wall: start {w['start']:.1f} s, steps {w['steps']:.1f} s "
        f"({1000 * w['steps'] / max(1, run.steps):.0f} ms a step, of which "
        f"{1000 * w['waiting'] / max(1, run.steps):.0f} ms waiting for the workers: "
        f"{1000 * w['links'] / max(1, run.steps):.0f} ms moving clocks and links, "
        f"{1000 * w['settle'] / max(1, run.steps):.0f} ms settling), "
        f"result {w['result']:.1f} s",
        flush=True,
    )
    for name, row in outside.iterrows():
        print(
            f"      {name}: hybrid {row['hybrid']:.4g}, simulator {row['simulator']:.4g}, "
            f"tolerance {row['tolerance']:.4g} ({row['why']})",
            flush=True,
        )
    if run.settle_timeouts:
        print(
            f"      worker answers given with devices still busy: {run.settle_timeouts}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000 devices x 7 days")
    parser.add_argument("--devices", type=int)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--processes", type=int)
    parser.add_argument(
        "--quantum", type=float, default=60.0, help="HybridRun's time_quantum (0: exact)"
    )
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"load average at start: {load}")
    if args.full:
        measure(1000, 7.0, args.processes, args.quantum)
    elif args.devices:
        measure(args.devices, args.days, args.processes, args.quantum)
    else:
        for devices in (100, 300, 1000):
            measure(devices, args.days, args.processes, args.quantum)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
