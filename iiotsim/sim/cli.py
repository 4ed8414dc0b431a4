"""``iiotsim simulate``: a scenario or sweep file in, tables and plots out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from . import plots
from .model import simulate
from .scenario import Scenario, ScenarioError
from .sweep import sweep


def run_file(path: Path, out: Path, *, processes: int | None = None) -> list[Path]:
    """Run the scenario (or sweep) in ``path``; returns the files written under ``out``."""
    data: Any = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ScenarioError("scenario", "the file must hold a JSON object")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "sweep" in data:
        grid = data["sweep"]
        if not isinstance(grid, dict) or not grid:
            raise ScenarioError("sweep", "needs an object of field: [values]")
        base = Scenario.from_dict(data.get("scenario", {}))
        frame = sweep(
            base,
            repetitions=int(data.get("repetitions", 1)),
            processes=processes,
            **{k.replace(".", "__"): v for k, v in grid.items()},
        )
        written += [out / "sweep.parquet", out / "sweep.csv"]
        frame.to_parquet(written[-2])
        frame.to_csv(written[-1], index=False)
        label = next(iter(grid))
        figure = plots.tradeoff(frame, label=label)
        written.append(out / "tradeoff.png")
        figure.savefig(written[-1], dpi=120, bbox_inches="tight")
        return written
    scenario = Scenario.from_dict(data.get("scenario", data))
    result = simulate(scenario)
    for name in ("events", "devices", "timeline"):
        frame = getattr(result, name)
        written += [out / f"{name}.parquet", out / f"{name}.csv"]
        frame.to_parquet(written[-2])
        frame.to_csv(written[-1])
    written.append(out / "summary.csv")
    result.summary.to_csv(written[-1], header=["value"])
    for name, draw in (("fleet_state", plots.fleet_state), ("server_load", plots.server_load)):
        written.append(out / f"{name}.png")
        draw(result).savefig(written[-1], dpi=120, bbox_inches="tight")
    (out / "scenario.json").write_bytes(scenario.to_json())
    written.append(out / "scenario.json")
    return written
