# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Device twin and fleet configurations
#
# Three real devices (the SDK) at two sites. A **fleet configuration** targets devices by tags
# and sets desired properties; the devices receive them, apply them and report them back; the
# configuration's metrics count targeted and applied devices.

# %% tags=["parameters"]
DEVICES = 3

# %%
import threading
import time

import matplotlib.pyplot as plt
import pandas as pd
from iiot_device import DeviceClient
from iiotsim import Platform
from iiotsim.widgets import DeviceView

platform = Platform().start()
token = platform.admin.create_provisioning_token("pumps")
devices = {}
started = time.monotonic()
applied_log = []   # (seconds since start, device, interval it runs at): for the plot below
actions = []       # (seconds since start, what the platform was told)

def applied(name):
    def on_desired(desired):   # a device applies what it is told and reports it back
        devices[name].update_reported_properties(
            {k: v for k, v in desired.properties.items()} | {"applied_version": desired.version})
        applied_log.append((time.monotonic() - started, name, desired.properties.get("interval")))
    return on_desired

for i in range(DEVICES):
    name = f"pump-{i:04d}"
    devices[name] = DeviceClient.start(token.provisioning_token, platform.data_dir / f"{name}.db",
                                       server_url=platform.http_url, device_id=name,
                                       on_provisioning_operation=lambda op: platform.admin.approve_operation(op.id),
                                       on_desired_properties=applied(name))
for i, name in enumerate(devices):
    platform.admin.update_tags(name, {"site": "hall-3" if i % 2 == 0 else "hall-7"})
print("devices:", ", ".join(sorted(devices)))

# %% [markdown]
# ## Two configurations for one site
#
# Both target the pumps of hall 3; the higher priority wins where they overlap.

# %%
def configurations_table():
    return pd.DataFrame(
        [{"configuration": c.id, "priority": c.priority,
          "sets": ", ".join(f"{k} = {v}" for k, v in c.desired_properties.items()),
          "devices targeted": c.metrics.targeted, "devices applied": c.metrics.applied}
         for c in platform.admin.list_fleet_configurations()]
    ).set_index("configuration")

config = platform.admin.create_fleet_configuration(
    {"eq": {"path": "tags.site", "value": "hall-3"}}, {"interval": 30}, priority=1,
    configuration_id="hall3-slow")
actions.append((time.monotonic() - started, "hall3-slow (priority 1) created"))
override = platform.admin.create_fleet_configuration(
    {"eq": {"path": "tags.site", "value": "hall-3"}}, {"interval": 5}, priority=9,
    configuration_id="hall3-urgent")
actions.append((time.monotonic() - started, "hall3-urgent (priority 9) created"))
configurations_table()


# %%
def wait(check, timeout=30):
    deadline = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if check(): return True
        deadline.wait(0.05)
    return check()

hall3 = [n for i, n in enumerate(devices) if i % 2 == 0]
assert wait(lambda: all(devices[n].desired_properties.properties.get("interval") == 5 for n in hall3))
assert wait(lambda: platform.admin.get_fleet_configuration("hall3-urgent").metrics.applied == len(hall3))
configurations_table()   # the devices have applied it and reported it back

# %%
m = platform.admin.get_fleet_configuration("hall3-urgent").metrics
assert (m.targeted, m.applied) == (len(hall3), len(hall3))

# %% [markdown]
# ## One device's twin
#
# Desired and reported properties, tags, connection state and recent messages of `pump-0000`;
# edit its desired properties or tags with a JSON merge patch and **Patch**. (A static export
# of this notebook shows the widget blank: the plot and table below tell the same story.)

# %%
view = DeviceView(platform.admin, "pump-0000")
view

# %% [markdown]
# ## The lower priority takes over
#
# Deleting the urgent configuration leaves hall 3 to the slow one.

# %%
platform.admin.delete_fleet_configuration("hall3-urgent")   # the lower priority takes over
actions.append((time.monotonic() - started, "hall3-urgent deleted"))
assert wait(lambda: all(devices[n].desired_properties.properties.get("interval") == 30 for n in hall3))
assert "pump-0001" not in hall3 and "interval" not in devices["pump-0001"].desired_properties.properties
assert wait(lambda: all(platform.admin.get_twin(n).reported.properties.get("interval") == 30 for n in hall3))


# %%
def twin_table():
    rows = []
    for name in devices:
        twin = platform.admin.get_twin(name)
        rows.append({
            "device": name, "site": twin.tags.properties.get("site"),
            "desired interval (s)": twin.desired.properties.get("interval"),
            "reported interval (s)": twin.reported.properties.get("interval"),
            "desired version": twin.desired.version,
            "reported: applied version": twin.reported.properties.get("applied_version"),
        })
    table = pd.DataFrame(rows).set_index("device")
    numbers = [c for c in table.columns if c != "site"]
    table[numbers] = table[numbers].astype("Int64")   # whole numbers; none set: blank
    table["in sync"] = (table["desired version"] == table["reported: applied version"]).map(
        {True: "yes", False: "no"})
    return table.astype(object).where(table.notna(), "–")

