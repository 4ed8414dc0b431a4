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
# # 6. Digital twin: real devices beside the simulator's prediction
#
# Fifty **real** device SDK clients run against the **real** embedded platform. Each reaches
# the platform through its own loopback TCP proxies, which the **simulator's connectivity
# model** opens and closes (a device goes offline by its sockets being closed). Platform,
# devices and simulation share one `ManualClock`, so days of token lifetime pass in
# seconds; time stands still while any real call is in flight.
#
# The lockouts and token refreshes the platform actually saw are set beside the
# simulator's prediction for the same scenario. Tolerances: lockouts per off period within
# 0.05 absolute, refreshes within 10%.

# %% tags=["parameters"]
DEVICES = 50          # at least 50 real devices
DAYS = 1.0
TOLERANCE = 0.05      # |hybrid - simulator| in lockouts per off period

# %%
import logging

import matplotlib.pyplot as plt
import pandas as pd
from iiotsim.sim import Connectivity, Distribution, Messages, Provisioning, Scenario, TokenPolicy
from iiotsim.twin import HybridRun

logging.getLogger("iiot_device").setLevel(logging.ERROR)   # offline devices retry by design
scenario = Scenario(
    fleet_size=DEVICES, duration_days=DAYS,
    connectivity=Connectivity(on=Distribution.exponential(4 * 3600), off=Distribution.exponential(2 * 3600)),
    token=TokenPolicy(lifetime=4 * 3600),            # refreshed at 2 h: off periods > 2-4 h lock out
    provisioning=Provisioning(technicians=1000, approval_time=Distribution.fixed(1.0), working_hours=None),
    messages=Messages(rate_per_hour=0),
    timeline_resolution=15 * 60,                     # online devices per quarter hour
    seed=3,
)
# about 30 s: 50 devices start, then a simulated day passes (the bar counts simulated hours)
with HybridRun(scenario) as run:
    result = run.run(progress=True)

# %% [markdown]
# ## What the platform saw, beside the prediction

# %%
comparison = result.comparison.copy()
comparison["difference"] = comparison["hybrid"] - comparison["simulator"]
comparison.index.name = f"over {DAYS:g} simulated day(s)"
comparison.columns = ["real devices (hybrid)", "simulator", "difference"]
comparison.apply(lambda row: row.map("{:.3f}".format if row.name == "lockouts per off period"
                                     else "{:,.0f}".format), axis=1)   # counts whole, the ratio to 0.001

# %% [markdown]
# ## Online devices over time
#
# The real devices' count comes from the platform's own connection records
# (`GET /api/v1/devices/{id}/connections`): the MQTT connects and disconnects the broker saw.
# Both series are the mean number of devices online in each quarter hour. The network cuts
# follow the simulator's own draw, so the two lines part only where the platform and the
# simulator disagree on what a device did when its network came back (a lockout, a late
# reconnect).

# %%
online = result.online
quarters = pd.concat([online, online.iloc[[-1]].set_axis([DAYS * 24])])   # the last quarter ends at the horizon
fig, ax = plt.subplots(figsize=(9, 3.8))
ax.plot(quarters.index, quarters["hybrid"], drawstyle="steps-post", linewidth=2,
        label=f"{DEVICES} real devices (platform's connection records)")
ax.plot(quarters.index, quarters["simulator"], drawstyle="steps-post", linestyle="--",
        label="simulator's prediction")
ax.set_xlim(0, DAYS * 24)
ax.set_ylim(0, DEVICES)
ax.set_xticks(range(0, int(DAYS * 24) + 1, 3))
ax.set_xlabel("hours since the devices started")
ax.set_ylabel("devices online")
ax.set_title("Devices online: the real fleet beside the simulator")
ax.legend(loc="lower left", frameon=False);

# %%
imposed = (result.events.groupby("kind").size().rename_axis("network change imposed")
           .to_frame("count"))
imposed.index = imposed.index.map({"disconnect": "cut (device goes offline)",
                                   "reconnect": "restored (device back online)"})
imposed

# %%
hybrid = result.comparison.loc["lockouts per off period", "hybrid"]
predicted = result.comparison.loc["lockouts per off period", "simulator"]
assert result.off_periods >= DEVICES
assert result.lockouts > 0
assert abs(hybrid - predicted) <= TOLERANCE, (hybrid, predicted)
refreshes = result.comparison.loc["token refreshes"]
assert abs(refreshes["hybrid"] - refreshes["simulator"]) <= 0.1 * refreshes["simulator"]
assert len(online) == DAYS * 24 * 4 and ((online >= 0) & (online <= DEVICES)).all().all()
assert abs(online["hybrid"].mean() - online["simulator"].mean()) <= 0.1 * DEVICES

# %% [markdown]
# The hybrid run stops its platform and devices when it ends (the `with` block); nothing is
# left running.
