"""Confidence intervals for sweeps: per-policy means and paired policy differences.

A sweep's repetition ``r`` runs every policy with seed ``base.seed + r``, and the
simulator draws connectivity, deployment, outages, storms and leak events from named
streams that no token policy consumes differently (:class:`~.model.RandomStreams`), so
in one repetition every policy meets the same weather: common random numbers. A
difference between two policies is therefore measured on per-repetition differences
(:func:`compare_policies`), whose interval is much narrower than the two policies'
separate intervals suggest (on the notebook-02 fleet, 1 d against 1.25 d lifetimes, 8
repetitions: see ``tests/sim/test_sweep_statistics.py``).

Both functions use Student's t over repetitions: each repetition is one independent
draw of the whole fleet, so the repetition means are i.i.d. and, for the fleet sizes a
study uses (thousands of devices), close to normal; ``mean +- t(1 - (1 - c) / 2, R - 1)
* s / sqrt(R)``. With one repetition there is no interval (``nan``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats as scipy_stats

from .scenario import ScenarioError

STATISTICS = ("mean", "low", "high", "half_width", "n")
"""the columns :func:`summarize_sweep` gives per metric"""
RUN_COLUMNS = ("repetition", "seed")


def grid_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` (a :func:`~.sweep.sweep` result) that name a policy: the
    sweep's grid keys (kept in ``frame.attrs["grid"]``), else every column before
    ``repetition`` (the sweep puts them first)."""
    keys = frame.attrs.get("grid")
    if keys:
        return [str(k) for k in keys]
    if "repetition" not in frame.columns:
        raise ScenarioError("repetition", "not a sweep result: no repetition column")
    columns = list(frame.columns)
    return [str(c) for c in columns[: columns.index("repetition")]]


def metric_columns(frame: pd.DataFrame, metrics: Iterable[str] | str | None = None) -> list[str]:
    """``metrics`` checked against ``frame``; None = every numeric summary column."""
    if isinstance(metrics, str):
        metrics = [metrics]
    if metrics is None:
        skip = set(grid_columns(frame)) | set(RUN_COLUMNS)
        return [
            str(c)
            for c in frame.columns
            if c not in skip
            and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
        ]
    chosen = list(metrics)
    for m in chosen:
        if m not in frame.columns:
            raise ScenarioError("metrics", f"no column {m!r} in the sweep")
    return chosen


def t_interval(
    values: Sequence[float] | NDArray[np.float64], confidence: float = 0.95
) -> dict[str, float]:
    """Mean and its Student-t interval over ``values`` (one per repetition): ``mean``,
    ``low``, ``high``, ``half_width``, ``n``. Infinite values give an infinite mean and
    no interval; one value gives no interval (``nan``)."""
    if not 0 < confidence < 1:
        raise ScenarioError("confidence", f"must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return dict.fromkeys(("mean", "low", "high", "half_width"), math.nan) | {"n": 0.0}
    mean = float(x.mean()) if np.isfinite(x).all() else float(np.mean(x))
    if n < 2 or not np.isfinite(x).all():
        return {"mean": mean, "low": math.nan, "high": math.nan, "half_width": math.nan, "n": n}
    sd = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "n": n}


