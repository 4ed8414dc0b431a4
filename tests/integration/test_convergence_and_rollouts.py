"""Twin convergence, provenance, dry runs and staged rollouts over the real platform, with
real MQTT devices reporting (issue 15). Clock time moves only by the ManualClock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
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


# Failures and timeouts (issue 15: a rollout halts "when drift or errors pass" a threshold)


def rollout_of(platform: Platform, configuration_id: str) -> tuple[str, int, str | None]:
    found = platform.admin.get_fleet_configuration(configuration_id).rollout
    assert found is not None
    return found.state, found.stage, found.reason


def test_a_failure_acknowledgement_fails_the_property_and_halts_the_stage(
    platform: Platform, reporter: Reporter
) -> None:
    from iiot_server.domain.convergence import rollout_order

    admin = platform.admin
    ids = ["pump-0261", "pump-0262", "pump-0263"]
    for device_id in ids:
        reporter.add(device_id)
    rollout = {
        "stages": [{"count": 2}, {"percent": 100}],
        "advanceWhenConverged": 1.0,
        "haltWhenDriftedOrFailed": 0.4,
    }
    admin.create_fleet_configuration(
        EVERYONE, {"fw": "4.0"}, configuration_id="fw-4", rollout=rollout
    )
    ok, refusing = rollout_order("fw-4", ids)[:2]
    version = admin.get_twin(refusing).convergence["fw"].desired_version

    def reported(device_id: str) -> Any:
        return admin.get_twin(device_id).reported.properties.get("fw")

    # an IoT Plug and Play acknowledgement of an older desired version: not about 4.0
    stale = {"value": "3.9", "ac": 500, "av": version - 1, "ad": "flash full"}
    reporter.report(refusing, {"fw": stale})
    assert wait_for(lambda: reported(refusing) == stale)
    assert state(platform, refusing, "fw") == "pending"
    # a successful acknowledgement holding the value converges, like the bare value
    ok_version = admin.get_twin(ok).convergence["fw"].desired_version
    reporter.report(ok, {"fw": {"value": "4.0", "ac": 200, "av": ok_version}})
    assert wait_for(lambda: state(platform, ok, "fw") == "converged")
    assert rollout_of(platform, "fw-4")[:2] == ("rolling", 0)  # 1 of 2: it waits

    refused = {"value": "3.9", "ac": 500, "av": version, "ad": "flash write failed"}
    reporter.report(refusing, {"fw": refused})
    assert wait_for(lambda: rollout_of(platform, "fw-4")[0] == "halted")
    reason = rollout_of(platform, "fw-4")[2]
    assert reason is not None and "1 of 2 devices failed" in reason
    assert state(platform, refusing, "fw") == "failed"
    assert listed(platform, "failed") == [refusing]
    assert listed(platform, "failed", "fw") == [refusing]
    metrics = admin.get_fleet_configuration("fw-4").metrics
    assert (metrics.converged, metrics.failed, metrics.pending) == (1, 1, 0)
    assert [(s.admitted, s.converged, s.failed) for s in metrics.stages] == [(2, 1, 1), (0, 0, 0)]
    fleet = admin.twin_convergence()
    assert (fleet.properties["fw"].failed, fleet.configurations["fw-4"].failed) == (1, 1)

    reporter.report(refusing, {"fw": "4.0"})  # the device retried and made it
    assert wait_for(lambda: state(platform, refusing, "fw") == "converged")
    assert listed(platform, "failed") == []
    assert rollout_of(platform, "fw-4")[:2] == ("halted", 0)  # halted stays halted


def test_a_device_that_never_answers_times_out_on_the_clock_alone(
    platform: Platform, clock: ManualClock, reporter: Reporter
) -> None:
    """Two rollouts wait on the same silent device: past its ``pendingTimeout`` the
    strict one halts, the lenient one leaves it behind and completes; only the
    ManualClock moves (the platform's timer judges the stage, no report does)."""
    from iiot_server.domain.convergence import rollout_order

    admin = platform.admin
    ids = ["pump-0271", "pump-0272", "pump-0273"]
    strict, lenient = "fw-5", "cal-5"
    # the silent device: in the first stage (2 of 3) of both rollouts
    silent = sorted(set(rollout_order(strict, ids)[:2]) & set(rollout_order(lenient, ids)[:2]))[0]
    for device_id in ids:
        if device_id == silent:
            provision(platform, device_id)  # never connects
        else:
            reporter.add(device_id)
            reporter.report(device_id, {"fw": "5.0", "cal": 7})  # answers everything
    assert wait_for(
        lambda: all(
            admin.get_twin(d).reported.properties.get("cal") == 7 for d in ids if d != silent
        )
    )
    stages = [{"count": 2}, {"percent": 100}]
    plan = {"stages": stages, "advanceWhenConverged": 1.0}
    admin.create_fleet_configuration(
        EVERYONE,
        {"fw": "5.0"},
        configuration_id=strict,
        rollout={**plan, "haltWhenDriftedOrFailed": 0.4, "pendingTimeout": 600},
    )
    admin.create_fleet_configuration(
        EVERYONE,
        {"cal": 7},
        configuration_id=lenient,
        rollout={**plan, "haltWhenDriftedOrFailed": 0.5, "pendingTimeout": 900},
    )

    def first_stage(configuration_id: str) -> tuple[int, int, int, int]:
        s = admin.get_fleet_configuration(configuration_id).metrics.stages[0]
        return s.admitted, s.converged, s.pending, s.timed_out

    assert first_stage(strict) == first_stage(lenient) == (2, 1, 1, 0)
    assert rollout_of(platform, strict)[:2] == rollout_of(platform, lenient)[:2] == ("rolling", 0)

    clock.advance(599)
    assert first_stage(strict) == (2, 1, 1, 0)
    clock.advance(1)  # 600 s: the strict rollout's silent device times out (1 of 2 > 0.4)
    assert wait_for(lambda: rollout_of(platform, strict)[0] == "halted")
    reason = rollout_of(platform, strict)[2]
    assert reason is not None and "1 of 2 devices timed out (pending over 600 s)" in reason
    assert first_stage(strict) == (2, 1, 1, 1)  # still pending on the device, timed out
    assert state(platform, silent, "fw") == "pending"
    assert rollout_of(platform, lenient)[:2] == ("rolling", 0)
    assert first_stage(lenient) == (2, 1, 1, 0)

    clock.advance(300)  # 900 s: 1 of 2 timed out is not above 0.5: left behind, it advances
    assert wait_for(lambda: rollout_of(platform, lenient)[0] == "completed")
    assert rollout_of(platform, lenient)[1] == 1
    assert "cal" in admin.get_twin(silent).desired.properties
    assert all("cal" in admin.get_twin(d).desired.properties for d in ids)
    halted = [e for e in admin.audit(target_id=strict) if e.action.endswith("rollout_halted")]
    assert len(halted) == 1 and halted[0].detail is not None
    assert halted[0].detail["stage"]["timedOut"] == 1


def test_a_pending_timeout_is_armed_again_after_a_restart(
    clock: ManualClock, tmp_path: Path, database_url: str | None
) -> None:
    """The timer lives in the platform's loop; the admission time is stored, so a
    platform started again on the same data judges the stage when the timeout comes."""
    rollout = {"stages": [{"count": 1}, {"percent": 100}], "pendingTimeout": 600}
    rollout["haltWhenDriftedOrFailed"] = 0.0
    with Platform(data_dir=tmp_path / "data", clock=clock, database_url=database_url) as first:
        provision(first, "pump-0281")  # never answers
        first.admin.create_fleet_configuration(
            EVERYONE, {"fw": "6.0"}, configuration_id="fw-6", rollout=rollout
        )
        assert rollout_of(first, "fw-6")[0] == "rolling"
    clock.advance(300)  # half of it passes while the platform is down
    with Platform(data_dir=tmp_path / "data", clock=clock, database_url=database_url) as again:
        assert rollout_of(again, "fw-6")[0] == "rolling"
        clock.advance(300)
        assert wait_for(lambda: rollout_of(again, "fw-6")[0] == "halted")
        metrics = again.admin.get_fleet_configuration("fw-6").metrics
        assert metrics.stages[0].timed_out == 1


def test_rollout_plans_take_a_pending_timeout_and_refuse_bad_ones(platform: Platform) -> None:
    http = platform.admin._http

    def create(rollout: dict[str, Any]) -> httpx.Response:
        body = {"targetCondition": EVERYONE, "desiredProperties": {"a": 1}, "rollout": rollout}
        return http.post("/api/v1/fleet-configurations", json=body)

    stages = [{"count": 1}, {"percent": 100}]
    refused: list[tuple[dict[str, Any], str]] = [
        ({"pendingTimeout": -5}, "rollout.pendingTimeout"),
        ({"pendingTimeout": 0}, "rollout.pendingTimeout"),
        ({"pendingTimeout": "1h"}, "rollout.pendingTimeout"),
        ({"haltWhenDriftedOrFailed": 1.5}, "rollout.haltWhenDriftedOrFailed"),
        ({"haltWhenDriftedOrFailed": -0.1}, "rollout.haltWhenDriftedOrFailed"),
        ({"haltWhenDrifted": 0.1, "haltWhenDriftedOrFailed": 0.2}, "rollout.haltWhenDrifted"),
    ]
    for bad, field in refused:
        answer = create({"stages": stages, **bad})
        assert (answer.status_code, answer.json().get("field")) == (400, field), answer.text
        if "pendingTimeout" in bad:
            assert "seconds above 0" in answer.json()["detail"]
    assert platform.admin.list_fleet_configurations() == []

    answer = create({"stages": stages, "pendingTimeout": 600, "haltWhenDrifted": 0.2})
    assert answer.status_code == 201, answer.text
    plan = answer.json()["rollout"]["plan"]
    # the old name is the same threshold, shown under its new name
    assert (plan["pendingTimeout"], plan["haltWhenDriftedOrFailed"]) == (600, 0.2)
