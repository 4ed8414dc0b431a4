"""Simulator speed: simulated device-days per wall-clock second, beside a naive simpy
model (one process per device, every connectivity change and refresh an event), and a
sweep of 20 lifetimes x 10,000 devices x 365 days.

Each measurement runs in its own process, which also reports its peak memory (RSS).
Targets: >= 20x the naive model's device-days/s; the sweep within 5 minutes.

    .venv/bin/python benchmarks/simulator.py            # everything (a few minutes)
    .venv/bin/python benchmarks/simulator.py --quick    # 1,000 and 10,000 devices only
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from typing import Any

import numpy as np
import simpy

from iiotsim.sim import DAY, Messages, Scenario, TokenPolicy, simulate, sweep

LIFETIME = DAY


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
    stats = {"lockouts": 0, "refreshes": 0, "messages": 0, "lost": 0}
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
    result = queue.get()
    proc.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
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