def summarize_sweep(
    frame: pd.DataFrame,
    metrics: Iterable[str] | str | None = None,
    *,
    by: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per-policy means with Student-t confidence intervals over the repetitions.

    ``frame`` is what :func:`~.sweep.sweep` returns (one row per run); ``by`` defaults
    to the sweep's grid keys. The result has one row per policy (index: the grid keys,
    infinite lifetimes as ``NaN``) and two column levels, ``(metric, statistic)`` with
    statistic in ``mean``, ``low``, ``high``, ``half_width`` and ``n`` (repetitions)::

        table = summarize_sweep(grid, ["lockouts_per_1000_device_days"])
        table["lockouts_per_1000_device_days"]            # mean, low, high, ...
        table.xs("mean", axis=1, level="statistic")      # the means alone

    Method: each repetition is an independent fleet, so ``mean +- t(R - 1) * s /
    sqrt(R)`` (``confidence`` two-sided, default 95 %). The interval is for the
    policy's expected value in this scenario; to compare two policies use
    :func:`compare_policies` (paired, much narrower under common random numbers).
    """
    keys = list(by) if by is not None else grid_columns(frame)
    chosen = metric_columns(frame, metrics)
    columns = pd.MultiIndex.from_product([chosen, STATISTICS], names=["metric", "statistic"])
    if not keys:
        groups: Iterable[tuple[Any, pd.DataFrame]] = [((), frame)]
    else:
        groups = frame.groupby(keys, dropna=False, sort=False)
    index: list[Any] = []
    rows: list[list[float]] = []
    for key, part in groups:
        index.append(key[0] if len(keys) == 1 and isinstance(key, tuple) else key)
        row: list[float] = []
        for m in chosen:
            est = t_interval(part[m].to_numpy(dtype=np.float64), confidence)
            row += [est[s] for s in STATISTICS]
        rows.append(row)
    if len(keys) > 1:
        idx: pd.Index = pd.MultiIndex.from_tuples(index, names=keys)
    else:
        idx = pd.Index(index, name=keys[0] if keys else None)
    out = pd.DataFrame(rows, index=idx, columns=columns)
    out.attrs["confidence"] = confidence
    return out


def _select(frame: pd.DataFrame, policy: Mapping[str, Any], keys: list[str]) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for raw, value in policy.items():
        key = raw.replace("__", ".")
        if key not in frame.columns:
            raise ScenarioError(key, f"not a column of the sweep (grid: {keys})")
        column = frame[key]
        mask &= column.isna() if value is None else column == value
    chosen = frame[mask]
    if chosen.empty:
        raise ScenarioError(next(iter(policy), "policy"), f"no run matches {dict(policy)}")
    if chosen["repetition"].duplicated().any():
        raise ScenarioError(
            next(iter(policy), "policy"),
            f"{dict(policy)} matches several policies per repetition; name every grid key {keys}",
        )
    return chosen.set_index("repetition")


def compare_policies(
    frame: pd.DataFrame,
    baseline: Mapping[str, Any],
    candidate: Mapping[str, Any],
    metrics: Iterable[str] | str | None = None,
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """``candidate - baseline`` per metric, paired by repetition (common random numbers).

    Policies are given by their grid values, e.g. ``{"token.lifetime": 86400,
    "token.refresh_fraction": 0.25}`` (``None`` matches an infinite lifetime; ``__``
    may stand for the dot). Only repetitions both ran are used. One row per metric:
    ``difference`` (mean of the per-repetition differences), ``low``, ``high``,
    ``half_width`` (Student t over the per-repetition differences), ``n``, and, to show
    what pairing bought, ``unpaired_half_width`` (Welch's interval on the two policies'
    runs as if independent). Identical policies give a difference of exactly 0.
    """
    keys = grid_columns(frame)
    a = _select(frame, baseline, keys)
    b = _select(frame, candidate, keys)
    shared = a.index.intersection(b.index)
    chosen = metric_columns(frame, metrics)
    rows = []
    for m in chosen:
        xa = a.loc[shared, m].to_numpy(dtype=np.float64)
        xb = b.loc[shared, m].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            est = t_interval(xb - xa, confidence)
        rows.append(
            {
                "difference": est["mean"],
                "low": est["low"],
                "high": est["high"],
                "half_width": est["half_width"],
                "n": est["n"],
                "unpaired_half_width": _welch_half_width(xa, xb, confidence),
            }
        )
    out = pd.DataFrame(rows, index=pd.Index(chosen, name="metric"))
    out.attrs["confidence"] = confidence
    return out


def _welch_half_width(xa: NDArray[np.float64], xb: NDArray[np.float64], confidence: float) -> float:
    """Half-width of Welch's interval for mean(xb) - mean(xa), samples independent."""
    na, nb = len(xa), len(xb)
    if na < 2 or nb < 2 or not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        return math.nan
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se2 = va + vb
    if se2 == 0:
        return 0.0
    dof = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return float(scipy_stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(se2))