twin_table()

# %%
end = time.monotonic() - started
log = pd.DataFrame(applied_log, columns=["seconds", "device", "interval"])
first = min(t for t, _ in actions)
fig, axes = plt.subplots(len(devices), 1, figsize=(8, 1.3 + 1.2 * len(devices)), sharex=True)
for ax, (name, client) in zip(axes, devices.items()):
    runs = log[(log["device"] == name) & log["interval"].notna()]
    site = platform.admin.get_twin(name).tags.properties["site"]
    if len(runs):
        ax.step(list(runs["seconds"]) + [end], list(runs["interval"]) + [runs["interval"].iloc[-1]],
                where="post", marker="o", color="tab:blue")
    else:
        ax.text(0.5, 0.5, "targeted by neither configuration: no interval set",
                transform=ax.transAxes, ha="center", va="center", color="dimgrey")
    for t, what in actions:
        ax.axvline(t, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 35)
    ax.set_yticks([5, 30])
    ax.set_ylabel(f"{name}\n{site}", rotation=0, ha="right", va="center")
left = first - 0.1 * (end - first)
for k, (t, what) in enumerate(actions):   # name each platform action once, above the plots
    right_half = t > (left + end) / 2
    axes[0].annotate(what, (t, 35), xytext=(0, 3 + 11 * k), textcoords="offset points",
                     fontsize=8, ha="right" if right_half else "left", va="bottom", color="dimgrey",
                     arrowprops={"arrowstyle": "-", "color": "lightgrey", "linewidth": 0.8})
axes[-1].set_xlim(left, end)
axes[-1].set_xlabel("seconds since the devices started")
fig.suptitle("Interval each device applied (s): hall 3 follows the highest-priority configuration",
             fontsize=10, y=0.02, va="bottom")
fig.tight_layout(rect=(0, 0.06, 1, 1));

# %% [markdown]
# ## A staged rollout, converging over time
#
# A second platform on a **manual clock**, with six more SDK devices that apply a desired
# change only when they check in (each simulated minute, each device with a change waiting
# checks in with probability one half). Firmware `2.0` goes out in three stages: one device,
# then up to 40 % more, then the rest; a stage opens when 80 % of the previous one has
# reported the value back (it would halt if more than 20 % drifted away). The plot counts,
# per stage, the devices admitted and those converged, against the manual clock.

# %%
import random
from datetime import timedelta

from iiotsim.clock import ManualClock

ROLLOUT_DEVICES = 6
rollout_clock = ManualClock()
fleet_platform = Platform(clock=rollout_clock).start()
fleet_token = fleet_platform.admin.create_provisioning_token("line 2")
inbox = {}   # device -> the firmware it was told to run and has not applied yet

def remember(name):
    def on_desired(desired):
        if "fw" in desired.properties:
            inbox[name] = desired.properties["fw"]
    return on_desired

fleet = {}
for i in range(ROLLOUT_DEVICES):
    name = f"press-{i:04d}"
    fleet[name] = DeviceClient.start(
        fleet_token.provisioning_token, fleet_platform.data_dir / f"{name}.db",
        server_url=fleet_platform.http_url, device_id=name,
        on_provisioning_operation=lambda op: fleet_platform.admin.approve_operation(op.id),
        on_desired_properties=remember(name))
    fleet[name].update_reported_properties({"fw": "1.0"})
assert wait(lambda: len(fleet_platform.admin.list_devices()) == ROLLOUT_DEVICES)

FW2_ROLLOUT = {"stages": [{"count": 1}, {"percent": 40}, {"percent": 100}],
               "advanceWhenConverged": 0.8, "haltWhenDrifted": 0.2}
rollout = fleet_platform.admin.create_fleet_configuration(
    {"and": []}, {"fw": "2.0"}, configuration_id="fw-2", rollout=FW2_ROLLOUT)
started_at = rollout_clock.now()
rng = random.Random(7)
samples = []   # (minutes, stage, admitted, converged)

def sample():
    metrics = fleet_platform.admin.get_fleet_configuration("fw-2").metrics
    minutes = (rollout_clock.now() - started_at) / timedelta(minutes=1)
    samples.extend((minutes, s.stage, s.admitted, s.converged) for s in metrics.stages)

sample()
for minute in range(60):
    status = fleet_platform.admin.get_fleet_configuration("fw-2").rollout
    if status.state != "rolling":
        break
    rollout_clock.advance(60)
    checking_in = [n for n in sorted(inbox) if rng.random() < 0.5]
    for name in checking_in:
        fleet[name].update_reported_properties({"fw": inbox.pop(name)})
    assert wait(lambda: all(
        fleet_platform.admin.get_twin(n).convergence["fw"].state == "converged"
        for n in checking_in))
    # a stage that just opened: its devices get the change over MQTT (else: next minute)
    wait(lambda: all(d.device_id in inbox
                     for d in fleet_platform.admin.devices(convergence="pending")), timeout=5)
    sample()

