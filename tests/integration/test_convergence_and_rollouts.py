"""Twin convergence, provenance, dry runs and staged rollouts over the real platform, with
real MQTT devices reporting (issue 15). Clock time moves only by the ManualClock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from iiotsim.cli import main
from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from ..conftest import START
from .mqtt import Device, provision, wait_for

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

EVERYONE: dict[str, list[object]] = {"and": []}


class Reporter:
    """Devices connected over MQTT that report twin properties."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.devices: dict[str, Device] = {}

    def add(self, device_id: str) -> None:
        reg = provision(self.platform, device_id)
        device = Device(self.platform, reg.device_id, reg.password)
        assert device.connect() == 0
        self.devices[device_id] = device

    def report(self, device_id: str, patch: dict[str, Any]) -> None:
        self.devices[device_id].publish(f"devices/{device_id}/twin/reported", json.dumps(patch))

    def close(self) -> None:
        for device in self.devices.values():
            device.close()


@pytest.fixture
def reporter(platform: Platform) -> Iterator[Reporter]:
    fleet = Reporter(platform)
    yield fleet
    fleet.close()


def state(platform: Platform, device_id: str, prop: str) -> str | None:
    found = platform.admin.get_twin(device_id).convergence.get(prop)
    return None if found is None else found.state


def listed(platform: Platform, convergence: str, prop: str | None = None) -> list[str]:
    return [
        d.device_id
        for d in platform.admin.list_devices(convergence=convergence, desired_property=prop)
    ]


def test_pending_converged_drifted_with_the_time_since(
    platform: Platform, clock: ManualClock, reporter: Reporter
) -> None:
    admin = platform.admin
    reporter.add("pump-0201")
    reporter.add("pump-0202")
    admin.update_desired_properties("pump-0201", {"interval": 10, "mode": {"fan": 2}})
    twin = admin.get_twin("pump-0201")
    assert {k: v.state for k, v in twin.convergence.items()} == {
        "interval": "pending",
        "mode": "pending",
    }
    assert twin.convergence["interval"].source == "manual"
    assert twin.convergence["interval"].desired_version == twin.desired.version

    clock.advance(30)
    reporter.report("pump-0201", {"interval": 10, "mode": {"fan": 2, "rpm": 900}})
    assert wait_for(lambda: state(platform, "pump-0201", "mode") == "converged")
    interval = admin.get_twin("pump-0201").convergence["interval"]
    assert interval.state == "converged"  # a device may report more than it was asked
    assert interval.since == START + timedelta(seconds=30)
    assert interval.seconds_since_change == 30.0

    clock.advance(15)
    reporter.report("pump-0201", {"interval": 20})
    assert wait_for(lambda: state(platform, "pump-0201", "interval") == "drifted")
    interval = admin.get_twin("pump-0201").convergence["interval"]
    assert interval.since == START + timedelta(seconds=45)
    assert (interval.seconds_in_state, interval.seconds_since_change) == (0.0, 45.0)
    assert state(platform, "pump-0201", "mode") == "converged"

    admin.update_desired_properties("pump-0202", {"interval": 10})
    assert listed(platform, "drifted") == ["pump-0201"]
    assert listed(platform, "pending") == ["pump-0202"]
    assert listed(platform, "converged") == ["pump-0201"]  # its "mode"
    assert listed(platform, "converged", "interval") == []
    counts = admin.twin_convergence().properties
    assert (counts["interval"].pending, counts["interval"].drifted) == (1, 1)
    assert (counts["mode"].converged, counts["mode"].pending) == (1, 0)

    reporter.report("pump-0201", {"interval": 10})  # put right again
    assert wait_for(lambda: state(platform, "pump-0201", "interval") == "converged")
    admin.update_desired_properties("pump-0201", {"interval": 15})  # a new change: pending
    assert state(platform, "pump-0201", "interval") == "pending"
    admin.update_desired_properties("pump-0201", {"interval": None})  # removed: no state
    assert state(platform, "pump-0201", "interval") is None


