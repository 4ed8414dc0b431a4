"""Writes the notebooks from their cell sources, outputs stripped. Run after editing:

    .venv/bin/python notebooks/tools/build.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parents[1]
KERNEL = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def md(text: str) -> nbf.NotebookNode:
    return nbf.v4.new_markdown_cell(text.strip())


def code(text: str, parameters: bool = False) -> nbf.NotebookNode:
    cell = nbf.v4.new_code_cell(text.strip())
    if parameters:
        cell.metadata["tags"] = ["parameters"]
    return cell


def write(name: str, cells: list[nbf.NotebookNode]) -> None:
    """Write one notebook. Cell ids are the notebook's name and the cell's position
    (nbformat 4.5: 1-64 of ``[a-zA-Z0-9-_]``), not nbformat's random ones, so a rebuild
    that changes no cell rewrites no notebook."""
    nb = nbf.v4.new_notebook()
    stem = Path(name).stem[:56]
    for index, cell in enumerate(cells):
        cell.id = f"{stem}-{index:03d}"
    nb.cells = cells
    nb.metadata = KERNEL
    nbf.write(nb, HERE / name)


POLICIES = [
    md("""
# 2. Token lifetime and refresh point

A fleet of pumps on cellular links: usually online for about half a day, then out of
coverage for a lognormal while (median under an hour, a long tail of multi-day outages
when a site loses power). Which Registration Token **lifetime** and **refresh point**
(the fraction of the lifetime after which a device refreshes its token) keep them
working without giving a leaked token a long life, and how sure are we?

The **policy explorer** re-runs the simulator as you move its controls. Below it, a
**sweep** over lifetime × refresh point with repetitions gives each policy's lockouts and
leaked-token exposure with 95 % confidence intervals, and the recommendation: the policy
with the shortest exposure whose lockouts meet the operations team's target.

Sizes: CI runs 200 devices × 30 days × 4 repetitions (24 policies, 96 runs: about 25 s of
simulation on 2 idle cores, the whole notebook under a minute). For a real answer raise
`FLEET`, `DAYS` and `REPETITIONS`: intervals narrow with the square root of the
device-days, so the full study (10,000 devices × 365 days × 5 repetitions) narrows them
about 25-fold.
"""),
    code("""
# Parameters (small fleet so CI runs fast; raise FLEET, DAYS and REPETITIONS for real answers)
FLEET = 200
DAYS = 30
LIFETIMES_H = [1, 6, 24, 72, 168, 720, 2160, None]   # None = infinite
REFRESH_FRACTIONS = [0.25, 0.5, 0.75]
REPETITIONS = 4
CONFIDENCE = 0.95
TARGET_LOCKOUTS = 1.0   # per 1,000 device-days: what the operations team accepts
""", parameters=True),
    code("""
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from scipy import stats

from iiotsim.sim import (Connectivity, Distribution, Scenario, compare_policies, plots,
                         simulate, summarize_sweep, sweep)
from iiotsim.sim.plots import duration
from iiotsim.widgets import PolicyExplorer

fleet = Scenario(
    fleet_size=FLEET,
    duration_days=DAYS,
    connectivity=Connectivity(on=Distribution.exponential(12 * 3600),
                              off=Distribution.lognormal(2 * 3600, 1.5)),
    seed=2026,
)
fleet.connectivity
"""),
    md("""
## The policy explorer

Lifetimes from the values architects use (1 h … 90 d, infinite), the refresh point, the
outage distribution and the technicians. It runs this notebook's scenario unchanged except
what its controls set, so its numbers are the sweep's (first repetition) below.
"""),
    code("""
explorer = PolicyExplorer(fleet)
explorer
"""),
    code("""
short = explorer.set(lifetime_hours=1, technicians=1)
long = explorer.set(lifetime_hours=720, technicians=1)
day = explorer.set(lifetime_hours=24, technicians=fleet.provisioning.technicians)
"""),
    code("""
assert short.summary["lockouts_per_1000_device_days"] > long.summary["lockouts_per_1000_device_days"]
# the explorer's numbers are simulate()'s for this notebook's scenario with that lifetime
expected = simulate(fleet.replace(**{"token.lifetime": 86400.0})).summary
pd.testing.assert_series_equal(day.summary, expected)
assert explorer.controls["lifetime_hours"].label == "1 d"
"""),
    md("""
