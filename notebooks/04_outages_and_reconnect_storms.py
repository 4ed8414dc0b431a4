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
from matplotlib.ticker import FixedLocator, FuncFormatter
from tqdm.auto import tqdm

from iiotsim.sim import Backoff, Outage, Outages, Scenario, simulate
from iiotsim.sim.storm import simulate_storm

policies = {
    "fixed 1 s (no back-off)": Backoff(kind="fixed", base=1),
    "exponential, no jitter": Backoff(kind="exponential", base=1, cap=300),
    "exponential, full jitter": Backoff(kind="full_jitter", base=1, cap=300),
    "full jitter, reset at every connect": Backoff(kind="full_jitter", base=1, cap=300, reset="connect"),
}
storms = {name: simulate_storm(FLEET, OUTAGE_S, b, np.random.default_rng(1), CAPACITY)
          for name, b in tqdm(policies.items(), desc="reconnect storms", total=len(policies))}
rows = []
for name, st in storms.items():
    after = st.attempt_times[st.attempt_times >= OUTAGE_S]
    per_second = np.bincount((after - OUTAGE_S).astype(int)) if len(after) else np.zeros(1)
    rows.append({"policy": name, "all back after s": st.delays.max(),
                 "attempts after outage": len(after), "peak attempts/s": per_second.max()})
storm_table = pd.DataFrame(rows).set_index("policy")
pd.DataFrame({
    "all back after (min)": (storm_table["all back after s"] / 60).round(1),
    "attempts after the outage": storm_table["attempts after outage"].map("{:,}".format),
    "peak attempts / s": storm_table["peak attempts/s"].map("{:,}".format),
}).rename_axis(f"back-off policy ({FLEET:,} devices, broker admits {CAPACITY}/s)")

# %%
fig, (attempts_ax, back_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
for name, st in storms.items():
    t = st.attempt_times[(st.attempt_times >= OUTAGE_S - 60) & (st.attempt_times < OUTAGE_S + 600)]
    counts = np.bincount((t - (OUTAGE_S - 60)).astype(int), minlength=660)
    attempts_ax.plot(np.arange(len(counts)) - 60, counts, lw=1, label=name)
    back = np.sort(st.delays[st.delays <= 600])
    back_ax.step(np.r_[0, back, 600], 100 * np.r_[0, np.arange(1, len(back) + 1), len(back)] / FLEET,
                 where="post", lw=3 if name.startswith("fixed") else 1.5)  # fixed and reset coincide
attempts_ax.axhline(CAPACITY, color="grey", ls=":", label="broker capacity")
# counts from 0 up over four decades: linear below 1, logarithmic above
attempts_ax.set_yscale("symlog", linthresh=1, linscale=0.5)
attempts_ax.set_ylim(0, 2 * FLEET)
attempts_ax.yaxis.set_major_locator(FixedLocator([0, 1, 10, 100, 1000]))
attempts_ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}"))
attempts_ax.set_xlabel("seconds after the outage ends")
attempts_ax.set_ylabel("connection attempts / s")
attempts_ax.set_title("What the broker sees")
back_ax.set_xlim(0, 600)
back_ax.set_ylim(0, 100)
back_ax.set_xlabel("seconds after the outage ends")
back_ax.set_ylabel("devices reconnected (% of the fleet)")
back_ax.set_title("Devices back (first 10 minutes)")
fig.legend(*attempts_ax.get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=9, frameon=False)
fig.suptitle(f"A {OUTAGE_S // 60}-minute broker outage, {FLEET:,} devices")
fig.tight_layout(rect=(0, 0.07, 1, 1))

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
ax.axvspan(48, 48 + OUTAGE_S / 3600, color="grey", alpha=0.2, label="broker outage")
ax.set_ylim(bottom=0)
ax.set_xlabel("simulated time (h)"); ax.set_ylabel("devices online")
ax.set_title(f"The outage on day 3 of a {FLEET // 4}-device fleet simulation")
ax.legend(fontsize=8, loc="lower right");


# %%
def recovery_hours(r, start_h=48 + OUTAGE_S / 3600):
    before = r.timeline.loc[40:47.5, "online"].mean()
    after = r.timeline.loc[start_h:]
    back = after[after["online"] >= 0.95 * before]
    return float(back.index[0] - start_h) if len(back) else float("inf")

recovery = {name: recovery_hours(r) for name, r in results.items()}
print("Back to 95 % of the devices online after the outage ends:")
for name, hours in recovery.items():
    print(f"  {name}: {hours:.2f} h ({hours * 60:.0f} min)")

# %%
assert recovery["exponential, full jitter"] < recovery["exponential, no jitter"]
