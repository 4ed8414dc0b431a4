"""The twin's depth limit counts arrays as well as objects (issue 10, item 6), and a
too-deep ``twin/reported`` from a device over MQTT is a refused patch answered on
``twin/res`` and acknowledged, not a storage failure that drops the connection and makes
a QoS 1 sender resend it forever (item 7)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from iiot_server.domain.errors import ValidationError
from iiot_server.domain.twin import MAX_DEPTH, validate_patch

from iiotsim.platform import Platform

from ..integration.mqtt import WAIT, Device, provision


def arrays(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_arrays_count_towards_the_depth_limit() -> None:
    with pytest.raises(ValidationError, match="nest") as err:
        validate_patch({"a": arrays(950)}, field="tags")
    assert err.value.field is not None and err.value.field.startswith("tags.a")
    with pytest.raises(ValidationError, match="nest"):
        validate_patch({"a": {"b": arrays(MAX_DEPTH)}}, field="desired")
    with pytest.raises(ValidationError, match="nest"):
        validate_patch({"a": [{"b": [{"c": arrays(MAX_DEPTH)}]}]}, field="desired")


def test_shallow_arrays_are_still_accepted() -> None:
    assert validate_patch({"a": [[1, 2], [3]], "b": [{"c": 1}]}, field="desired")


@pytest.mark.parametrize("section", ["desired", "tags"])
def test_deep_arrays_are_refused_over_http(
    platform: Platform, http: httpx.Client, section: str
) -> None:
    provision(platform, "array-dev1")
    admin = {"Authorization": f"Bearer {platform.admin_key}"}
    for depth in (MAX_DEPTH + 1, 100, 950):
        # the body written out, not json.dumps'd: encoding 950 levels in the test process
        # hit Python's recursion limit under pytest-xdist (its worker adds stack frames)
        body = '{"a": ' + "[" * depth + "1" + "]" * depth + "}"
        response = http.patch(
            f"/api/v1/devices/array-dev1/twin/{section}",
            content=body,
            headers=admin | {"Content-Type": "application/json"},
        )
        assert response.status_code == 400, (depth, response.text[:200])
        field = response.json()["field"]  # "desired.a[0]…" (twin) or "a[0]…" (body bound)
        assert field.removeprefix(f"{section}.").startswith("a[0]"), response.text[:200]
    twin = platform.admin.get_twin("array-dev1")
    assert getattr(twin, section).version == 0


def answers(device: Device) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        try:
            message = device.messages.get(timeout=WAIT)
        except Exception:
            return found
        if message.topic.endswith("/twin/res"):
            found.append(json.loads(message.payload))
            return found


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 950, 5000])
def test_a_deep_reported_patch_over_mqtt_is_refused_and_acknowledged(
    platform: Platform, depth: int
) -> None:
    reg = provision(platform, "deep-rep1")
    device = Device(platform, reg.device_id, reg.password)
    try:
        assert device.connect() == 0
        assert device.subscribe("devices/deep-rep1/twin/res") == [1]
        payload = '{"a":' + "[" * depth + "1" + "]" * depth + "}"
        info = device.client.publish("devices/deep-rep1/twin/reported", payload, qos=1)
        info.wait_for_publish(WAIT)
        assert info.is_published(), "the refused patch was never acknowledged (PUBACK)"
        error = answers(device)
        assert error and "error" in error[0], error
        assert error[0]["error"]["field"].startswith("reported.a"), error
        assert not device.disconnected.is_set(), "the broker dropped the connection"
        device.publish("devices/deep-rep1/twin/reported", json.dumps({"ok": True}))
        assert platform.admin.get_twin("deep-rep1").reported.properties == {"ok": True}
    finally:
        device.close()