## A sweep over lifetime × refresh point

Repetition *r* runs every policy on the same connectivity draws (seed `2026 + r`: common
random numbers), so two policies are compared on the same weather. Intervals: Student t
over the repetitions (`summarize_sweep`), shown as mean [low, high] with the lower bound
clipped at 0 (none of these quantities can be negative).
"""),
    code("""
METRICS = ["lockouts_per_1000_device_days", "rt_leak_exposure_mean_h",
           "refreshes_per_device_day", "lockout_recovery_p95_h"]
grid = sweep(fleet, token__lifetime=[h * 3600 if h else None for h in LIFETIMES_H],
             token__refresh_fraction=REFRESH_FRACTIONS, repetitions=REPETITIONS,
             processes=2, progress=False)
summary = summarize_sweep(grid, METRICS, confidence=CONFIDENCE)

def policy_name(lifetime, fraction):
    lifetime = None if pd.isna(lifetime) else float(lifetime)
    return f"{duration(lifetime)} @ {fraction:g}"

def with_interval(stat):   # every metric here is >= 0: a t-interval's lower bound is clipped at 0
    return f"{stat['mean']:.3g} [{max(stat['low'], 0):.3g}, {stat['high']:.3g}]"

table = pd.DataFrame(
    {m: [with_interval(summary.loc[p, m]) for p in summary.index] for m in METRICS},
    index=[policy_name(*p) for p in summary.index],
)
table.columns = ["lockouts / 1,000 device-days", "leaked-token exposure (h)",
                 "refreshes / device-day", "recovery p95 (h)"]
table
"""),
    code("""
fig, axes = plt.subplots(2, 1, figsize=(11, 6.5))
plots.policy_heatmap(summary, "lockouts_per_1000_device_days", log=True, ax=axes[0])
plots.policy_heatmap(summary, "rt_leak_exposure_mean_h", ax=axes[1])
axes[0].set_title("Lockouts per 1,000 device-days (mean ± 95 % half-width)")
axes[1].set_title("Leaked-token exposure, mean hours (mean ± 95 % half-width)")
fig.tight_layout()
"""),
    code("""
means = summary.xs("mean", axis=1, level="statistic")
for fraction in REFRESH_FRACTIONS:
    at = means.xs(fraction, level="token.refresh_fraction")
    finite = at[at.index.notna()]
    week = finite.loc[: 7 * 86400]
    assert np.all(np.diff(week["rt_leak_exposure_mean_h"]) > 0)      # longer tokens live longer...
    assert finite.loc[86400, "lockouts_per_1000_device_days"] > finite.loc[7 * 86400, "lockouts_per_1000_device_days"]
    assert at.loc[np.nan, "lockouts_per_1000_device_days"] == 0        # ...and never expire
# refreshing earlier beats refreshing at half the lifetime on both axes at 3 d (paired, CRN)
early = compare_policies(grid, {"token.lifetime": 3 * 86400, "token.refresh_fraction": 0.5},
                         {"token.lifetime": 3 * 86400, "token.refresh_fraction": 0.25},
                         ["lockouts_per_1000_device_days", "rt_leak_exposure_mean_h"],
                         confidence=CONFIDENCE)
assert early.loc["rt_leak_exposure_mean_h", "high"] < 0
assert early.loc["lockouts_per_1000_device_days", "difference"] < 0
# the explorer (same scenario, same seed) shows the sweep's first repetition, lifetime by lifetime
def by_lifetime(frame):
    return frame.set_index(frame["token.lifetime"].fillna(np.inf))["lockouts_per_1000_device_days"]
shown = by_lifetime(explorer.sweep)
first = grid[(grid["repetition"] == 0)
             & (grid["token.refresh_fraction"] == explorer.controls["refresh_fraction"].value)]
assert np.array_equal(shown.to_numpy(), by_lifetime(first).loc[shown.index].to_numpy())
early
"""),
    md("""
## Recommendation

