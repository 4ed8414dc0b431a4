"""Simulator speed: simulated device-days per wall-clock second, beside a naive simpy
model (one process per device, every connectivity change and refresh an event), and a
sweep of 20 lifetimes x 10,000 devices x 365 days.

Each measurement runs in its own process, which also reports its peak memory (RSS).
Targets: >= 20x the naive model's device-days/s; the sweep within 5 minutes.

``--study`` runs notebook 02's study at full size (issue 11): 10,000 devices x 365 days
x 8 lifetimes (1 h, 6 h, 1 d, 3 d, 7 d, 30 d, 90 d, infinite) x 4 refresh fractions
(0.25, 0.5, 0.75, 0.9) x 5 repetitions = 160 runs through ``sweep`` (one worker per
CPU), and prints the wall time (target: 10 minutes on 2 cores) and the peak RSS of the
largest worker. ``--big`` runs one 100,000-device x 365-day scenario and prints its
peak RSS (target: under 2 GiB).

Measured 2026-11-26 on the shared 2-core machine (workers got ~80 % of a core each):
study 797 s (13.3 min, target 10: not met; the 1 h-3 d policies need 5-13 fleet/queue
fixed-point passes each), worker peak 1,563 MiB; 100,000 x 365 d in 112 s at
9,728 MiB peak (not met: the fleet's segment matrices were held whole, ~92 MiB per
1,000 devices).

Measured 2026-11-26, same machine, ``--big`` after processing the fleet in chunks of
10,000-device blocks (``model.DEVICE_BLOCK``; each block's segments drawn from its own
generators, again for each fixed-point pass when the fleet is too large to keep):
100,000 x 365 d in 171 s at 1,442 MiB peak (target 2,048 MiB: met). Results of fleets up
to 10,000 devices are bit-identical to before. With the speed changes below: 123 s at
1,167 MiB peak.

Measured 2026-11-26, ``--study`` after: lean fixed-point passes (only the settled one
replayed with its timeline, where pass 1 always built one), a queue loop 3.5x faster,
a refresh's three request kinds spread once, column-major blocks, and the queue's
delay no longer queueing a replayed lockout behind itself (passes at f = 0.5: 13 at
1 h, 9 at 1 d, 5 at 3 d, 1 from 7 d up). CPU per 10,000-device year at f = 0.5,
before -> after: 1 h 16.9 -> 10.8 s, 1 d 10.0 -> 8.2 s, 7 d 4.8 -> 3.9 s; the reported
replay (timeline, totals, messages: ~3.5-4 s) is now most of every run. The study, run
twice: 1,316 s wall while other sessions kept the load at 4-5 (workers ~40 % of a core
each; ~1,035 s CPU, read from /proc), then 658 s wall (load ~2.5; its first 2 min beside
this file's ``--big``), workers' CPU 1,001 s, i.e. ~500 s on the 2 cores if idle; worker
peak 1,177 MiB. Target 10 min: met in CPU (500 s against ~1,275 s before, 797 s x 2 x
~0.8 of a core), not shown in wall time on the shared machine (658 s). Both runs gave
identical per-policy tables.

Measured 2026-11-26 19:34-19:42 UTC with the machine otherwise idle (load ~0.9 at the
start), after ``sweep`` runs an infinite lifetime once for all its refresh fractions (15 of
the 160 runs were repeats): ``--study`` 160 runs in 477 s wall (8.0 min; target 10 min:
met), workers' CPU 934 s, worker peak 1,171 MiB.

    .venv/bin/python benchmarks/simulator.py            # everything (a few minutes)
    .venv/bin/python benchmarks/simulator.py --quick    # 1,000 and 10,000 devices only
    .venv/bin/python benchmarks/simulator.py --study    # the notebook-02 study only
    .venv/bin/python benchmarks/simulator.py --big      # 100,000 devices x 365 d only
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from typing import Any

import numpy as np
import simpy

from iiotsim.sim import (
    DAY,
    HOUR,
    Connectivity,
    Distribution,
    Messages,
    Scenario,
    TokenPolicy,
    simulate,
    summarize_sweep,
    sweep,
)

LIFETIME = DAY
STUDY_LIFETIMES: list[float | None] = [
    HOUR,
    6 * HOUR,
    DAY,
    3 * DAY,
    7 * DAY,
    30 * DAY,
    90 * DAY,
    None,
]
STUDY_FRACTIONS = [0.25, 0.5, 0.75, 0.9]
STUDY_REPETITIONS = 5


def study_fleet(devices: int = 10_000, days: float = 365) -> Scenario:
    """Notebook 02's fleet: on ~12 h (exponential), off lognormal mean 2 h, sigma 1.5."""
    return Scenario(
        fleet_size=devices,
        duration_days=days,
        connectivity=Connectivity(
            on=Distribution.exponential(12 * HOUR), off=Distribution.lognormal(2 * HOUR, 1.5)
        ),
        seed=2026,
    )


