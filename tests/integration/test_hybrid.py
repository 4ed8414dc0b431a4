"""Hybrid runs: the per-device proxies really cut connections, and a small run of real
devices matches the simulator's lockouts."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iiotsim.sim import (
    Connectivity,
    Distribution,
    Messages,
    Provisioning,
    Scenario,
    TokenPolicy,
)
from iiotsim.twin import HybridRun, HybridWorkerFailed, ProxyHub


def test_a_link_going_down_closes_connections_and_refuses_new_ones() -> None:
    with socket.socket() as target:
        target.bind(("127.0.0.1", 0))
        target.listen()
        hub = ProxyHub()
        try:
            link = hub.link(target.getsockname()[1])
            client = socket.create_connection(("127.0.0.1", link.port), timeout=5)
            server_side, _ = target.accept()
            client.sendall(b"ping")
            assert server_side.recv(4) == b"ping"
            hub.call(link.down())
            client.settimeout(5)
            with contextlib.suppress(ConnectionResetError):  # reset also means closed
                assert client.recv(1) == b""  # closed, not silent
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", link.port), timeout=2)
            # the device keeps this port for the run: no one else may take it meanwhile
            # (a 1,000-device run lost one to an outgoing connection's local port)
            with socket.socket() as other, pytest.raises(OSError, match="in use"):
                other.bind(("127.0.0.1", link.port))
            hub.call(link.up())
            again = socket.create_connection(("127.0.0.1", link.port), timeout=5)
            again.close()
            client.close()
            server_side.close()
        finally:
            hub.close()


def small_scenario() -> Scenario:
    return Scenario(
        fleet_size=8,
        duration_days=0.5,
        connectivity=Connectivity(
            on=Distribution.exponential(2 * 3600), off=Distribution.exponential(2 * 3600)
        ),
        token=TokenPolicy(lifetime=3 * 3600),
        provisioning=Provisioning(
            technicians=100, approval_time=Distribution.fixed(1.0), working_hours=None
        ),
        messages=Messages(rate_per_hour=0),
        seed=11,
    )


def test_small_hybrid_run_matches_the_simulator() -> None:
    calls: list[tuple[float, float]] = []
    with HybridRun(small_scenario()) as run:
        result = run.run(progress=lambda done, total: calls.append((done, total)))
    # progress: simulated seconds, never back, from 0 to the whole horizon
    horizon = 0.5 * 86400
    done = [d for d, _ in calls]
    assert len(calls) > 2 and {t for _, t in calls} == {horizon}
    assert done[0] == 0 and done[-1] == horizon
    assert all(a < b for a, b in itertools.pairwise(done))
    # online over time: the real devices (connection records) beside the prediction
    online = result.online
    assert list(online.columns) == ["hybrid", "simulator"]
    assert online.index.name == "hours" and len(online) == 12
    assert online.index[0] == 0 and online.index[-1] == 11
    assert ((online >= 0) & (online <= 8)).all().all()
    assert online["hybrid"].iloc[0] > 7  # every device starts online with a new token
    assert online["hybrid"].min() < 8  # and the scenario takes some offline
    assert online["simulator"].tolist() == result.simulated.timeline["online"].tolist()
    assert abs(online["hybrid"].mean() - online["simulator"].mean()) <= 1.0
    assert result.off_periods > 0
    row = result.comparison.loc["lockouts per off period"]
    assert abs(row["hybrid"] - row["simulator"]) <= 0.1
    refreshes = result.comparison.loc["token refreshes"]
    assert refreshes["hybrid"] > 0
    assert abs(refreshes["hybrid"] - refreshes["simulator"]) <= 0.1 * refreshes["simulator"]


def fleet_scenario(devices: int = 80) -> Scenario:
    """Lockouts to recover (off periods longer than half the 3 h lifetime), technicians
    who take their time (2 of them, 10 min per approval on average), and messages."""
    return Scenario(
        fleet_size=devices,
        duration_days=0.5,
        connectivity=Connectivity(
            on=Distribution.exponential(3 * 3600), off=Distribution.exponential(1.5 * 3600)
        ),
        token=TokenPolicy(lifetime=3 * 3600),
        provisioning=Provisioning(
            technicians=2, approval_time=Distribution.exponential(600), working_hours=None
        ),
        messages=Messages(rate_per_hour=4),
        seed=5,
    )


@pytest.mark.timeout(900)
def test_two_worker_processes_agree_with_the_simulator_on_every_metric() -> None:
    """2 processes x 40 devices, one coordinator clock: every compared metric within the
    tolerance its row states (``within``), and each kind of activity really happened."""
    with HybridRun(fleet_scenario(), processes=2) as run:
        result = run.run()
    comparison = result.comparison
    assert {
        "lockouts per off period",
        "token refreshes",
        "approval delay mean (h)",
        "messages produced",
        "messages delivered fraction",
        "messages lost",
        "message latency p50 (s)",
        "connects per day",
        "provisioning operations",
    } <= set(comparison.index)
    outside = comparison[comparison["within"].eq(False)]
    assert outside.empty, outside.drop(columns="why").to_string()
    assert result.lockouts > 0 and run.approval_delays  # technicians approved, later
    assert min(run.approval_delays) > 1.0  # at simulated times, not at once
    assert comparison.loc["messages produced", "hybrid"] > 1000
    assert (result.latency >= 0).all()
    assert result.load["connect_per_s"].sum() > 0
    assert list(result.load.columns[:3]) == ["connect_per_s", "refresh_per_s", "provisioning_per_s"]


def test_a_killed_worker_ends_the_run_with_an_error_naming_it() -> None:
    killed: list[float] = []

    def kill_worker_1(done: float, _total: float) -> None:
        if done > 3600 and not killed:
            run.workers[1].process.kill()
            killed.append(done)

    with (
        HybridRun(small_scenario(), processes=2, worker_timeout=60) as run,
        pytest.raises(HybridWorkerFailed, match=r"worker 1 \(devices 4-7\)"),
    ):
        run.run(progress=kill_worker_1)
    assert killed


def test_workers_on_a_local_dask_cluster() -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        dask_pids = set(client.run(os.getpid).values())
        with HybridRun(small_scenario(), processes=2, dask=client) as run:
            result = run.run()
            placed = {w.pid for w in run.workers}
    assert placed == dask_pids and os.getpid() not in placed  # one worker per Dask worker
    assert result.off_periods > 0
    assert result.comparison.loc["lockouts per off period", "within"]


COORDINATOR = """
from iiotsim.sim import Connectivity, Distribution, Scenario
from iiotsim.twin import HybridRun

