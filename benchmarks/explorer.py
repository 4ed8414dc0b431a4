"""Policy explorer responsiveness: how long after a person moves a control the explorer
answers (the policy shown, its numbers and plots), and how long until the trade-off's
band of lifetimes is complete (run in the background), on notebook 02's fleet.

Before issue 11's change the explorer re-ran the whole band before answering: that time
is printed too ("whole band first", what ``explorer.set`` from code still does).

Measured 2026-11-26 on the shared 2-core machine under a load average of ~3.5 (other
jobs running), 200 devices x 30 days, 8 lifetimes: the explorer answers a change of
technicians, outage mean, refresh point, outage kind or shape in 0.73-0.88 s and a
lifetime in 0.85 s (drawing only); the band completes 4.3-6.8 s after the change; running
the whole band first took 3.9-6.8 s.

    .venv/bin/python benchmarks/explorer.py            # notebook 02's fleet: 200 x 30 d
    .venv/bin/python benchmarks/explorer.py --devices 300 --days 30
"""

from __future__ import annotations

import argparse
import time

from iiotsim.sim import Connectivity, Distribution, Scenario
from iiotsim.widgets import PolicyExplorer

CHANGES = [
    ("technicians", 1),
    ("off_mean_hours", 4.0),
    ("refresh_fraction", 0.25),
    ("off_kind", "weibull"),
    ("off_shape", 0.7),
    ("lifetime_hours", 24.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--days", type=float, default=30)
    args = parser.parse_args()
    fleet = Scenario(
        fleet_size=args.devices,
        duration_days=args.days,
        connectivity=Connectivity(
            on=Distribution.exponential(12 * 3600), off=Distribution.lognormal(2 * 3600, 1.5)
        ),
        seed=2026,
    )
    started = time.perf_counter()
    explorer = PolicyExplorer(fleet)
    print(f"{args.devices} devices x {args.days:g} days, {len(explorer.lifetimes_hours)} "
          f"lifetimes in the band; built in {time.perf_counter() - started:.2f} s")  # fmt: skip
    print(f"{'control':<18}{'answer s':>10}{'band done s':>13}{'whole band first s':>20}")
    for key, value in CHANGES:
        started = time.perf_counter()
        explorer.controls[key].value = value  # what a person's click does
        answered = time.perf_counter() - started
        explorer.wait_for_band(600)
        band = time.perf_counter() - started
        # the old behaviour, for comparison: a fresh explorer cache, the band run first
        explorer._cache.clear()
        started = time.perf_counter()
        explorer.run()
        whole = time.perf_counter() - started
        print(f"{key:<18}{answered:>10.2f}{band:>13.2f}{whole:>20.2f}")


if __name__ == "__main__":
    main()
