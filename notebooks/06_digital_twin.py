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

# %%
events = result.events
events.groupby("kind").size()

# %%
hybrid = result.comparison.loc["lockouts per off period", "hybrid"]
predicted = result.comparison.loc["lockouts per off period", "simulator"]
assert result.off_periods >= DEVICES
assert result.lockouts > 0
assert abs(hybrid - predicted) <= TOLERANCE, (hybrid, predicted)
refreshes = result.comparison.loc["token refreshes"]
assert abs(refreshes["hybrid"] - refreshes["simulator"]) <= 0.1 * refreshes["simulator"]
