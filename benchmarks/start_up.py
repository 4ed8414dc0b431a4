"""The start-up artefact and the steady start's approximation (issue 11, item 8).

A fleet on notebook 02's connectivity (on exp 12 h, off lognormal 2 h, sigma 1.5; 2,000
devices, technicians always free), tokens refreshed at half their lifetime. For each
lifetime it prints the hourly refresh rate's peak/mean over hours 1-96 for
``start="fresh"`` (every device online with a new token at t=0) and ``"steady"``, and,
to measure the steady start's approximation, the lockout rate, refresh rate, online and
awaiting-approval shares of a steady run's first 2 days and 20 days beside those of a
fresh run over days 10-30 (a 10-day warm-up discarded) and of a fresh run's first 2 days.

    .venv/bin/python benchmarks/start_up.py
"""

from __future__ import annotations

from iiotsim.sim import (
    DAY,
    HOUR,
    Connectivity,
    Distribution,
    Leaks,
    Provisioning,
    Scenario,
    SimulationResult,
    TokenPolicy,
    simulate,
)

FLEET = 2000


def scenario(lifetime: float, start: str, days: float) -> Scenario:
    return Scenario(
        fleet_size=FLEET,
        duration_days=days,
        connectivity=Connectivity(
            on=Distribution.exponential(12 * HOUR), off=Distribution.lognormal(2 * HOUR, 1.5)
        ),
        token=TokenPolicy(lifetime=lifetime, refresh_fraction=0.5),
        provisioning=Provisioning(
            technicians=10_000, approval_time=Distribution.fixed(600), working_hours=None
        ),
        leaks=Leaks(registration_tokens=0, exposure_relative_se=None),
        start=start,  # type: ignore[arg-type]
        seed=1,
    )


def window(r: SimulationResult, from_h: float, to_h: float) -> dict[str, float]:
    tl = r.timeline.loc[from_h : to_h - 1e-9]
    ev = r.events
    inside = (ev["kind"] == "lockout") & (ev["time"] >= from_h * HOUR) & (ev["time"] < to_h * HOUR)
    device_days = (to_h - from_h) / 24 * FLEET
    return {
        "lockouts/1000 dd": 1000 * int(inside.sum()) / device_days,
        "refresh/s": float(tl["refresh_per_s"].mean()),
        "online": float(tl["online"].mean() / FLEET),
        "awaiting": float(tl["awaiting_approval"].mean() / FLEET),
    }


def peak_over_mean(r: SimulationResult) -> float:
    x = r.timeline["refresh_per_s"].loc[1 : 96 - 1e-9]
    return float(x.max() / x.mean())


def main() -> None:
    for lifetime in (6 * HOUR, DAY, 3 * DAY):
        fresh = simulate(scenario(lifetime, "fresh", 30))
        steady = simulate(scenario(lifetime, "steady", 20))
        print(
            f"lifetime {lifetime / HOUR:g} h: refresh peak/mean (hours 1-96) "
            f"fresh {peak_over_mean(fresh):.2f}, steady {peak_over_mean(steady):.2f}"
        )
        columns = {
            "steady d0-2": window(steady, 0, 48),
            "steady d0-20": window(steady, 0, 480),
            "fresh d10-30": window(fresh, 240, 720),
            "fresh d0-2": window(fresh, 0, 48),
        }
        print("  " + " | ".join(f"{name:>13}" for name in ["", *columns]))
        for metric in columns["steady d0-2"]:
            cells = " | ".join(f"{c[metric]:13.4f}" for c in columns.values())
            print(f"  {metric[:13]:>13} | {cells}")


if __name__ == "__main__":
    main()
