"""Client input that used to crash a handler (500) is a 400 problem naming the field
(issue 10, item 5): invalid UTF-8 inside a JSON body, JSON nested hundreds of levels
deep, and integers beyond what storage holds (int64)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from iiotsim.platform import Platform

from ..integration.mqtt import provision
from ..server.device_calls import dt

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

DEPTHS = [40, 500, 900, 980, 1200, 20_000]


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def nested_arrays(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def send(http: httpx.Client, method: str, path: str, body: bytes | str, **headers: str) -> Any:
    response = http.request(
        method, path, content=body, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 400, (response.status_code, response.text[:300])
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == 400
    assert problem.get("field"), problem
    return problem


@pytest.fixture
def admin_headers(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.admin_key}"}


def test_invalid_utf8_in_a_json_body(
    platform: Platform, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    problem = send(http, "POST", "/provisioning-operations/init", b'{"deviceId":"\xff"}', **dt(pt))
    assert problem["field"] == "deviceId"
    provision(platform, "utf8-dev1")
    problem = send(
        http, "PATCH", "/api/v1/devices/utf8-dev1/twin/desired", b'{"x":"ok","y":"\xc3("}',
        **admin_headers,
    )  # fmt: skip
    assert problem["field"] == "y"
    body = b'{"targetCondition":{"exists":"tags.a"},"desiredProperties":{"k":"\xfe"}}'
    problem = send(http, "POST", "/api/v1/fleet-configurations", body, **admin_headers)
    assert problem["field"].startswith("desiredProperties")


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_json_on_init(platform: Platform, http: httpx.Client, depth: int) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    for inner in (nested_objects(depth), nested_arrays(depth)):
        body = '{"deviceId":"deep-01","attributes":' + inner + "}"
        problem = send(http, "POST", "/provisioning-operations/init", body, **dt(pt))
        assert problem["field"].startswith("attributes"), problem


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_json_in_twin_patches_and_fleet_configurations(
    platform: Platform, http: httpx.Client, admin_headers: dict[str, str], depth: int
) -> None:
    provision(platform, "deep-dev1")
    for section in ("desired", "tags"):
        for inner in (nested_objects(depth), nested_arrays(depth)):
            send(
                http, "PATCH", f"/api/v1/devices/deep-dev1/twin/{section}", '{"a":' + inner + "}",
                **admin_headers,
            )  # fmt: skip
    for inner in (nested_objects(depth), nested_arrays(depth)):
        desired = '{"targetCondition":{"exists":"tags.a"},"desiredProperties":{"a":' + inner + "}}"
        problem = send(http, "POST", "/api/v1/fleet-configurations", desired, **admin_headers)
        assert problem["field"].startswith("desiredProperties"), problem
    condition = '{"not":' * depth + '{"exists":"tags.a"}' + "}" * depth
    body = '{"targetCondition":' + condition + ',"desiredProperties":{"k":1}}'
    problem = send(http, "POST", "/api/v1/fleet-configurations", body, **admin_headers)
    assert problem["field"].startswith("targetCondition"), problem
    assert platform.admin.get_twin("deep-dev1").desired.version == 0


@pytest.mark.parametrize("after", ["99999999999999999999999", str(2**63), "-1"])
def test_out_of_range_query_integers(
    platform: Platform, http: httpx.Client, admin_headers: dict[str, str], after: str
) -> None:
    provision(platform, "range-dev1")
    response = http.get(
        "/api/v1/devices/range-dev1/messages", params={"after": after}, headers=admin_headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "after"


def test_out_of_range_priority(
    platform: Platform, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    body = (
        '{"targetCondition":{"exists":"tags.a"},"desiredProperties":{"k":1},'
        '"priority":99999999999999999999}'
    )
    assert (
        send(http, "POST", "/api/v1/fleet-configurations", body, **admin_headers)["field"]
        == "priority"
    )
    body = body.replace("99999999999999999999", str(2**63))
    assert (
        send(http, "POST", "/api/v1/fleet-configurations", body, **admin_headers)["field"]
        == "priority"
    )