def children_peak_mib() -> float:
    """Peak RSS of the largest finished child process (the sweep's workers)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def children_cpu_s() -> float:
    """CPU seconds of the finished child processes (the sweep's workers): the wall
    time on a shared machine depends on what else runs; this does not."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_study() -> None:
    runs = len(STUDY_LIFETIMES) * len(STUDY_FRACTIONS) * STUDY_REPETITIONS
    print(
        f"notebook-02 study: 10,000 devices x 365 d x {len(STUDY_LIFETIMES)} lifetimes x "
        f"{len(STUDY_FRACTIONS)} refresh fractions x {STUDY_REPETITIONS} repetitions "
        f"= {runs} runs, {os.cpu_count()} CPUs",
        flush=True,
    )
    start = time.perf_counter()
    frame = sweep(
        study_fleet(),
        repetitions=STUDY_REPETITIONS,
        progress=sys.stderr.isatty(),
        token__lifetime=STUDY_LIFETIMES,
        token__refresh_fraction=STUDY_FRACTIONS,
    )
    elapsed = time.perf_counter() - start
    table = summarize_sweep(frame, ["lockouts_per_1000_device_days", "rt_leak_exposure_mean_h"])
    print(table.round(3).to_string())
    print(
        f"  study: {len(frame)} runs in {elapsed:.0f} s ({elapsed / 60:.1f} min; target 10 min), "
        f"{len(frame) * 10_000 * 365 / elapsed:,.0f} device-days/s; "
        f"workers' CPU {children_cpu_s():.0f} s (/ {os.cpu_count()} CPUs = "
        f"{children_cpu_s() / (os.cpu_count() or 1):.0f} s on an idle machine); "
        f"peak RSS of a worker {children_peak_mib():.0f} MiB"
    )


def run_big() -> None:
    elapsed, peak = measure("study", 100_000, 365.0)
    print(
        f"  100,000 devices x 365 d (notebook-02 fleet, 7 d tokens): {elapsed:.0f} s, "
        f"peak RSS {peak:.0f} MiB (target < 2048 MiB)"
    )


def scenario(devices: int, days: float) -> Scenario:
    """Default connectivity (on ~6 h, off ~20 min), 1-day tokens, a message every 5 min."""
    return Scenario(
        fleet_size=devices,
        duration_days=days,
        token=TokenPolicy(lifetime=LIFETIME),
        messages=Messages(rate_per_hour=12),
    )


def naive(devices: int, days: float, seed: int = 0, messages: bool = True) -> dict[str, float]:
    """The reference: a simpy process per device, an event per on/off change, refresh
    and message (into a bounded outbox, flushed at reconnect), approvals through a
    simpy resource."""
    s = scenario(devices, days)
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    technicians = simpy.Resource(env, capacity=s.provisioning.technicians)
    horizon = s.duration
    on_mean, off_mean = s.connectivity.on.mean, s.connectivity.off.mean
    f_l = LIFETIME * s.token.refresh_fraction
    stats: dict[str, float] = {"lockouts": 0, "refreshes": 0, "messages": 0, "lost": 0}
    gap = 3600.0 / s.messages.rate_per_hour
    capacity = s.messages.outbox_capacity

    with_messages = messages

    def message_source(state: dict[str, Any]) -> Any:
        while True:
            yield env.timeout(rng.exponential(gap))
            stats["messages"] += 1
            if not state["online"]:
                if state["outbox"] < capacity:
                    state["outbox"] += 1
                else:
                    stats["lost"] += 1

    def device() -> Any:
        state = {"online": True, "outbox": 0}
        if with_messages:
            env.process(message_source(state))
        issued = env.now
        while True:
            end_on = env.now + rng.exponential(on_mean)
            while issued + f_l < end_on:  # refresh at f*L while online
                yield env.timeout(max(0.0, issued + f_l - env.now))
                issued = env.now
                stats["refreshes"] += 1
            yield env.timeout(max(0.0, end_on - env.now))
            state["online"] = False
            yield env.timeout(rng.exponential(off_mean))
            state["online"], state["outbox"] = True, 0
            if env.now - issued >= LIFETIME:  # locked out: a technician approves
                stats["lockouts"] += 1
                with technicians.request() as turn:
                    yield turn
                    yield env.timeout(rng.exponential(s.provisioning.approval_time.mean))
                issued = env.now
            elif env.now - issued >= f_l:
                issued = env.now
                stats["refreshes"] += 1

    for _ in range(devices):
        env.process(device())
    env.run(until=horizon)
    return stats


def _measure(kind: str, devices: int, days: float, queue: Any) -> None:
    start = time.perf_counter()
    if kind.startswith("naive"):
        naive(devices, days, messages=kind == "naive")
    elif kind == "study":
        simulate(study_fleet(devices, days))
    else:
        simulate(scenario(devices, days))
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    queue.put((elapsed, peak))


def measure(kind: str, devices: int, days: float) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, devices, days, queue))
    proc.start()
    elapsed, peak = queue.get()
    proc.join()
    return float(elapsed), float(peak)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--study", action="store_true", help="the notebook-02 study only")
    parser.add_argument("--big", action="store_true", help="100,000 devices x 365 d only")
    args = parser.parse_args()
    if args.study or args.big:
        if args.study:
            run_study()
        if args.big:
            run_big()
        return 0
    print("device-days per wall-clock second (30 simulated days unless noted)")
    naive_rates = {}
    for devices, days in ((1_000, 7.0), (5_000, 7.0)):
        elapsed, peak = measure("naive", devices, days)
        naive_rates[devices] = devices * days / elapsed
        print(
            f"  naive simpy  {devices:>7} devices x {days:>4g} d: {elapsed:7.2f} s  "
            f"{naive_rates[devices]:>12,.0f} device-days/s  peak {peak:6.0f} MiB"
        )
    # for transparency: the naive model without message events (it then cannot say
    # anything about backlog, loss or latency)
    elapsed, _ = measure("naive-lite", 10_000, 7.0)
    print(
        f"  (naive simpy without message events, 10000 devices x 7 d: {elapsed:.2f} s, "
        f"{10_000 * 7 / elapsed:,.0f} device-days/s)"
    )
    sizes = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    for devices in sizes:
        elapsed, peak = measure("model", devices, 30.0)
        rate = devices * 30 / elapsed
        ref = naive_rates[min(naive_rates, key=lambda n: abs(n - devices))]
        print(
            f"  iiotsim.sim  {devices:>7} devices x   30 d: {elapsed:7.2f} s  "
            f"{rate:>12,.0f} device-days/s  peak {peak:6.0f} MiB  ({rate / ref:,.0f}x naive)"
        )
    if not args.quick:
        lifetimes = [
            3600.0 * h
            for h in (1, 2, 4, 6, 8, 12, 18, 24, 36, 48, 72, 96, 120, 168, 240, 336, 504, 720, 1440)
        ] + [None]
        base = Scenario(fleet_size=10_000, duration_days=365)
        start = time.perf_counter()
        frame = sweep(base, token__lifetime=lifetimes, progress=False)
        elapsed = time.perf_counter() - start
        print(
            f"  sweep: {len(frame)} lifetimes x 10,000 devices x 365 d in {elapsed:.0f} s "
            f"({len(frame) * 10_000 * 365 / elapsed:,.0f} device-days/s over 2 processes; target 300 s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