if __name__ == "__main__":
    scenario = Scenario(
        fleet_size=60,
        duration_days=0.5,
        connectivity=Connectivity(
            on=Distribution.exponential(7200), off=Distribution.exponential(7200)
        ),
    )
    with HybridRun(scenario, processes=2) as run:
        run.run()
"""


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                    found.add(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal")
def test_workers_end_with_a_coordinator_killed_while_their_devices_start(
    tmp_path: Path,
) -> None:
    """A coordinator killed (a notebook kernel restarted) while its workers start their
    devices: the workers end too, instead of retrying a dead platform forever on a clock
    nobody moves."""
    script = tmp_path / "coordinator.py"
    script.write_text(COORDINATOR)
    temp = tmp_path / "tmp"
    temp.mkdir()
    coordinator = subprocess.Popen(
        [sys.executable, str(script)], env={**os.environ, "TMPDIR": str(temp)}
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        # devices starting: a worker's directory holds a device database
        while not list(temp.glob("iiotsim-hybrid-worker-*/*.db")):
            assert coordinator.poll() is None, "the coordinator ended by itself"
            assert time.monotonic() < deadline, "no worker started its devices"
            time.sleep(0.05)
        workers = _children(coordinator.pid)
        assert len(workers) == 2
        coordinator.kill()
        coordinator.wait(10)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived the coordinator"
            time.sleep(0.05)
    finally:
        coordinator.kill()
        for pid in workers | _children(coordinator.pid):  # orphans are no longer its children
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
