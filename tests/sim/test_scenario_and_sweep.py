"""Scenario validation, sweeps (processes and a local Dask cluster) and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from iiotsim.sim import Distribution, Scenario, ScenarioError, TokenPolicy, sweep
from iiotsim.sim.plots import pareto_front

SMALL = Scenario(fleet_size=100, duration_days=5, seed=9)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fleet_size": 0}, "fleet_size"),
        ({"token": TokenPolicy(refresh_fraction=1.5)}, "token.refresh_fraction"),
        ({"token": TokenPolicy(lifetime=0.5)}, "token.lifetime"),
        ({"connectivity": {"on": Distribution.weibull(3600, -1)}}, "connectivity.on.shape"),
        ({"deployment_days": 10}, "deployment_days"),
    ],
)
def test_bad_values_name_their_field(change: dict[str, object], field: str) -> None:
    data = {**SMALL.to_builtins(), **{k: _builtins(v) for k, v in change.items()}}
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(data)
    assert info.value.field == field, info.value


def _builtins(value: object) -> object:
    import msgspec

    return msgspec.to_builtins(value)


def test_json_errors_name_the_field() -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_json(b'{"token": {"lifetime": "a week"}}')
    assert info.value.field == "token.lifetime"
    with pytest.raises(ScenarioError) as unknown:
        Scenario.from_json(b'{"tokens": {}}')
    assert "tokens" in str(unknown.value)


def test_scenario_round_trips_through_json() -> None:
    scenario = SMALL.replace(**{"token.lifetime": 7200, "connectivity.off.kind": "lognormal"})
    assert Scenario.from_json(scenario.to_json()) == scenario
    assert scenario.token.lifetime == 7200


def test_sweep_is_tidy_ordered_and_deterministic() -> None:
    kwargs = {"token__lifetime": [3600, 86400, None], "repetitions": 2, "progress": False}
    first = sweep(SMALL, processes=2, **kwargs)  # type: ignore[arg-type]
    again = sweep(SMALL, processes=1, **kwargs)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(first, again)
    assert list(first["token.lifetime"].fillna(-1)) == [3600, 3600, 86400, 86400, -1, -1]
    assert list(first["repetition"]) == [0, 1] * 3
    assert first.loc[first["token.lifetime"] == 3600, "lockouts"].sum() > 0
    assert (first.loc[first["token.lifetime"].isna(), "lockouts"] == 0).all()


def test_sweep_runs_unchanged_on_a_dask_cluster() -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        on_dask = sweep(SMALL, client=client, progress=False, token__lifetime=[3600, 86400])
    local = sweep(SMALL, processes=1, progress=False, token__lifetime=[3600, 86400])
    pd.testing.assert_frame_equal(on_dask, local)


def test_pareto_front_keeps_only_undominated_policies() -> None:
    frame = pd.DataFrame({"x": [0, 1, 2, 3], "y": [9, 4, 5, 1]})
    assert list(pareto_front(frame, "x", "y").index) == [0, 1, 3]


def test_cli_writes_tables_and_plots(tmp_path: Path) -> None:
    spec = tmp_path / "sweep.json"
    spec.write_text(
        json.dumps(
            {
                "scenario": {"fleet_size": 50, "duration_days": 3},
                "sweep": {"token.lifetime": [3600, 86400]},
            }
        )
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "iiotsim.cli", "simulate", str(spec), "--out", str(out),
         "--processes", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert pd.read_parquet(out / "sweep.parquet").shape[0] == 2
    assert (out / "tradeoff.png").stat().st_size > 10_000
    bad = tmp_path / "bad.json"
    bad.write_text('{"fleet_size": -3}')
    refused = subprocess.run(
        [sys.executable, "-m", "iiotsim.cli", "simulate", str(bad), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: fleet_size:")
    assert "Traceback" not in refused.stderr
