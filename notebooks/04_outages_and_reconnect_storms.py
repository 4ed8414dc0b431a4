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
# # 4. Outages and reconnect storms
#
# A 30-minute broker outage disconnects the whole fleet. When the broker is back, every
# device reconnects with its back-off policy, and the broker admits a limited number of
# connections per second. How long until everyone is back, and what does the broker see?

# %% tags=["parameters"]
FLEET = 2000
OUTAGE_S = 1800
CAPACITY = 5           # connections per second a small broker admits

# %%
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

# %%
fig, ax = plt.subplots(figsize=(9, 4))
for name, st in storms.items():
    t = st.attempt_times[(st.attempt_times >= OUTAGE_S - 60) & (st.attempt_times < OUTAGE_S + 600)]
    counts = np.bincount((t - (OUTAGE_S - 60)).astype(int), minlength=660)
    ax.plot(np.arange(len(counts)) - 60, counts, label=name)
ax.axhline(CAPACITY, color="grey", ls=":", label="broker capacity")
ax.set_yscale("symlog"); ax.set_xlabel("seconds after the outage ends"); ax.set_ylabel("connection attempts/s")
ax.legend(fontsize=8);

# %%
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

# %% [markdown]
# ## The same outage inside a fleet simulation

# %%
outage = Outages(scheduled=(Outage(start=2 * 86400, duration=OUTAGE_S),), broker_connects_per_second=CAPACITY)
base = Scenario(fleet_size=FLEET // 4, duration_days=4, outages=outage, timeline_resolution=60, seed=4)
results = {name: simulate(base.replace(backoff=b)) for name, b in list(policies.items())[1:3]}
fig, ax = plt.subplots(figsize=(9, 4))
for name, r in results.items():
    window = r.timeline.loc[47.5:60.0]
    ax.plot(window.index, window["online"], label=name)
ax.set_xlabel("hours"); ax.set_ylabel("devices online"); ax.legend(fontsize=8);


# %%
def recovery_hours(r, start_h=48 + OUTAGE_S / 3600):
    before = r.timeline.loc[40:47.5, "online"].mean()
    after = r.timeline.loc[start_h:]
    back = after[after["online"] >= 0.95 * before]
    return (back.index[0] - start_h) if len(back) else float("inf")

recovery = {name: recovery_hours(r) for name, r in results.items()}
recovery

# %%
assert recovery["exponential, full jitter"] < recovery["exponential, no jitter"]
