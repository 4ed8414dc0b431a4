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
# **Real** device SDK clients run against the **real** embedded platform, spread over worker
# processes. Each device reaches the platform through its own loopback TCP proxies, which the
# **simulator's connectivity model** opens and closes (a device goes offline by its sockets
# being closed). The platform's `ManualClock` is the run's clock; each worker mirrors it and
# moves only when told, once all its devices are idle, so days of token lifetime pass in
# seconds and time stands still while any real call is in flight.
#
# Lockouts go to the **simulator's technicians** (2 people, ~10 minutes an approval), who
# approve through the admin API at simulated times; devices produce **messages** into their
# local outboxes. What the platform recorded is set beside the simulator's prediction for the
# same scenario, each metric with the tolerance it is held to and why.
#
# **At 1,000 devices:** `HybridRun(scenario.replace(fleet_size=1000), processes=4,
# time_quantum=60)` (about 250 devices per worker process; events on a one-minute grid, each
# at most a minute late). One simulated day takes about 75 s and 1.7 GiB on the 2-core
# machine (`.venv/bin/python benchmarks/hybrid.py --devices 1000 --days 1`), a week about 7
# minutes (`--full`). `dask=client` places the workers on a Dask cluster instead.

# %% tags=["parameters"]
DEVICES = 60          # real devices (CI size)
PROCESSES = 2         # worker processes
DAYS = 1.0

# %%
import logging

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from iiotsim.sim import Connectivity, Distribution, Messages, Provisioning, Scenario, TokenPolicy
from iiotsim.twin import HybridRun

logging.getLogger("iiot_device").setLevel(logging.ERROR)   # offline devices retry by design
scenario = Scenario(
    fleet_size=DEVICES, duration_days=DAYS,
    connectivity=Connectivity(on=Distribution.exponential(4 * 3600), off=Distribution.exponential(2 * 3600)),
    token=TokenPolicy(lifetime=4 * 3600),            # refreshed at 2 h: off periods > 2-4 h lock out
    provisioning=Provisioning(technicians=2, approval_time=Distribution.exponential(600),
                              working_hours=None),
    messages=Messages(rate_per_hour=2),
    timeline_resolution=15 * 60,                     # online devices per quarter hour
    seed=3,
)
# about a minute: the devices start in their workers, then a simulated day passes
with HybridRun(scenario, processes=PROCESSES) as run:
    result = run.run(progress=True)

# %% [markdown]
# ## What the platform saw, beside the prediction
#
# `within` says whether the difference is inside the row's tolerance (relative to the
# prediction, except the absolute rows), and `why` what the tolerance allows for.

# %%
comparison = result.comparison.copy()
comparison.index.name = f"over {DAYS:g} simulated day(s)"
comparison["hybrid"] = comparison["hybrid"].map("{:,.3f}".format)
comparison["simulator"] = comparison["simulator"].map("{:,.3f}".format)
comparison["tolerance"] = comparison["tolerance"].map(lambda t: "" if pd.isna(t) else f"{t:g}")
comparison

# %% [markdown]
# ## Online devices over time
#
# The real devices' count comes from the platform's own connection records
# (`GET /api/v1/devices/{id}/connections`): the MQTT connects and disconnects the broker saw.
# Both series are the mean number of devices online in each quarter hour. The network cuts
# follow the simulator's own draw, so the two lines part only where the platform and the
# simulator disagree on what a device did when its network came back (a lockout, a late
# reconnect, a technician's approval).

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

# %% [markdown]
# ## Message latency
#
# From a message's production (into the device's outbox) to its storage by the platform, in
# simulated time. Sent at once while online; kept in the outbox through an off period or a
# lockout. The simulator's median and 99th percentile are marked.

# %%
latency_h = np.sort(result.latency.to_numpy()) / 3600
share = np.arange(1, len(latency_h) + 1) / len(latency_h)
fig, ax = plt.subplots(figsize=(9, 3.4))
ax.step(latency_h, share, where="post", linewidth=2, label=f"{len(latency_h):,} messages of the real devices")
for q, style in (("p50", ":"), ("p99", "--")):
    value = result.simulated.summary[f"message_latency_{q}_s"] / 3600
    ax.axvline(value, color="C1", linestyle=style, label=f"simulator's {q}: {value:.2f} h")
ax.set_xlabel("latency (simulated hours)")
ax.set_ylabel("share of messages delivered")
ax.set_ylim(0, 1.01)
ax.set_title("Message latency: real devices beside the simulator's percentiles")
ax.legend(loc="lower right", frameon=False);

# %%
p99 = float(np.percentile(result.latency, 99))
pd.Series({"hybrid p99 (h)": p99 / 3600,
           "simulator p99 (h)": result.simulated.summary["message_latency_p99_s"] / 3600}).round(2)

# %% [markdown]
# ## Server load: what the platform recorded, per simulated minute

# %%
load = result.load
per_minute = pd.DataFrame({
    "connects (platform)": load["connect_per_s"] * 60,
    "connects (simulator)": load["connect_per_s simulator"] * 60,
    "refreshes (platform)": load["refresh_per_s"] * 60,
    "refreshes (simulator)": load["refresh_per_s simulator"] * 60,
})
per_minute.describe().loc[["mean", "max"]].round(3)

# %%
imposed = (result.events.groupby("kind").size().rename_axis("network change imposed")
           .to_frame("count"))
imposed.index = imposed.index.map({"disconnect": "cut (device goes offline)",
                                   "reconnect": "restored (device back online)"})
imposed

# %%
outside = result.comparison[result.comparison["within"].eq(False)]
assert outside.empty, outside
assert result.off_periods >= DEVICES
assert result.lockouts > 0 and run.approval_delays and min(run.approval_delays) > 1.0
assert result.comparison.loc["messages produced", "hybrid"] > 0
assert len(online) == DAYS * 24 * 4 and ((online >= 0) & (online <= DEVICES)).all().all()
assert abs(online["hybrid"].mean() - online["simulator"].mean()) <= 0.1 * DEVICES

# %% [markdown]
# The hybrid run stops its platform, workers and devices when it ends (the `with` block);
# nothing is left running.
