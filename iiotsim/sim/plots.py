"""The classic views (matplotlib): the lockouts-vs-exposure trade-off across lifetimes with
its Pareto front, fleet state over time, server load during a reconnect storm."""

from __future__ import annotations

from typing import Any

import matplotlib

if matplotlib.get_backend().lower().startswith("qt"):  # pragma: no cover - headless use
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .fit import ConnectivityFit, StateFit
from .model import SimulationResult


def pareto_front(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated in (lower x, lower y)."""
    ordered = frame.sort_values([x, y])
    best = np.inf
    keep = []
    for index, value in ordered[y].items():
        if value < best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def tradeoff(
    sweep: pd.DataFrame,
    *,
    x: str = "lockouts_per_1000_device_days",
    y: str = "rt_leak_exposure_mean_h",
    label: str = "token.lifetime",
    ax: Axes | None = None,
    highlight: Any = ...,
) -> Figure:
    """Lockouts against leaked-token exposure, one point per policy (mean over
    repetitions), the Pareto front drawn through the undominated ones. ``highlight``: a
    ``label`` value (None or NaN = infinite) whose point is ringed as the current policy."""
    frame = sweep.groupby(label, dropna=False)[[x, y]].mean().reset_index()
    finite = frame[np.isfinite(frame[y])]
    fig, ax = _axes(ax, (7, 4.5))
    ax.scatter(finite[x], finite[y], color="tab:blue", zorder=3)
    for _, row in finite.iterrows():
        value = row[label]
        text = duration(None if pd.isna(value) else float(value))
        ax.annotate(text, (row[x], row[y]), textcoords="offset points", xytext=(5, 5))
    front = pareto_front(finite, x, y)
    ax.plot(front[x], front[y], color="tab:orange", lw=1.5, label="Pareto front", zorder=2)
    if highlight is not ...:
        infinite = highlight is None or (isinstance(highlight, float) and np.isnan(highlight))
        chosen = finite[finite[label].isna() if infinite else finite[label] == highlight]
        ax.scatter(chosen[x], chosen[y], s=220, facecolors="none", edgecolors="tab:red", lw=2,
                   label="current policy", zorder=4)  # fmt: skip
    if len(finite) < len(frame):
        ax.text(0.98, 0.95, "infinite lifetime: unbounded exposure", transform=ax.transAxes,
                ha="right", va="top", fontsize=8)  # fmt: skip
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title("Token lifetime: lockouts vs leaked-token exposure")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig  # type: ignore[no-any-return]


def fleet_state(result: SimulationResult, ax: Axes | None = None) -> Figure:
    """Devices online, awaiting approval, offline and locked out for good, over time."""
    t = result.timeline
    fig, ax = _axes(ax, (9, 4))
    cols = ["online", "awaiting_approval", "offline", "locked_out"]
    ax.stackplot(t.index / 24, *(t[c] for c in cols), labels=[c.replace("_", " ") for c in cols])
    ax.set_xlabel("days")
    ax.set_ylabel("devices")
    ax.set_title("Fleet state over time")
    ax.legend(loc="lower left", fontsize=8)
    return fig  # type: ignore[no-any-return]


def server_load(result: SimulationResult, ax: Axes | None = None) -> Figure:
    """Requests per second by kind over time (a reconnect storm shows as a spike)."""
    t = result.timeline
    fig, ax = _axes(ax, (9, 4))
    for kind in ("connect", "refresh", "provisioning", "twin_get"):
        ax.plot(t.index / 24, t[f"{kind}_per_s"], label=kind)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xlabel("days")
    ax.set_ylabel("requests/s")
    ax.set_title("Server load by kind")
    ax.legend(fontsize=8)
    return fig  # type: ignore[no-any-return]


def _policy_frame(
    summary: pd.DataFrame, metric: str, rows: str, columns: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[Any], list[Any]]:
    """Means and half-widths of ``metric`` as (rows x columns) tables, from a
    :func:`~.stats.summarize_sweep` table; columns sorted with NaN (infinite) last."""
    stats = summary[metric].reset_index()
    row_values = sorted(stats[rows].unique())
    column_values = sorted(stats[columns].dropna().unique()) + (
        [np.nan] if stats[columns].isna().any() else []
    )
    means = pd.DataFrame(np.nan, index=row_values, columns=range(len(column_values)))
    halves = means.copy()
    for _, row in stats.iterrows():
        j = len(column_values) - 1 if pd.isna(row[columns]) else column_values.index(row[columns])
        means.loc[row[rows], j] = row["mean"]
        halves.loc[row[rows], j] = row["half_width"]
    return means, halves, row_values, column_values


def policy_heatmap(
    summary: pd.DataFrame,
    metric: str = "lockouts_per_1000_device_days",
    *,
    rows: str = "token.refresh_fraction",
    columns: str = "token.lifetime",
    log: bool = False,
    highlight: tuple[Any, Any] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """One cell per policy (refresh fraction x lifetime), coloured by ``metric``'s mean,
    written as mean +- half-width of its interval. ``summary`` is
    :func:`~.stats.summarize_sweep`'s table; ``highlight`` = (row value, column value)
    is framed (None as the column value = infinite lifetime); ``log`` colours on a
    symmetric log scale (lockouts span three decades)."""
    from matplotlib.colors import Normalize, SymLogNorm
    from matplotlib.patches import Rectangle

    means, halves, row_values, column_values = _policy_frame(summary, metric, rows, columns)
    fig, ax = _axes(ax, (9, 3.2))
    finite = means.to_numpy(dtype=float)
    top = float(np.nanmax(finite)) if np.isfinite(finite).any() else 1.0
    norm = SymLogNorm(linthresh=1.0, vmin=0, vmax=max(top, 1.0)) if log else Normalize(0, top)
    image = ax.imshow(finite, cmap="viridis", norm=norm, aspect="auto")
    for i in range(len(row_values)):
        for j in range(len(column_values)):
            mean, half = float(finite[i, j]), float(halves.to_numpy(dtype=float)[i, j])
            if np.isnan(mean):
                continue
            text = f"{mean:.3g}" + ("" if np.isnan(half) else f"\n± {half:.2g}")
            light = norm(mean) < 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=7.5,
                    color="white" if light else "black")  # fmt: skip
    if highlight is not None:
        i = row_values.index(highlight[0])
        j = len(column_values) - 1 if highlight[1] is None else column_values.index(highlight[1])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="tab:red", lw=3))
    ax.set_xticks(range(len(column_values)))
    ax.set_xticklabels([duration(None if pd.isna(v) else float(v)) for v in column_values])
    ax.set_yticks(range(len(row_values)))
    ax.set_yticklabels([f"{v:g}" for v in row_values])
    ax.set_xlabel("token lifetime")
    ax.set_ylabel("refresh at (fraction)")
    ax.set_title(metric.replace("_", " "))
    fig.colorbar(image, ax=ax, shrink=0.9)
    return fig  # type: ignore[no-any-return]


def lifetime_tradeoff(
    summary: pd.DataFrame,
    metric: str = "lockouts_per_1000_device_days",
    *,
    series: str = "token.refresh_fraction",
    lifetime: str = "token.lifetime",
    target: float | None = None,
    highlight: tuple[Any, Any] | None = None,
    floor: float | None = 0.0,
    ax: Axes | None = None,
) -> Figure:
    """``metric`` against the lifetime on a log axis, one line per ``series`` value
    (refresh fraction), each point its mean with its interval as a bar (clipped at
    ``floor``: a symmetric t-interval of a rate near 0 reaches below 0); the infinite
    lifetime sits at the right edge. ``target`` draws a horizontal line (the operations
    team's lockout target), ``highlight`` = (series value, lifetime or None) rings the
    pick."""
    means, halves, series_values, lifetimes = _policy_frame(summary, metric, series, lifetime)
    finite = [float(v) for v in lifetimes if not pd.isna(v)]
    x = np.array(finite + ([finite[-1] * 4] if len(finite) < len(lifetimes) else [])) / 3600
    fig, ax = _axes(ax, (8, 4.5))
    offsets = {
        v: 1 + 0.06 * (k - (len(series_values) - 1) / 2) for k, v in enumerate(series_values)
    }
    for value in series_values:  # bars side by side; a negative lower bound is clipped at floor
        mean = means.loc[value].to_numpy(dtype=float)
        half = halves.loc[value].fillna(0).to_numpy(dtype=float)
        below = half if floor is None else np.minimum(half, np.maximum(mean - floor, 0))
        ax.errorbar(x * offsets[value], mean, yerr=[below, half], marker="o", ms=4, capsize=3,
                    label=f"refresh at {value:g}")  # fmt: skip
    if target is not None:
        ax.axhline(target, color="tab:red", ls="--", lw=1.2, label=f"target {target:g}")
    if highlight is not None:
        j = len(lifetimes) - 1 if highlight[1] is None else lifetimes.index(highlight[1])
        ax.scatter([x[j] * offsets[highlight[0]]], [means.loc[highlight[0]].iloc[j]], s=260,
                   facecolors="none", edgecolors="tab:red", lw=2, zorder=5,
                   label="recommended")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([duration(None if pd.isna(v) else float(v)) for v in lifetimes])
    ax.minorticks_off()
    ax.set_xlabel("token lifetime (log scale)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig  # type: ignore[no-any-return]


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Any, Axes]:
    """The figure and axes to draw on: ``ax`` if given, else a new figure."""
    if ax is None:
        return plt.subplots(figsize=size)
    return ax.figure, ax


def duration(seconds: float | None) -> str:
    """One unit style for every label: whole days in d, else hours in h, under an hour
    in s; None (or infinity) is "infinite".

    >>> [duration(s) for s in (3600, 6 * 3600, 86400, 30 * 86400, 36 * 3600, None)]
    ['1 h', '6 h', '1 d', '30 d', '36 h', 'infinite']
    """
    if seconds is None or np.isinf(seconds):
        return "infinite"
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600:
        return f"{round(seconds / 3600, 2):g} h"
    return f"{seconds:g} s"


def qq(fit: ConnectivityFit | StateFit, ax: Axes | None = None) -> Figure:
    """Quantile-quantile plot of a connectivity fit (log-log): observed durations against
    each fitted family's quantiles, the chosen one solid; points on the diagonal mean the
    family describes the data, a bend in the tail means it under- or overstates long
    periods. A :class:`ConnectivityFit` draws online and offline side by side."""
    if isinstance(fit, ConnectivityFit):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        qq(fit.online, axes[0])
        qq(fit.offline, axes[1])
        fig.tight_layout()
        return fig  # type: ignore[no-any-return]
    fig, ax = _axes(ax, (5.5, 4.5))
    observed = np.sort(fit.durations) / 3600
    probabilities = (np.arange(1, len(observed) + 1) - 0.5) / len(observed)
    for candidate in sorted(fit.candidates, key=lambda c: c.aic):
        chosen = candidate.family == fit.chosen
        theoretical = candidate.frozen().ppf(probabilities) / 3600
        ax.plot(
            theoretical,
            observed,
            ".",
            ms=3 if chosen else 2,
            alpha=0.9 if chosen else 0.35,
            label=f"{candidate.family} (AIC {candidate.aic:,.0f}, KS p {candidate.ks_pvalue:.2g})"
            + (" - chosen" if chosen else ""),
        )
    low, high = observed[0], observed[-1]
    ax.plot([low, high], [low, high], color="black", lw=1, label="observed = fitted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fitted quantile (h)")
    ax.set_ylabel("observed duration (h)")
    ax.set_title(f"{fit.state} periods: {fit.chosen} (n = {len(observed):,})")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    return fig  # type: ignore[no-any-return]