final = fleet_platform.admin.get_fleet_configuration("fw-2")
print(f"rollout {final.rollout.state} after {samples[-1][0]:.0f} simulated minutes;",
      "stages admitted", [s.admitted for s in final.metrics.stages])
# a wrong answer shows here: every targeted device converged, each exactly once in a stage
assert final.rollout.state == "completed"
assert final.metrics.targeted == final.metrics.converged == ROLLOUT_DEVICES
assert [s.admitted for s in final.metrics.stages] == [1, 3, 2]
assert all(fleet_platform.admin.get_twin(n).reported.properties["fw"] == "2.0" for n in fleet)

# %%
curve = pd.DataFrame(samples, columns=["minutes", "stage", "admitted", "converged"])
fig, ax = plt.subplots(figsize=(9, 3.2))
for stage, rows in curve.groupby("stage"):
    colour = f"C{stage}"
    ax.step(rows["minutes"], rows["admitted"], where="post", color=colour, linestyle=":",
            label=f"stage {stage}: admitted")
    ax.step(rows["minutes"], rows["converged"], where="post", color=colour,
            label=f"stage {stage}: converged")
ax.set_xlabel("minutes since the rollout started (manual clock)")
ax.set_ylabel("devices")
ax.set_yticks(range(0, 4))
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
ax.set_title("fw 2.0 in three stages: each opens when 80 % of the previous reported it back",
             fontsize=10)
fig.tight_layout();

# %% [markdown]
# The same plan on **500 simulated devices** (`iiotsim.sim.simulate_rollout`, the platform's
# own stage and advance rules). What differs is when a device can apply the change: each real
# device above checks in each simulated minute with probability one half; a simulated one
# applies it a random delay after its stage opens (exponential, mean 2 minutes) but only while
# its connectivity draw (`draw_fleet`: on about 4 h, off about 2 h, exponential) says it is
# online, so a stage waits for devices that are offline, for hours rather than minutes.

# %%
import math

from iiotsim.sim import HOUR, Connectivity, Distribution, Scenario, rollout_devices, simulate_rollout

patchy = Scenario(fleet_size=500, duration_days=1, seed=3, connectivity=Connectivity(
    on=Distribution.exponential(4 * HOUR), off=Distribution.exponential(2 * HOUR)))
simulated = simulate_rollout(patchy, FW2_ROLLOUT, apply_delay=Distribution.exponential(120.0))
per_device = rollout_devices(patchy, FW2_ROLLOUT, apply_delay=Distribution.exponential(120.0))
done_at = simulated.index[simulated["state"] == "completed"][0] / HOUR
print(f"simulated: {simulated['converged'].iloc[-1]} of 500 converged, rollout completed after "
      f"{done_at:.1f} h; stage sizes {per_device['stage'].value_counts().sort_index().tolist()}")
# a wrong answer shows here: everyone converges (no drift), stages open in order, each when
# 80 % of the previous one's devices converged
assert simulated["converged"].iloc[-1] == simulated["admitted"].iloc[-1] == 500
assert simulated["stage"].is_monotonic_increasing
assert per_device["stage"].value_counts().sort_index().tolist() == [1, 200, 299]
for stage in (1, 2):
    previous = per_device.loc[per_device["stage"] == stage - 1, "converged_at"].sort_values()
    opened = per_device.loc[per_device["stage"] == stage, "admitted_at"]
    assert (opened == previous.iloc[math.ceil(0.8 * len(previous)) - 1]).all()

# %%
real = curve.groupby("minutes")["converged"].sum() / ROLLOUT_DEVICES
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
left.step(real.index, real.values, where="post")
left.set_xlabel("minutes (manual clock)")
left.set_ylabel("share of devices converged")
left.set_title(f"{ROLLOUT_DEVICES} real SDK devices", fontsize=10)
right.step(simulated.index / HOUR, simulated["converged"] / patchy.fleet_size, where="post",
           color="C1")
right.set_xlabel("hours (simulated)")
right.set_title(f"{patchy.fleet_size} simulated devices, patchy connectivity", fontsize=10)
fig.tight_layout();

# %% [markdown]
# ## Still live
#
# The platform, the devices and the view above stay live after *Run All*: patch `pump-0000`'s
# desired properties in the view (or from code, as here) and the device applies and reports them.

# %%
import html

view.set_desired({"mode": "eco"})   # what "Patch desired" does
assert wait(lambda: platform.admin.get_twin("pump-0000").reported.properties.get("mode") == "eco")
view.refresh()
assert html.escape('"mode": "eco"') in view.sections["reported"].value   # the view shows it
twin_table()

# %% [markdown]
# When you are done: `for d in [*devices.values(), *fleet.values()]: d.close()`,
# `platform.stop()` and `fleet_platform.stop()` (shutting the kernel down also stops them).
