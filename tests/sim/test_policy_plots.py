"""The policy views of notebook 02: heatmap and lifetime trade-off, drawn from
``summarize_sweep``'s table (checked on a hand-made sweep whose intervals are known)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle

from iiotsim.sim import plots, summarize_sweep

LIFETIMES = [3600.0, 86400.0, None]
FRACTIONS = [0.25, 0.5]


def hand_made_sweep() -> pd.DataFrame:
    """Three repetitions per policy; lockouts = base +- 1 (so the mean is the base and the
    sample sd is 1), exposure = lifetime in hours x fraction."""
    rows = []
    for lifetime in LIFETIMES:
        for fraction in FRACTIONS:
            base = 0.5 if lifetime is None else 100 * 3600 / lifetime * fraction
            for repetition, delta in enumerate((-1.0, 0.0, 1.0)):
                rows.append(
                    {
                        "token.lifetime": lifetime,
                        "token.refresh_fraction": fraction,
                        "repetition": repetition,
                        "seed": repetition,
                        "lockouts_per_1000_device_days": base + delta,
                        "rt_leak_exposure_mean_h": (lifetime or 10 * 86400) / 3600 * fraction,
                    }
                )
    frame = pd.DataFrame(rows)
    frame.attrs["grid"] = ["token.lifetime", "token.refresh_fraction"]
    return frame


@pytest.fixture
def summary() -> pd.DataFrame:
    return summarize_sweep(hand_made_sweep())


def test_duration_labels_use_one_unit_style() -> None:
    labels = [plots.duration(h * 3600) for h in (1, 6, 24, 72, 168, 720, 2160)]
    assert labels == ["1 h", "6 h", "1 d", "3 d", "7 d", "30 d", "90 d"]
    assert plots.duration(None) == plots.duration(float("inf")) == "infinite"
    assert plots.duration(42 * 3600) == "42 h"  # 1.75 d: hours, not "1.75 d"


def test_heatmap_writes_each_policys_interval_and_frames_the_pick(summary: pd.DataFrame) -> None:
    fig = plots.policy_heatmap(summary, highlight=(0.5, None))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1 h", "1 d", "infinite"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.25", "0.5"]
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    texts = {
        (round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts
    }
    assert texts[(0, 0)] == f"25\n± {half:.2g}"  # 1 h at 0.25: 100 * 1 * 0.25
    assert texts[(2, 1)] == f"0.5\n± {half:.2g}"  # infinite, last column
    (frame,) = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert frame.get_xy() == (1.5, 0.5)  # column 2 (infinite), row 1 (0.5)
    plt.close(fig)


def test_lifetime_tradeoff_bars_target_and_pick(summary: pd.DataFrame) -> None:
    fig = plots.lifetime_tradeoff(summary, target=1.0, highlight=(0.25, 86400.0))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1 h", "1 d", "infinite"]
    (target,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert np.asarray(target.get_ydata()).tolist() == [1.0, 1.0]
    # the infinite lifetime sits right of the longest finite one
    series = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    xs = np.asarray(series[0].lines[0].get_xdata(), dtype=float)
    assert np.all(np.diff(xs) > 0)
    # bars are the t-intervals, the lower end clipped at 0 (infinite at 0.25: 0.5 +- 2.48)
    bars = series[0].lines[2][0].get_segments()
    half = 4.302652729911275 / np.sqrt(3)
    assert bars[0][:, 1] == pytest.approx([25 - half, 25 + half])
    assert bars[2][:, 1] == pytest.approx([0.0, 0.5 + half])
    (ring,) = [c for c in ax.collections if c.get_label() == "recommended"]
    assert np.asarray(ring.get_offsets())[0, 1] == pytest.approx(100 / 24 * 0.25)
    plt.close(fig)
