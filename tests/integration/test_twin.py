"""Device twin round trips: admin over HTTP, device over MQTT, versions, offline catch-up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform

from .brokers import BOTH_BROKERS
from .mqtt import WAIT, Device, provision, wait_for

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture
def device(platform: Platform) -> Iterator[Device]:
    reg = provision(platform, "chiller-01")
    mqtt = Device(platform, reg.device_id, reg.password)
    assert mqtt.connect() == 0
    assert mqtt.subscribe("devices/chiller-01/twin/+") == [1]
    yield mqtt
    mqtt.close()


def next_json(device: Device, topic_suffix: str) -> dict[str, object]:
    while True:
        message = device.messages.get(timeout=WAIT)
        if message.topic.endswith(topic_suffix):
            return json.loads(message.payload)  # type: ignore[no-any-return]


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_desired_patch_reaches_the_device_with_its_version(
    platform: Platform, device: Device
) -> None:
    twin = platform.admin.update_desired_properties(
        "chiller-01", {"setpoint": 6.5, "mode": {"eco": True}}
    )
    assert twin.desired.version == 1
    assert next_json(device, "/twin/desired") == {
        "setpoint": 6.5,
        "mode": {"eco": True},
        "$version": 1,
    }
    twin = platform.admin.update_desired_properties("chiller-01", {"mode": None})
    assert twin.desired.properties == {"setpoint": 6.5}
    assert twin.desired.version == 2
    assert twin.desired.updated_at is not None
    assert next_json(device, "/twin/desired") == {"mode": None, "$version": 2}


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_full_twin_on_request_and_catch_up_since_a_version(
    platform: Platform, device: Device
) -> None:
    for patch in ({"a": 1}, {"b": 2}, {"a": None, "c": 3}):
        platform.admin.update_desired_properties("chiller-01", patch)
    for _ in range(3):
        next_json(device, "/twin/desired")
    device.publish("devices/chiller-01/twin/get", b"{}")
    assert next_json(device, "/twin/res") == {
        "desired": {"b": 2, "c": 3, "$version": 3},
        "reported": {"$version": 0},
    }
    device.publish("devices/chiller-01/twin/get", b'{"since": 1}')
    assert next_json(device, "/twin/res") == {
        "desired": {"b": 2, "a": None, "c": 3, "$version": 3},
        "reported": {"$version": 0},
        "since": 1,
    }


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_reported_patch_from_the_device_reaches_the_twin(
    platform: Platform, device: Device
) -> None:
    device.publish(
        "devices/chiller-01/twin/reported", json.dumps({"temperature": 5.9, "fw": "1.2"})
    )
    device.publish("devices/chiller-01/twin/reported", json.dumps({"fw": None}))
    assert wait_for(lambda: platform.admin.get_twin("chiller-01").reported.version == 2)
    assert platform.admin.get_twin("chiller-01").reported.properties == {"temperature": 5.9}
    device.publish("devices/chiller-01/twin/reported", b'{"$version": 99}')
    error = next_json(device, "/twin/res")
    assert error["error"]["field"] == "reported.$version"  # type: ignore[index]
    device.publish("devices/chiller-01/twin/reported", b"not json")
    assert "error" in next_json(device, "/twin/res")
    assert platform.admin.get_twin("chiller-01").reported.version == 2


def test_tags_are_platform_only(platform: Platform, device: Device) -> None:
    twin = platform.admin.update_tags("chiller-01", {"site": "plant-7", "line": 3})
    assert twin.tags.properties == {"site": "plant-7", "line": 3}
    assert twin.tags.version == 1
    device.publish("devices/chiller-01/twin/tags", b'{"site": "forged"}')  # no such device topic
    assert platform.admin.get_twin("chiller-01").tags.properties["site"] == "plant-7"


def test_bad_patches_and_unknown_devices(
    platform: Platform, http: httpx.Client, device: Device
) -> None:
    headers = {"Authorization": f"Bearer {platform.admin_key}"}
    bad = http.patch(
        "/api/v1/devices/chiller-01/twin/desired", json={"$version": 3}, headers=headers
    )
    assert bad.status_code == 400
    assert bad.json()["field"] == "desired.$version"
    not_object = http.patch("/api/v1/devices/chiller-01/twin/desired", json=[1, 2], headers=headers)
    assert not_object.status_code == 400
    with pytest.raises(PlatformError) as err:
        platform.admin.get_twin("nobody-01")
    assert err.value.status == 404


def test_restart_keeps_twins(tmp_path: Path, clock: ManualClock, database_url: str | None) -> None:
    with Platform(
        data_dir=tmp_path / "d", clock=clock, admin_key="ak_twin", database_url=database_url
    ) as first:
        provision(first, "keep-twin-01")
        first.admin.update_desired_properties("keep-twin-01", {"x": 1})
        first.admin.update_tags("keep-twin-01", {"site": "a"})
    with Platform(
        data_dir=tmp_path / "d", clock=clock, admin_key="ak_twin", database_url=database_url
    ) as second:
        twin = second.admin.get_twin("keep-twin-01")
        assert (twin.desired.properties, twin.desired.version) == ({"x": 1}, 1)
        assert twin.tags.properties == {"site": "a"}
