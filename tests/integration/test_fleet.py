"""Fleet configurations over the real platform: priority, metrics, re-evaluation."""

from __future__ import annotations

import json

import httpx
import pytest

from iiotsim.errors import PlatformError
from iiotsim.platform import Platform

from .mqtt import WAIT, Device, provision, wait_for

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

PLANT7 = {"eq": {"path": "tags.site", "value": "plant-7"}}
EVERYONE: dict[str, list[object]] = {"and": []}


@pytest.fixture
def fleet(platform: Platform) -> list[str]:
    ids = ["pump-0101", "pump-0102", "pump-0103"]
    for device_id in ids:
        provision(platform, device_id)
    platform.admin.update_tags("pump-0101", {"site": "plant-7"})
    platform.admin.update_tags("pump-0102", {"site": "plant-7"})
    platform.admin.update_tags("pump-0103", {"site": "plant-8"})
    return ids


def desired(platform: Platform, device_id: str) -> dict[str, object]:
    return platform.admin.get_twin(device_id).desired.properties


def test_configurations_apply_by_priority(platform: Platform, fleet: list[str]) -> None:
    admin = platform.admin
    admin.create_fleet_configuration(
        EVERYONE, {"interval": 60, "eco": True}, priority=1, configuration_id="base-all"
    )
    admin.create_fleet_configuration(
        PLANT7, {"interval": 10}, priority=5, configuration_id="plant7-fast"
    )
    assert desired(platform, "pump-0101") == {"interval": 10, "eco": True}
    assert desired(platform, "pump-0103") == {"interval": 60, "eco": True}
    metrics = {
        c.id: (c.metrics.targeted, c.metrics.applied) for c in admin.list_fleet_configurations()
    }
    assert metrics == {"base-all": (3, 0), "plant7-fast": (2, 0)}


def test_applied_metric_counts_devices_that_reported_back(
    platform: Platform, fleet: list[str]
) -> None:
    reg = provision(platform, "pump-0104")
    platform.admin.update_tags("pump-0104", {"site": "plant-7"})
    platform.admin.create_fleet_configuration(
        PLANT7, {"interval": 10}, configuration_id="plant7-fast"
    )
    device = Device(platform, reg.device_id, reg.password)
    try:
        assert device.connect() == 0
        device.publish("devices/pump-0104/twin/reported", json.dumps({"interval": 10}))
        assert wait_for(
            lambda: platform.admin.get_fleet_configuration("plant7-fast").metrics.applied == 1
        )
        assert platform.admin.get_fleet_configuration("plant7-fast").metrics.targeted == 3
    finally:
        device.close()


def test_change_and_delete_reevaluate_the_fleet(platform: Platform, fleet: list[str]) -> None:
    admin = platform.admin
    admin.update_desired_properties("pump-0101", {"manual": "kept"})
    admin.create_fleet_configuration(
        PLANT7, {"interval": 10, "mode": {"fan": 2}}, configuration_id="plant7-fast"
    )
    admin.replace_fleet_configuration("plant7-fast", PLANT7, {"interval": 20})
    assert desired(platform, "pump-0101") == {"manual": "kept", "interval": 20}
    admin.delete_fleet_configuration("plant7-fast")
    assert desired(platform, "pump-0101") == {"manual": "kept"}
    with pytest.raises(PlatformError) as err:
        admin.get_fleet_configuration("plant7-fast")
    assert err.value.status == 404


def test_tag_change_moves_a_device_in_and_out(platform: Platform, fleet: list[str]) -> None:
    admin = platform.admin
    admin.create_fleet_configuration(PLANT7, {"interval": 10}, configuration_id="plant7-fast")
    assert desired(platform, "pump-0103") == {}
    admin.update_tags("pump-0103", {"site": "plant-7"})
    assert desired(platform, "pump-0103") == {"interval": 10}
    admin.update_tags("pump-0103", {"site": None})
    assert desired(platform, "pump-0103") == {}


def test_reported_condition_and_the_device_receives_the_patch(
    platform: Platform, fleet: list[str]
) -> None:
    reg = provision(platform, "pump-0105")
    device = Device(platform, reg.device_id, reg.password)
    try:
        assert device.connect() == 0
        assert device.subscribe("devices/pump-0105/twin/desired") == [1]
        platform.admin.create_fleet_configuration(
            {"in": {"path": "reported.fw", "values": ["1.0", "1.1"]}},
            {"upgrade": "2.0"},
            configuration_id="fw-upgrade",
        )
        device.publish("devices/pump-0105/twin/reported", json.dumps({"fw": "1.1"}))
        message = device.messages.get(timeout=WAIT)
        assert json.loads(message.payload) == {"upgrade": "2.0", "$version": 1}
    finally:
        device.close()


def test_bad_configurations_name_the_field(
    platform: Platform, http: httpx.Client, fleet: list[str]
) -> None:
    headers = {"Authorization": f"Bearer {platform.admin_key}"}
    cases = [
        (
            {
                "targetCondition": {"eq": {"path": "site", "value": 1}},
                "desiredProperties": {"a": 1},
            },
            "targetCondition.eq.path",
        ),
        ({"targetCondition": EVERYONE, "desiredProperties": {"a": None}}, "desiredProperties"),
        ({"targetCondition": EVERYONE, "desiredProperties": {"a": 1}, "id": "x"}, "id"),
        ({"targetCondition": EVERYONE}, "desiredProperties"),
    ]
    for body, field in cases:
        response = http.post("/api/v1/fleet-configurations", json=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field
    ok = {"targetCondition": EVERYONE, "desiredProperties": {"a": 1}, "id": "dup-config"}
    assert http.post("/api/v1/fleet-configurations", json=ok, headers=headers).status_code == 201
    assert http.post("/api/v1/fleet-configurations", json=ok, headers=headers).status_code == 409