def test_configuration_metrics_count_its_devices_by_convergence(
    platform: Platform, reporter: Reporter
) -> None:
    admin = platform.admin
    for device_id in ("pump-0211", "pump-0212", "pump-0213"):
        reporter.add(device_id)
    admin.create_fleet_configuration(EVERYONE, {"interval": 10}, configuration_id="base-all")
    metrics = admin.get_fleet_configuration("base-all").metrics
    assert (metrics.targeted, metrics.pending, metrics.converged, metrics.drifted) == (3, 3, 0, 0)

    reporter.report("pump-0211", {"interval": 10})
    reporter.report("pump-0212", {"interval": 10})
    assert wait_for(lambda: admin.get_fleet_configuration("base-all").metrics.converged == 2)
    reporter.report("pump-0212", {"interval": 99})
    assert wait_for(lambda: admin.get_fleet_configuration("base-all").metrics.drifted == 1)
    metrics = admin.get_fleet_configuration("base-all").metrics
    assert (metrics.pending, metrics.converged, metrics.drifted) == (1, 1, 1)
    assert metrics.applied == 1
    per_configuration = admin.twin_convergence().configurations["base-all"]
    assert (per_configuration.pending, per_configuration.drifted) == (1, 1)


def test_provenance_after_a_manual_patch_and_a_higher_priority_configuration(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = platform.admin
    provision(platform, "pump-0221")
    admin.create_fleet_configuration(
        EVERYONE, {"interval": 60, "eco": True}, priority=1, configuration_id="base-all"
    )
    found = admin.twin_provenance("pump-0221").properties
    assert (found["interval"].source, found["interval"].configuration_id) == (
        "configuration",
        "base-all",
    )
    assert found["interval"].priority == 1

    admin.update_desired_properties("pump-0221", {"interval": 5})  # an operator overrides
    found = admin.twin_provenance("pump-0221").properties
    assert (found["interval"].source, found["interval"].value) == ("manual", 5)
    assert found["interval"].set_at == START
    # the configuration that would set it again at the next re-evaluation is named
    assert [c.configuration_id for c in found["interval"].configurations] == ["base-all"]
    assert found["eco"].source == "configuration"

    admin.create_fleet_configuration(
        EVERYONE, {"interval": 10}, priority=5, configuration_id="fast-all"
    )
    found = admin.twin_provenance("pump-0221").properties
    interval = found["interval"]
    assert (interval.source, interval.configuration_id, interval.priority, interval.value) == (
        "configuration",
        "fast-all",
        5,
        10,
    )
    assert [(c.configuration_id, c.value) for c in interval.configurations] == [
        ("fast-all", 10),
        ("base-all", 60),
    ]
    assert (found["eco"].configuration_id, found["eco"].priority) == ("base-all", 1)

    argv = ["--server", platform.http_url, "--api-key", platform.admin_key]
    assert main(["provenance", "pump-0221", *argv]) == 0
    out = capsys.readouterr().out
    interval_line = next(line for line in out.splitlines() if line.startswith("interval"))
    assert "fast-all (priority 5)" in interval_line and "pending" in interval_line
    assert "fast-all=10, base-all=60" in interval_line
    assert main(["devices", "--convergence", "pending", "--property", "eco", *argv]) == 0
    assert "pump-0221" in capsys.readouterr().out
    assert main(["devices", "--convergence", "drifted", *argv]) == 0
    assert "No device has a desired property drifted" in capsys.readouterr().out


def test_dry_run_answers_before_and_after_and_writes_nothing(platform: Platform) -> None:
    admin = platform.admin
    for device_id in ("pump-0231", "pump-0232"):
        provision(platform, device_id)
    admin.update_tags("pump-0231", {"site": "plant-7"})
    admin.create_fleet_configuration(EVERYONE, {"interval": 60}, configuration_id="base-all")

    def snapshot() -> Any:
        twins = [admin.get_twin(d) for d in ("pump-0231", "pump-0232")]
        return (
            [(t.desired.properties, t.desired.version, t.desired.updated_at) for t in twins],
            [(c.id, c.desired_properties, c.updated_at) for c in admin.list_fleet_configurations()],
        )

    before = snapshot()
    plant7 = {"eq": {"path": "tags.site", "value": "plant-7"}}
    body: dict[str, Any] = {"id": "plant7-fast", "targetCondition": plant7, "priority": 5}
    body["desiredProperties"] = {"interval": 10}
    answer = admin._http.post("/api/v1/fleet-configurations", params={"dryRun": "true"}, json=body)
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert (preview["dryRun"], preview["targeted"], preview["changed"]) == (True, 1, 1)
    assert preview["devices"] == [
        {
            "deviceId": "pump-0231",
            "targeted": True,
            "stage": 0,
            "changed": True,
            "before": {"interval": 60},
            "after": {"interval": 10},
        }
    ]
    # a change of the existing one, previewed: both devices would change
    changed = admin.preview_fleet_configuration(
        EVERYONE, {"interval": 30, "eco": True}, configuration_id="base-all", replace=True
    )
    assert [(d.device_id, d.after) for d in changed.devices] == [
        ("pump-0231", {"interval": 30, "eco": True}),
        ("pump-0232", {"interval": 30, "eco": True}),
    ]
    assert snapshot() == before
    assert [c.id for c in admin.list_fleet_configurations()] == ["base-all"]


def test_staged_rollout_advances_at_the_threshold_and_halts_on_drift(
    platform: Platform, clock: ManualClock, reporter: Reporter
) -> None:
    from iiot_server.domain.convergence import rollout_order  # here: the other tests run on
    # the code before convergence existed, to watch them fail there

    admin = platform.admin
    ids = ["pump-0241", "pump-0242", "pump-0243", "pump-0244"]
    for device_id in ids:
        reporter.add(device_id)
    rollout = {
        "stages": [{"count": 1}, {"count": 2}, {"percent": 100}],
        "advanceWhenConverged": 1.0,
        "haltWhenDrifted": 0.4,
    }
    created = admin.create_fleet_configuration(
        EVERYONE, {"fw": "2.0"}, configuration_id="fw-2", rollout=rollout
    )
    assert created.rollout is not None
    assert (created.rollout.state, created.rollout.stage) == ("rolling", 0)

    def admitted() -> list[str]:
        return [d for d in ids if "fw" in admin.get_twin(d).desired.properties]

    def stages() -> list[tuple[int, int, int]]:
        metrics = admin.get_fleet_configuration("fw-2").metrics
        return [(s.admitted, s.converged, s.drifted) for s in metrics.stages]

    def rollout_state() -> tuple[str, int]:
        found = admin.get_fleet_configuration("fw-2").rollout
        assert found is not None
        return found.state, found.stage

    # the stages' order: a hash of configuration and device (default workspace: bare ids)
    order = rollout_order("fw-2", ids)
    first, second, last = order[:1], order[1:3], order[3:]
    assert admitted() == first
    assert stages() == [(1, 0, 0), (0, 0, 0), (0, 0, 0)]
    reporter.report(last[0], {"fw": "2.0"})  # not admitted yet: does not count
    reporter.report(first[0], {"fw": "1.0"})
    assert wait_for(lambda: admin.get_twin(first[0]).reported.properties == {"fw": "1.0"})
    assert admitted() == first

    clock.advance(60)
    reporter.report(first[0], {"fw": "2.0"})  # stage 0 converged: 1 of 1 reaches 1.0
    assert wait_for(lambda: len(admitted()) == 3)
    assert sorted(admitted()) == sorted(first + second)
    assert rollout_state() == ("rolling", 1)
    assert [state(platform, d, "fw") for d in second] == ["pending", "pending"]

    reporter.report(second[0], {"fw": "2.0"})  # 1 of 2 converged: below 1.0, it waits
    assert wait_for(lambda: state(platform, second[0], "fw") == "converged")
    assert stages()[1] == (2, 1, 0)
    assert rollout_state() == ("rolling", 1)

    clock.advance(60)
    reporter.report(second[0], {"fw": "1.9"})  # 1 of 2 drifted: passes 0.4, it halts
    assert wait_for(lambda: rollout_state()[0] == "halted")
    halted = admin.get_fleet_configuration("fw-2").rollout
    assert halted is not None and halted.stage == 1
    assert halted.reason is not None and "1 of 2 devices drifted" in halted.reason
    reporter.report(second[0], {"fw": "2.0"})  # halted: converging does not advance it
    reporter.report(second[1], {"fw": "2.0"})
    assert wait_for(lambda: stages()[1] == (2, 2, 0))
    assert rollout_state() == ("halted", 1)
    assert len(admitted()) == 3

    assert admin.resume_rollout("fw-2").rollout.stage == 2  # type: ignore[union-attr]
    assert sorted(admitted()) == sorted(ids)
    # last[0] reported 2.0 before it was admitted: converged at once, the rollout completes
    assert rollout_state() == ("completed", 2)
    metrics = admin.get_fleet_configuration("fw-2").metrics
    assert [(s.admitted, s.converged) for s in metrics.stages] == [(1, 1), (2, 2), (1, 1)]
    assert (metrics.targeted, metrics.converged) == (4, 4)
    # the audit trail: automatic stage changes as the platform, the resume as the admin
    events = sorted(
        (e.action, e.actor.split(":")[0])
        for e in admin.audit(target_id="fw-2")
        if "rollout" in e.action
    )
    assert events == [
        ("configuration.rollout_advanced", "system"),
        ("configuration.rollout_advanced", "system"),
        ("configuration.rollout_completed", "system"),
        ("configuration.rollout_halted", "system"),
        ("configuration.rollout_resumed", "api_key"),
    ]


def test_rollout_and_dry_run_refuse_bad_input(platform: Platform) -> None:
    http = platform.admin._http
    bad = {
        "targetCondition": EVERYONE,
        "desiredProperties": {"a": 1},
        "rollout": {"stages": [{"percent": 150}]},
    }
    answer = http.post("/api/v1/fleet-configurations", json=bad)
    assert answer.status_code == 400
    assert answer.json()["field"] == "rollout.stages[0].percent"
    answer = http.post("/api/v1/fleet-configurations", params={"dryRun": "true"}, json=bad)
    assert (answer.status_code, answer.json()["field"]) == (400, "rollout.stages[0].percent")
    answer = http.get("/api/v1/devices", params={"convergence": "sideways"})
    assert answer.status_code == 400
    admin = platform.admin
    admin.create_fleet_configuration(EVERYONE, {"a": 1}, configuration_id="plain")
    answer = http.post("/api/v1/fleet-configurations/plain/rollout/resume")
    assert answer.status_code == 409


def test_convergence_and_provenance_stay_in_their_workspace(platform: Platform) -> None:
    admin = platform.admin
    admin.create_workspace("ws-1")
    with admin.in_workspace("ws-1") as ws, httpx.Client(base_url=platform.http_url) as http:
        pt = ws.create_provisioning_token("ws-1 line").provisioning_token
        auth = {"Authorization": f"DeviceToken {pt}"}
        op = http.post(
            "/provisioning-operations/init", json={"deviceId": "pump-0251"}, headers=auth
        ).json()
        ws.approve_operation(op["provisioningOperationId"])
        done = http.put(
            "/provisioning-operations/complete",
            json={"provisioningOperationId": op["provisioningOperationId"]},
            headers=auth,
        )
        assert done.status_code == 200, done.text
        provision(platform, "pump-0251")  # the same Device ID in default
        ws.create_fleet_configuration(EVERYONE, {"fw": "3.0"}, configuration_id="fw-3")

        assert [d.device_id for d in ws.list_devices(convergence="pending")] == ["pump-0251"]
        assert ws.twin_convergence().properties["fw"].pending == 1
        assert ws.twin_provenance("pump-0251").properties["fw"].configuration_id == "fw-3"
        assert ws.get_fleet_configuration("fw-3").metrics.pending == 1
    assert admin.list_devices(convergence="pending") == []
    assert admin.twin_convergence().properties == {}
    assert admin.twin_provenance("pump-0251").properties == {}
    assert admin.get_twin("pump-0251").convergence == {}
