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
# # 2. Token lifetime and refresh point
#
# A fleet of pumps on cellular links: usually online for about half a day, then out of
# coverage for a lognormal while (median under an hour, a long tail of multi-day outages
# when a site loses power). Which Registration Token **lifetime** and **refresh point**
# (the fraction of the lifetime after which a device refreshes its token) keep them
# working without giving a leaked token a long life, and how sure are we?
#
# The **policy explorer** re-runs the simulator as you move its controls. Below it, a
# **sweep** over lifetime × refresh point with repetitions gives each policy's lockouts and
# leaked-token exposure with 95 % confidence intervals, and the recommendation: the policy
# with the shortest exposure whose lockouts meet the operations team's target.
#
# Sizes: CI runs 200 devices × 30 days × 4 repetitions (24 policies, 96 runs: about 25 s of
# simulation on 2 idle cores, the whole notebook under a minute). For a real answer raise
# `FLEET`, `DAYS` and `REPETITIONS`: intervals narrow with the square root of the
# device-days, so the full study (10,000 devices × 365 days × 5 repetitions) narrows them
# about 25-fold.

# %% tags=["parameters"]
# Parameters (small fleet so CI runs fast; raise FLEET, DAYS and REPETITIONS for real answers)
FLEET = 200
DAYS = 30
LIFETIMES_H = [1, 6, 24, 72, 168, 720, 2160, None]   # None = infinite
REFRESH_FRACTIONS = [0.25, 0.5, 0.75]
REPETITIONS = 4
CONFIDENCE = 0.95
TARGET_LOCKOUTS = 1.0   # per 1,000 device-days: what the operations team accepts

# %%
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
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
on, off = fleet.connectivity.on, fleet.connectivity.off
print(f"{FLEET:,} devices over {DAYS} d. Online periods: {on.kind}, mean {on.mean / 3600:g} h. "
      f"Offline periods: {off.kind}, mean {off.mean / 3600:g} h, median {off.mean * np.exp(-off.shape**2 / 2) / 60:.0f} min "
      f"(sigma {off.shape:g}: a long tail of multi-day outages).")
plain = FuncFormatter(lambda y, _: f"{y:,.0f}")   # log axes read 0, 1, 10, 100: not 10⁰, 10¹

# %% [markdown]
# ## The policy explorer
#
# Lifetimes from the values architects use (1 h … 90 d, infinite), the refresh point, the
# outage distribution and the technicians. It runs this notebook's scenario unchanged except
# what its controls set, so its numbers are the sweep's (first repetition) below.

# %%
explorer = PolicyExplorer(fleet)
explorer

# %%
short = explorer.set(lifetime_hours=1, technicians=1)
long = explorer.set(lifetime_hours=720, technicians=1)
day = explorer.set(lifetime_hours=24, technicians=fleet.provisioning.technicians)

# %%
assert short.summary["lockouts_per_1000_device_days"] > long.summary["lockouts_per_1000_device_days"]
# the explorer's numbers are simulate()'s for this notebook's scenario with that lifetime
expected = simulate(fleet.replace(**{"token.lifetime": 86400.0})).summary
pd.testing.assert_series_equal(day.summary, expected)
assert explorer.controls["lifetime_hours"].label == "1 d"

# %% [markdown]
# ## A sweep over lifetime × refresh point
#
# Repetition *r* runs every policy on the same connectivity draws (seed `2026 + r`: common
# random numbers), so two policies are compared on the same weather. Intervals: Student t
# over the repetitions (`summarize_sweep`), shown as mean [low, high] with the lower bound
# clipped at 0 (none of these quantities can be negative).

# %%
METRICS = ["lockouts_per_1000_device_days", "rt_leak_exposure_mean_h",
           "refreshes_per_device_day", "lockout_recovery_p95_h"]
grid = sweep(fleet, token__lifetime=[h * 3600 if h else None for h in LIFETIMES_H],
             token__refresh_fraction=REFRESH_FRACTIONS, repetitions=REPETITIONS,
             processes=2, progress=True)
summary = summarize_sweep(grid, METRICS, confidence=CONFIDENCE)

def policy_name(lifetime, fraction):
    lifetime = None if pd.isna(lifetime) else float(lifetime)
    return f"{duration(lifetime)} @ {fraction:g}"

def number(x):   # the same rounding in every column: 551, 17.5, 0.33
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"

def with_interval(stat):   # every metric here is >= 0: a t-interval's lower bound is clipped at 0
    return f"{number(stat['mean'])} [{number(max(stat['low'], 0))}, {number(stat['high'])}]"

table = pd.DataFrame(
    {m: [with_interval(summary.loc[p, m]) for p in summary.index] for m in METRICS},
    index=[policy_name(*p) for p in summary.index],
)
table.columns = ["lockouts / 1,000 device-days", "leaked-token exposure (h)",
                 "refreshes / device-day", "recovery p95 (h)"]
table.rename_axis(f"lifetime @ refresh point (mean [{CONFIDENCE:.0%} CI])")

# %%
fig, axes = plt.subplots(2, 1, figsize=(11, 6.5))
plots.policy_heatmap(summary, "lockouts_per_1000_device_days", log=True, ax=axes[0])
plots.policy_heatmap(summary, "rt_leak_exposure_mean_h", ax=axes[1])
axes[0].set_title("Lockouts per 1,000 device-days (mean ± 95 % half-width)")
axes[1].set_title("Leaked-token exposure, mean hours (mean ± 95 % half-width)")
fig.axes[2].yaxis.set_major_formatter(plain)   # the lockouts' colour bar
fig.tight_layout()

# %%
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
print(f"Lifetime 3 d: refreshing at 0.25 instead of 0.5 of the lifetime, paired over {REPETITIONS} repetitions:")
pd.DataFrame({
    "refresh at 0.25 − at 0.5": early["difference"], f"{CONFIDENCE:.0%} low": early["low"],
    f"{CONFIDENCE:.0%} high": early["high"], "half-width, paired": early["half_width"],
    "half-width, unpaired": early["unpaired_half_width"],
}).rename(index={"lockouts_per_1000_device_days": "lockouts / 1,000 device-days",
                 "rt_leak_exposure_mean_h": "leaked-token exposure (h)"}).rename_axis(None).round(2)

# %% [markdown]
# ## Recommendation
#
# Among the policies whose lockout interval lies wholly under the target (its upper bound
# at most `TARGET_LOCKOUTS`), the one with the shortest mean leaked-token exposure: it
# bounds a leaked token's life as tightly as the fleet's connectivity allows.

# %%
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

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
plots.lifetime_tradeoff(summary, "lockouts_per_1000_device_days", target=TARGET_LOCKOUTS,
                        highlight=(pick_fraction, pick_seconds), ax=axes[0])
axes[0].set_yscale("symlog", linthresh=1.0)
axes[0].set_ylim(bottom=0)
axes[0].yaxis.set_major_formatter(plain)
axes[0].set_ylabel("lockouts / 1,000 device-days")
axes[0].set_title("Lockouts (95 % intervals) and the operations team's target")
plots.lifetime_tradeoff(summary, "rt_leak_exposure_mean_h", highlight=(pick_fraction, pick_seconds), ax=axes[1])
axes[1].set_ylim(bottom=0)
axes[1].set_ylabel("leaked-token exposure, mean (h)")
axes[1].set_title(f"Recommended: {duration(pick_seconds)}, refresh at {pick_fraction:g}")
fig.tight_layout()

# %%
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
