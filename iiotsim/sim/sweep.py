"""Grids of scenarios over processes (or an existing Dask cluster), one tidy DataFrame."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from .model import simulate
from .scenario import Scenario, ScenarioError


def _run(task: tuple[int, dict[str, Any], int, bytes]) -> tuple[int, dict[str, Any]]:
    index, params, repetition, scenario_json = task
    scenario = Scenario.from_json(scenario_json)
    row: dict[str, Any] = {**params, "repetition": repetition, "seed": scenario.seed}
    row.update({str(k): v for k, v in simulate(scenario).summary.items()})
    return index, row


def grid_scenarios(
    base: Scenario, grid: dict[str, Sequence[Any]], repetitions: int = 1
) -> list[tuple[dict[str, Any], int, Scenario]]:
    """Every combination of ``grid`` (dotted paths; ``__`` stands for a dot in keyword
    names) times ``repetitions``; repetition r uses seed ``base.seed + r`` at every grid
    point (common random numbers: policies are compared on the same weather)."""
    if repetitions < 1:
        raise ScenarioError("repetitions", f"must be at least 1, got {repetitions}")
    keys = [k.replace("__", ".") for k in grid]
    for key, values in zip(keys, grid.values(), strict=True):
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ScenarioError(key, "a sweep needs a list of values")
    out = []
    for combo in itertools.product(*grid.values()):
        params = dict(zip(keys, combo, strict=True))
        for r in range(repetitions):
            scenario = base.replace(**params, seed=base.seed + r)
            out.append((params, r, scenario))
    return out


def effective_scenario(scenario: Scenario) -> Scenario:
    """The scenario with the settings that cannot change its run put to one value: an
    infinite lifetime's refresh fraction (nothing refreshes). Runs of scenarios with
    the same effective scenario are identical (``tests/sim/test_sweep_dedupe.py``)."""
    token = scenario.token
    if token.lifetime is None and token.refresh_fraction != 0.5:
        return scenario.replace(**{"token.refresh_fraction": 0.5})
    return scenario


def sweep(
    base: Scenario,
    *,
    repetitions: int = 1,
    processes: int | None = None,
    client: Any = None,
    progress: bool = True,
    **grid: Sequence[Any],
) -> pd.DataFrame:
    """Run ``base`` over the grid, e.g. ``sweep(s, token__lifetime=[3600, 86400])``.

    Runs in ``processes`` worker processes (default: one per CPU), or on a Dask cluster
    when ``client`` (a ``distributed.Client``) is given. One row per run: the grid
    values, ``repetition``, ``seed`` and the run's summary, in grid order whatever order
    the runs finished in; ``frame.attrs["grid"]`` names the grid columns.

    Repetition r runs every policy with seed ``base.seed + r`` (common random numbers:
    the same connectivity, deployment, outages and leak events for every policy), so
    ``summarize_sweep(frame)`` gives per-policy means with Student-t intervals and
    ``compare_policies(frame, a, b)`` a paired difference (:mod:`.stats`).
    """
    runs = grid_scenarios(base, grid, repetitions)
    # a policy that cannot differ from another in effect is run once: with an infinite
    # lifetime nothing refreshes, so every refresh fraction gives the same run (a
    # lifetime x fraction grid repeats it once per fraction: 15 of notebook 02's 160)
    first: dict[bytes, int] = {}
    same_as: dict[int, int] = {}
    tasks = []
    for i, (p, r, s) in enumerate(runs):
        key = effective_scenario(s).to_json()
        if key in first:
            same_as[i] = first[key]
        else:
            first[key] = i
            tasks.append((i, p, r, s.to_json()))
    # run a repetition's policies one after another: a worker then draws the shared
    # connectivity once per repetition (``simulate`` keeps the last fleet); rows are
    # placed by index, so the frame's order is unchanged
    tasks.sort(key=lambda task: (task[2], task[0]))
    rows: list[dict[str, Any] | None] = [None] * len(runs)
    bar = tqdm(total=len(tasks), desc="simulations", disable=not progress)
    try:
        if client is not None:
            from distributed import as_completed as dask_completed

            futures = client.map(_run, tasks, pure=False)
            for future in dask_completed(futures):  # type: ignore[no-untyped-call]
                index, row = future.result()
                rows[index] = row
                bar.update()
        elif (processes or os.cpu_count() or 1) == 1 or len(tasks) == 1:
            for task in tasks:
                index, row = _run(task)
                rows[index] = row
                bar.update()
        else:
            workers = min(len(tasks), processes or os.cpu_count() or 1)
            context = multiprocessing.get_context("spawn")  # safe beside threads (servers)
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for future in as_completed([pool.submit(_run, t) for t in tasks]):
                    index, row = future.result()
                    rows[index] = row
                    bar.update()
    finally:
        bar.close()
    for i, j in same_as.items():
        params, repetition, scenario = runs[i]
        twin = rows[j]
        assert twin is not None
        rows[i] = {**twin, **params, "repetition": repetition, "seed": scenario.seed}
    frame = pd.DataFrame([r for r in rows if r is not None])
    frame.attrs["grid"] = [k.replace("__", ".") for k in grid]
    return frame