Among the policies whose lockout interval lies wholly under the target (its upper bound
at most `TARGET_LOCKOUTS`), the one with the shortest mean leaked-token exposure: it
bounds a leaked token's life as tightly as the fleet's connectivity allows.
"""),
    code("""
lockouts = summary["lockouts_per_1000_device_days"]
exposure = summary["rt_leak_exposure_mean_h"]
meets = lockouts["high"] <= TARGET_LOCKOUTS
assert meets.any(), "no policy meets the target: raise the lifetime range or the target"
ranked = exposure.loc[meets].sort_values("mean")
pick_lifetime, pick_fraction = ranked.index[0]
pick_fraction = float(pick_fraction)
runner_up = ranked.index[1] if len(ranked) > 1 else None
pick_seconds = None if pd.isna(pick_lifetime) else float(pick_lifetime)
pick = {"token.lifetime": pick_seconds, "token.refresh_fraction": pick_fraction}
lo, ex = lockouts.loc[(pick_lifetime, pick_fraction)], exposure.loc[(pick_lifetime, pick_fraction)]
refresh_after = "" if pick_seconds is None else f" (after {duration(pick_seconds * pick_fraction)})"
print(f"Recommended: lifetime {duration(pick_seconds)}, refresh at {pick_fraction:g} of the lifetime{refresh_after}")
print(f"  lockouts {lo['mean']:.2f} per 1,000 device-days, {CONFIDENCE:.0%} CI [{max(lo['low'], 0):.2f}, {lo['high']:.2f}]"
      f" (target {TARGET_LOCKOUTS:g})")
print(f"  leaked-token exposure {ex['mean']:.1f} h, {CONFIDENCE:.0%} CI [{ex['low']:.1f} h, {ex['high']:.1f} h]")
if runner_up is not None:
    versus = compare_policies(grid, {"token.lifetime": None if pd.isna(runner_up[0]) else float(runner_up[0]),
                                     "token.refresh_fraction": float(runner_up[1])}, pick,
                              "rt_leak_exposure_mean_h", confidence=CONFIDENCE).iloc[0]
    print(f"  next best meeting the target: {policy_name(*runner_up)}; exposure difference "
          f"{versus['difference']:+.1f} h, {CONFIDENCE:.0%} CI [{versus['low']:+.1f} h, {versus['high']:+.1f} h] (paired)")
"""),
    code("""
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
plots.lifetime_tradeoff(summary, "lockouts_per_1000_device_days", target=TARGET_LOCKOUTS,
                        highlight=(pick_fraction, pick_seconds), ax=axes[0])
axes[0].set_yscale("symlog", linthresh=1.0)
axes[0].set_ylim(bottom=0)
axes[0].set_title("Lockouts (95 % intervals) and the operations team's target")
plots.lifetime_tradeoff(summary, "rt_leak_exposure_mean_h", highlight=(pick_fraction, pick_seconds), ax=axes[1])
axes[1].set_ylabel("leaked-token exposure, mean h")
axes[1].set_title(f"Recommended: {duration(pick_seconds)}, refresh at {pick_fraction:g}")
fig.tight_layout()
"""),
    code("""
# Independent checks of the recommendation, from the raw runs (not summarize_sweep):
runs = grid[(grid["token.refresh_fraction"] == pick_fraction)
            & (grid["token.lifetime"].isna() if pick_seconds is None else grid["token.lifetime"] == pick_seconds)]
