"""Bad input gets a 4xx problem naming the field, never a 500 or a traceback."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from iiotsim.platform import Platform

from .device_calls import dt

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

GARBAGE_BODIES: list[object] = [
    None,
    "not json",
    b"\xff\xfe\x00",
    [],
    [1, 2],
    {},
    {"name": None},
    {"name": ""},
    {"name": "x" * 1000},
    {"name": 5},
    {"deviceId": 12},
    {"deviceId": "no"},
    {"deviceId": "a" * 200},
    {"attributes": "x"},
    {"attributes": {"k": 1}},
    {"attributes": {str(i): "v" for i in range(100)}},
    {"provisioningOperationId": 7},
    {"provisioningOperationId": "not-a-guid"},
    {"registrationToken": "rt_garbage"},
    {"registrationToken": ["x"]},
    {"maxRegistrationTokenLifetime": -1, "name": "x"},
    {"maxRegistrationTokenLifetime": "1h", "name": "x"},
    {"deviceIdOverride": "sometimes", "name": "x"},
    {"registrationTokenLifetime": 0},
    {"registrationTokenLifetime": 1e300},
    {"count": 0, "name": "x"},
    {"count": 10**9, "name": "x"},
    {"deviceIds": ["ok-0001", None], "name": "x"},
    {"role": "overlord", "name": "x"},
]


def endpoints(pt: str, op_id: str, admin_key: str) -> list[tuple[str, str, dict[str, str]]]:
    admin = {"Authorization": f"Bearer {admin_key}"}
    return [
        ("POST", "/provisioning-operations/init", dt(pt)),
        ("PUT", "/provisioning-operations/complete", dt(pt)),
        ("PUT", "/devices/registration-tokens/refresh", dt(pt)),
        ("PUT", "/devices/register", dt("rt_nope")),
        ("POST", "/api/v1/provisioning-tokens", admin),
        ("POST", "/api/v1/provisioning-tokens/bulk", admin),
        ("POST", f"/api/v1/provisioning-operations/{op_id}/approve", admin),
        ("POST", "/api/v1/provisioning-operations/nope/approve", admin),
        ("POST", "/api/v1/api-keys", admin),
    ]


def send(
    http: httpx.Client, method: str, path: str, headers: dict[str, str], body: object
) -> httpx.Response:
    if isinstance(body, bytes):
        return http.request(
            method, path, content=body, headers={**headers, "content-type": "application/json"}
        )
    if isinstance(body, str):
        return http.request(
            method, path, content=body, headers={**headers, "content-type": "application/json"}
        )
    return http.request(method, path, json=body, headers=headers)


def test_no_input_produces_a_500(platform: Platform, http: httpx.Client) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op = http.post(
        "/provisioning-operations/init", json={"deviceId": "fuzz-01"}, headers=dt(pt)
    ).json()
    seen = []
    for method, path, headers in endpoints(pt, op["provisioningOperationId"], platform.admin_key):
        for body in GARBAGE_BODIES:
            response = send(http, method, path, headers, body)
            seen.append(response.status_code)
            assert response.status_code < 500, (method, path, body, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
                problem = response.json()
                assert {"type", "title", "status"} <= set(problem)
                assert "Traceback" not in response.text
    assert 400 in seen


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": 5}, "name"),
        ({"name": "x", "maxRegistrationTokenLifetime": "1h"}, "maxRegistrationTokenLifetime"),
        ({"name": "x", "deviceIdOverride": "sometimes"}, "deviceIdOverride"),
        ({"name": "x", "deviceId": "no"}, "deviceId"),
        ({"name": "x", "deviceIdOverride": "disabled"}, "deviceId,deviceIdOverride"),
        ({}, "name"),
    ],
)
def test_problem_names_the_field(
    platform: Platform, http: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = http.post(
        "/api/v1/provisioning-tokens",
        json=body,
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    )
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_unknown_routes_and_methods_are_problems(http: httpx.Client) -> None:
    missing = http.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.json()["type"] == "/problems/notFound"
    wrong = http.delete("/health")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"].startswith("application/problem+json")


def test_server_and_device_packages_import_nothing_of_ours() -> None:
    """Dependency direction: iiot_server and iiot_device stand alone."""
    script = (
        "import sys, importlib; importlib.import_module(sys.argv[1]);"
        "import iiot_server.app, iiot_server.runner;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('iiotsim', 'iiot_device')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "iiot_server.__main__"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
