"""Write ``fleet_intervals.csv``: SYNTHETIC observed online/offline periods of a fleet of
40 cellular pump controllers over 14 days, for the "fit your fleet's own data" section of
notebook 02 (``iiotsim.sim.fit_connectivity``). No real device produced these rows.

How it is made (seed 20260302, so the file is reproducible byte for byte):

- each device alternates online and offline from two days before the window (a warm-up,
  so the window starts mid-cycle rather than with every device freshly online);
- online periods: Weibull, mean 5 h, shape 0.7 (many short sessions, a few long ones);
- offline periods: lognormal, mean 25 min, sigma 1.3, lengthened at night by the
  simulator's own diurnal rule ``off * (1 + 0.5 cos(2 pi (h - 3) / 24))`` (h = hour of
  day UTC when the period starts: coverage and power saving are worst around 03:00);
- the observation window is 2026-03-02 00:00 to 2026-03-16 00:00 UTC: periods that
  began before it are left out (the platform's records start at a connect), the period
  still open at its end is cut there and marked ``censored`` (as
  ``iiotsim.sim.connection_intervals(..., until=...)`` marks it).

Columns: ``device_id``, ``state`` (online/offline), ``start``, ``end`` (ISO 8601 UTC),
``duration_s``, ``censored``. Run from the repository root::

    .venv/bin/python notebooks/data/make_fleet_intervals.py
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from iiotsim.sim import DAY, HOUR, Distribution
from iiotsim.sim.distributions import sample

SEED = 20260302
DEVICES = 40
WINDOW_DAYS = 14
WARM_UP = 2 * DAY
ONLINE = Distribution.weibull(5 * HOUR, 0.7)
OFFLINE = Distribution.lognormal(25 * 60.0, 1.3)
DIURNAL_AMPLITUDE = 0.5
DIURNAL_PEAK_HOUR = 3.0
WINDOW_START = pd.Timestamp("2026-03-02T00:00:00Z")
OUTPUT = Path(__file__).with_name("fleet_intervals.csv")


def intervals(rng: np.random.Generator) -> pd.DataFrame:
    """Seconds since the window start (a midnight UTC, so ``t % DAY`` is the time of day)."""
    end = WINDOW_DAYS * DAY
    rows: list[tuple[str, str, float, float, bool]] = []
    for number in range(1, DEVICES + 1):
        device_id = f"pump-{number:04d}"
        t = -WARM_UP + float(rng.uniform(0, 6 * HOUR))
        state = "online"
        while t < end:
            if state == "online":
                duration = float(sample(ONLINE, rng, 1)[0])
            else:
                phase = 2 * math.pi * ((t % DAY) / DAY - DIURNAL_PEAK_HOUR / 24)
                duration = float(sample(OFFLINE, rng, 1)[0])
                duration *= 1 + DIURNAL_AMPLITUDE * math.cos(phase)
            if t >= 0:
                stop = min(t + duration, end)
                rows.append((device_id, state, t, stop, t + duration > end))
            t += duration
            state = "offline" if state == "online" else "online"
    frame = pd.DataFrame(rows, columns=["device_id", "state", "start_s", "end_s", "censored"])
    frame["duration_s"] = (frame["end_s"] - frame["start_s"]).round(1)
    frame["start"] = WINDOW_START + pd.to_timedelta(frame["start_s"], unit="s")
    frame["end"] = WINDOW_START + pd.to_timedelta(frame["end_s"], unit="s")
    frame = frame[frame["duration_s"] > 0]
    return frame[["device_id", "state", "start", "end", "duration_s", "censored"]]


def main() -> None:
    frame = intervals(np.random.default_rng(SEED))
    frame.to_csv(OUTPUT, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"{len(frame)} intervals of {frame['device_id'].nunique()} devices -> {OUTPUT}")


if __name__ == "__main__":
    main()