assert len(runs) == REPETITIONS
# 1. it meets the target: the Student-t upper bound, and an exact Poisson bound on the pooled lockouts
x = runs["lockouts_per_1000_device_days"].to_numpy()
t_high = x.mean() + stats.t.ppf(0.5 + CONFIDENCE / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
assert t_high <= TARGET_LOCKOUTS and np.isclose(t_high, lo["high"])
poisson_high = stats.chi2.ppf(0.5 + CONFIDENCE / 2, 2 * runs["lockouts"].sum() + 2) / 2
assert 1000 * poisson_high / runs["device_days"].sum() <= TARGET_LOCKOUTS
# 2. no other policy with a shorter exposure meets the target
def is_pick(lifetime, fraction):
    return (pd.isna(lifetime) if pick_seconds is None else lifetime == pick_seconds) and fraction == pick_fraction
exposures = grid.groupby(["token.lifetime", "token.refresh_fraction"], dropna=False)["rt_leak_exposure_mean_h"].mean()
for policy, mean in exposures.items():
    if not is_pick(*policy) and mean < exposures[[is_pick(*q) for q in exposures.index]].iloc[0]:
        assert lockouts.loc[policy, "high"] > TARGET_LOCKOUTS, policy
# 3. fresh repetitions (seeds not used above) agree with the stated intervals
fresh = sweep(fleet.replace(seed=fleet.seed + 1000), token__lifetime=[pick_seconds],
              token__refresh_fraction=[pick_fraction], repetitions=REPETITIONS, processes=1, progress=False)
again = summarize_sweep(fresh, ["lockouts_per_1000_device_days", "rt_leak_exposure_mean_h"], confidence=CONFIDENCE).iloc[0]
for metric, stated in (("lockouts_per_1000_device_days", lo), ("rt_leak_exposure_mean_h", ex)):
    combined = np.hypot(stated["half_width"], again[(metric, "half_width")])
    assert abs(again[(metric, "mean")] - stated["mean"]) <= combined, (metric, again[(metric, "mean")], stated["mean"])
assert again[("lockouts_per_1000_device_days", "mean")] <= TARGET_LOCKOUTS
"""),
]

STORMS = [
    md("""
# 4. Outages and reconnect storms

A 30-minute broker outage disconnects the whole fleet. When the broker is back, every
device reconnects with its back-off policy, and the broker admits a limited number of
connections per second. How long until everyone is back, and what does the broker see?
"""),
    code("""
FLEET = 2000
OUTAGE_S = 1800
CAPACITY = 5           # connections per second a small broker admits
""", parameters=True),
    code("""
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

from iiotsim.sim import Backoff, Outage, Outages, Scenario, simulate
from iiotsim.sim.storm import simulate_storm

policies = {
    "fixed 1 s (no back-off)": Backoff(kind="fixed", base=1),
    "exponential, no jitter": Backoff(kind="exponential", base=1, cap=300),
    "exponential, full jitter": Backoff(kind="full_jitter", base=1, cap=300),
    "full jitter, reset at every connect": Backoff(kind="full_jitter", base=1, cap=300, reset="connect"),
}
storms = {name: simulate_storm(FLEET, OUTAGE_S, b, np.random.default_rng(1), CAPACITY)
          for name, b in policies.items()}
rows = []
for name, st in storms.items():
    after = st.attempt_times[st.attempt_times >= OUTAGE_S]
    per_second = np.bincount((after - OUTAGE_S).astype(int)) if len(after) else np.zeros(1)
    rows.append({"policy": name, "all back after s": st.delays.max(),
                 "attempts after outage": len(after), "peak attempts/s": per_second.max()})
storm_table = pd.DataFrame(rows).set_index("policy")
storm_table
"""),
    code("""
fig, ax = plt.subplots(figsize=(9, 4))
for name, st in storms.items():
    t = st.attempt_times[(st.attempt_times >= OUTAGE_S - 60) & (st.attempt_times < OUTAGE_S + 600)]
    counts = np.bincount((t - (OUTAGE_S - 60)).astype(int), minlength=660)
    ax.plot(np.arange(len(counts)) - 60, counts, label=name)
ax.axhline(CAPACITY, color="grey", ls=":", label="broker capacity")
ax.set_yscale("symlog"); ax.set_xlabel("seconds after the outage ends"); ax.set_ylabel("connection attempts/s")
ax.legend(fontsize=8);
"""),
    code("""
fixed = storm_table.loc["fixed 1 s (no back-off)"]
jitter = storm_table.loc["exponential, full jitter"]
no_jitter = storm_table.loc["exponential, no jitter"]
reset = storm_table.loc["full jitter, reset at every connect"]
assert jitter["peak attempts/s"] < no_jitter["peak attempts/s"]   # jitter spreads the herd
assert jitter["attempts after outage"] < fixed["attempts after outage"]
assert no_jitter["all back after s"] > 10 * jitter["all back after s"]   # lock-step retries
assert reset["peak attempts/s"] > 2 * jitter["peak attempts/s"]   # the pitfall: back to base delay
assert reset["attempts after outage"] > jitter["attempts after outage"]
assert jitter["all back after s"] >= FLEET / CAPACITY - 1
"""),
    md("## The same outage inside a fleet simulation"),
    code("""
outage = Outages(scheduled=(Outage(start=2 * 86400, duration=OUTAGE_S),), broker_connects_per_second=CAPACITY)
base = Scenario(fleet_size=FLEET // 4, duration_days=4, outages=outage, timeline_resolution=60, seed=4)
results = {name: simulate(base.replace(backoff=b)) for name, b in list(policies.items())[1:3]}
fig, ax = plt.subplots(figsize=(9, 4))
for name, r in results.items():
    window = r.timeline.loc[47.5:60.0]
    ax.plot(window.index, window["online"], label=name)
ax.set_xlabel("hours"); ax.set_ylabel("devices online"); ax.legend(fontsize=8);
"""),
    code("""
def recovery_hours(r, start_h=48 + OUTAGE_S / 3600):
    before = r.timeline.loc[40:47.5, "online"].mean()
    after = r.timeline.loc[start_h:]
    back = after[after["online"] >= 0.95 * before]
    return (back.index[0] - start_h) if len(back) else float("inf")

recovery = {name: recovery_hours(r) for name, r in results.items()}
recovery
"""),
    code("""
assert recovery["exponential, full jitter"] < recovery["exponential, no jitter"]
"""),
]

SECURITY = [
    md("""
# 5. Security incidents

Three incidents on the real embedded platform, and what the simulator says about their cost:

1. a **leaked Provisioning Token**: approval stops it;
2. a **leaked Registration Token**: revocation ends it; its exposure window depends on the lifetime;
3. **duplicate Device IDs**: two devices fighting over one connection, recorded as takeovers.
"""),
    code("""
LIFETIMES_H = [1, 24, 168]
FLEET = 200
""", parameters=True),
    code("""
import threading
import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from iiot_device import DeviceClient, ProvisioningOperationCancelled
from iiotsim import Platform
from iiotsim.widgets import ApprovalPanel

platform = Platform().start()
token = platform.admin.create_provisioning_token("line-4", max_registration_token_lifetime=86400)
panel = ApprovalPanel(platform.admin, auto_refresh=False)
device = DeviceClient.start(token.provisioning_token, platform.data_dir / "pump.db",
                            server_url=platform.http_url, device_id="pump-0100",
                            on_provisioning_operation=lambda op: panel.approve(op.verification_code))
device.device_id
"""),
    md("## 1. A leaked Provisioning Token: approval stops it"),
    code("""
rogue_ops = []
def rogue():
    try:
        DeviceClient.start(token.provisioning_token, platform.data_dir / "rogue.db",
                           server_url=platform.http_url, device_id="pump-0666",
                           on_provisioning_operation=rogue_ops.append, provisioning_attempts=1)
    except ProvisioningOperationCancelled as exc:
        rogue_ops.append(exc)

attacker = threading.Thread(target=rogue); attacker.start()
while not rogue_ops: threading.Event().wait(0.05)
panel.refresh()
panel   # the technician sees an operation nobody expected...
"""),
    code("""
panel.cancel(rogue_ops[0].verification_code)   # ...and cancels it
attacker.join(30)
assert isinstance(rogue_ops[-1], ProvisioningOperationCancelled)
platform.admin.revoke_provisioning_token(token.id)   # and the leaked PT is revoked
refused = httpx.post(f"{platform.http_url}/provisioning-operations/init", json={"deviceId": "pump-0667"},
                     headers={"Authorization": f"DeviceToken {token.provisioning_token}"})
assert refused.status_code == 401
[d.device_id for d in platform.admin.list_devices()]
"""),
    code("""
assert sorted(d.device_id for d in platform.admin.list_devices()) == ["pump-0100"]
"""),
    md("## 2. A leaked Registration Token: revoke it"),
    code("""
import sqlite3, json
# someone pulls the pump's flash: its local database holds the Registration Token
device.close()
with sqlite3.connect(platform.data_dir / "pump.db") as db:
    leaked_rt = json.loads(db.execute("select value from state where key='rt'").fetchone()[0])["token"]
def upload(rt):
    return httpx.post(f"{platform.http_url}/devices/messages", params={"stream": "x"}, content=b"forged",
                      headers={"Authorization": f"DeviceToken {rt}"}).status_code
before = upload(leaked_rt)
platform.admin.revoke_device("pump-0100")
after = upload(leaked_rt)
before, after
"""),
    code("""
assert before == 201 and after in (401, 403)
"""),
    code("""
from iiotsim.sim import Scenario, sweep
exposure = sweep(Scenario(fleet_size=FLEET, duration_days=20, seed=5),
                 token__lifetime=[h * 3600 for h in LIFETIMES_H], processes=1, progress=False)
exposure[["token.lifetime", "rt_leak_exposure_mean_h", "rt_leak_exposure_p95_h"]]
"""),
    code("""
assert exposure["rt_leak_exposure_mean_h"].is_monotonic_increasing
"""),
    md("## 3. Duplicate Device IDs fight over one connection"),
    code("""
# A second physical device flashed with the same identity: the same MQTT credentials.
token2 = platform.admin.create_provisioning_token("clone-test")
auth = {"Authorization": f"DeviceToken {token2.provisioning_token}"}
op = httpx.post(f"{platform.http_url}/provisioning-operations/init", json={"deviceId": "pump-0200"}, headers=auth).json()
platform.admin.approve_operation(op["provisioningOperationId"])
rt = httpx.put(f"{platform.http_url}/provisioning-operations/complete",
               json={"provisioningOperationId": op["provisioningOperationId"]}, headers=auth).json()["registrationToken"]
creds = httpx.put(f"{platform.http_url}/devices/register", headers={"Authorization": f"DeviceToken {rt}"}).json()

def twin_device():
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump-0200", protocol=mqtt.MQTTv311)
    c.username_pw_set("pump-0200", creds["mqttPassword"])
    return c

first, second = twin_device(), twin_device()
kicked = threading.Event()
first.on_disconnect = lambda *a: kicked.set()
first.connect(platform.mqtt_host, platform.mqtt_port); first.loop_start()
threading.Event().wait(0.5)
second.connect(platform.mqtt_host, platform.mqtt_port); second.loop_start()
assert kicked.wait(10)
platform.admin.get_device("pump-0200").connection_takeovers
"""),
    code("""
assert platform.admin.get_device("pump-0200").connection_takeovers >= 1
for c in (first, second):
    c.disconnect(); c.loop_stop()
panel.close(); platform.stop()
"""),
]

TWIN = [
    md("""
# 3. Device twin and fleet configurations

Three real devices (the SDK) at two sites. A **fleet configuration** targets devices by tags
and sets desired properties; the devices receive them, apply them and report them back; the
configuration's metrics count targeted and applied devices.
"""),
    code("""
DEVICES = 3
""", parameters=True),
    code("""
import threading
from iiot_device import DeviceClient
from iiotsim import Platform
from iiotsim.widgets import DeviceView

platform = Platform().start()
token = platform.admin.create_provisioning_token("pumps")
devices = {}
def applied(name):
    def on_desired(desired):   # a device applies what it is told and reports it back
        devices[name].update_reported_properties(
            {k: v for k, v in desired.properties.items()} | {"applied_version": desired.version})
    return on_desired

for i in range(DEVICES):
    name = f"pump-{i:04d}"
    devices[name] = DeviceClient.start(token.provisioning_token, platform.data_dir / f"{name}.db",
                                       server_url=platform.http_url, device_id=name,
                                       on_provisioning_operation=lambda op: platform.admin.approve_operation(op.id),
                                       on_desired_properties=applied(name))
for i, name in enumerate(devices):
    platform.admin.update_tags(name, {"site": "hall-3" if i % 2 == 0 else "hall-7"})
sorted(devices)
"""),
    code("""
config = platform.admin.create_fleet_configuration(
    {"eq": {"path": "tags.site", "value": "hall-3"}}, {"interval": 30}, priority=1,
    configuration_id="hall3-slow")
override = platform.admin.create_fleet_configuration(
    {"eq": {"path": "tags.site", "value": "hall-3"}}, {"interval": 5}, priority=9,
    configuration_id="hall3-urgent")
(config.metrics, override.metrics)
"""),
    code("""
def wait(check, timeout=30):
    deadline = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if check(): return True
        deadline.wait(0.05)
    return check()

hall3 = [n for i, n in enumerate(devices) if i % 2 == 0]
assert wait(lambda: all(devices[n].desired_properties.properties.get("interval") == 5 for n in hall3))
assert wait(lambda: platform.admin.get_fleet_configuration("hall3-urgent").metrics.applied == len(hall3))
metrics = platform.admin.get_fleet_configuration("hall3-urgent").metrics
metrics
"""),
    code("""
m = platform.admin.get_fleet_configuration("hall3-urgent").metrics
assert (m.targeted, m.applied) == (len(hall3), len(hall3))
"""),
    code("""
view = DeviceView(platform.admin, "pump-0000")
view
"""),
    code("""
platform.admin.delete_fleet_configuration("hall3-urgent")   # the lower priority takes over
assert wait(lambda: all(devices[n].desired_properties.properties.get("interval") == 30 for n in hall3))
assert "pump-0001" not in hall3 and "interval" not in devices["pump-0001"].desired_properties.properties
"""),
    code("""
for d in devices.values():
    d.close()
platform.stop()
"""),
]

DIGITAL_TWIN = [
    md("""
# 6. Digital twin: real devices beside the simulator's prediction

Fifty **real** device SDK clients run against the **real** embedded platform. Each reaches
the platform through its own loopback TCP proxies, which the **simulator's connectivity
model** opens and closes (a device goes offline by its sockets being closed). Platform,
devices and simulation share one `ManualClock`, so days of token lifetime pass in
seconds; time stands still while any real call is in flight.

The lockouts and token refreshes the platform actually saw are set beside the
simulator's prediction for the same scenario. Tolerances: lockouts per off period within
0.05 absolute, refreshes within 10%.
"""),
    code("""
DEVICES = 50          # at least 50 real devices
DAYS = 1.0
TOLERANCE = 0.05      # |hybrid - simulator| in lockouts per off period
""", parameters=True),
    code("""
import logging
from iiotsim.sim import Connectivity, Distribution, Messages, Provisioning, Scenario, TokenPolicy
from iiotsim.twin import HybridRun

logging.getLogger("iiot_device").setLevel(logging.ERROR)   # offline devices retry by design
scenario = Scenario(
    fleet_size=DEVICES, duration_days=DAYS,
    connectivity=Connectivity(on=Distribution.exponential(4 * 3600), off=Distribution.exponential(2 * 3600)),
    token=TokenPolicy(lifetime=4 * 3600),            # refreshed at 2 h: off periods > 2-4 h lock out
    provisioning=Provisioning(technicians=1000, approval_time=Distribution.fixed(1.0), working_hours=None),
    messages=Messages(rate_per_hour=0),
    seed=3,
)
with HybridRun(scenario) as run:
    result = run.run()
result.comparison
"""),
    code("""
events = result.events
events.groupby("kind").size()
"""),
    code("""
hybrid = result.comparison.loc["lockouts per off period", "hybrid"]
predicted = result.comparison.loc["lockouts per off period", "simulator"]
assert result.off_periods >= DEVICES
assert result.lockouts > 0
assert abs(hybrid - predicted) <= TOLERANCE, (hybrid, predicted)
refreshes = result.comparison.loc["token refreshes"]
assert abs(refreshes["hybrid"] - refreshes["simulator"]) <= 0.1 * refreshes["simulator"]
"""),
]

if __name__ == "__main__":
    write("02_token_lifetime_policies.ipynb", POLICIES)
    write("03_twin_and_fleet_configurations.ipynb", TWIN)
    write("04_outages_and_reconnect_storms.ipynb", STORMS)
    write("05_security_incidents.ipynb", SECURITY)
    write("06_digital_twin.ipynb", DIGITAL_TWIN)
