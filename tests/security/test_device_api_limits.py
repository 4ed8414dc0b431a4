"""Limits on the device API (issue 10, item 10): open operations per Provisioning Token
and per Device ID, and a request rate per credential, answered with 429, ``Retry-After``
and a problem body. One PT opened 1,401 pending operations for one Device ID in 10 s
before. The defaults let a fleet's power-cut boot through: every device's boot traffic
(bulk per-device PTs and one PT shared by the whole run) gets no 429."""

from __future__ import annotations

import httpx
from iiot_server.settings import Settings

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from ..server.device_calls import complete, init, refresh, register


def assert_429(response: httpx.Response, field: str | None = None) -> None:
    assert response.status_code == 429, (response.status_code, response.text[:300])
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 429 and problem["type"].endswith("tooManyRequests")
    if field is not None:
        assert problem.get("field") == field, problem


def test_one_pt_cannot_open_operations_for_one_device_id_without_end(
    platform: Platform, http: httpx.Client, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    limit = Settings().max_open_operations_per_device_id
    answers = [init(http, pt, deviceId="abused-001") for _ in range(limit + 5)]
    assert [a.status_code for a in answers[:limit]] == [200] * limit
    for answer in answers[limit:]:
        assert_429(answer, field="deviceId")
    assert init(http, pt, deviceId="other-0001").status_code == 200  # other IDs unaffected
    clock.advance(Settings().operation_lifetime)  # the open ones expire: room again
    assert init(http, pt, deviceId="abused-001").status_code == 200


def test_open_operations_per_pt_are_bounded(clock: ManualClock, tmp_path: object) -> None:
    settings = Settings(max_open_operations_per_provisioning_token=5)
    with (
        Platform(data_dir=f"{tmp_path}/d", clock=clock, settings=settings) as platform,
        httpx.Client(base_url=platform.http_url) as http,
    ):
        pt = platform.admin.create_provisioning_token("shared").provisioning_token
        for i in range(5):
            assert init(http, pt, deviceId=f"spray-{i:04d}").status_code == 200
        assert_429(init(http, pt, deviceId="spray-9999"))
        other = platform.admin.create_provisioning_token("other").provisioning_token
        assert init(http, other, deviceId="spray-9999").status_code == 200


def test_hammering_one_operation_is_rate_limited(
    platform: Platform, http: httpx.Client, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op_id = init(http, pt, deviceId="hammer-001").json()["provisioningOperationId"]
    answers = [complete(http, pt, op_id) for _ in range(60)]  # no clock time passes
    assert answers[0].status_code == 202
    assert_429(answers[-1])
    clock.advance(int(answers[-1].headers["Retry-After"]))  # after Retry-After: served
    assert complete(http, pt, op_id).status_code == 202


def test_hammering_register_with_one_rt_is_rate_limited(
    platform: Platform, http: httpx.Client
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op_id = init(http, pt, deviceId="hammer-002").json()["provisioningOperationId"]
    platform.admin.approve_operation(op_id)
    rt = complete(http, pt, op_id).json()["registrationToken"]
    answers = [register(http, rt) for _ in range(60)]
    assert answers[0].status_code == 200
    assert_429(answers[-1])


def test_a_power_cut_fleet_boots_without_429_at_default_settings(
    platform: Platform, http: httpx.Client, clock: ManualClock
) -> None:
    """Scaled shape of 10,000 devices booting at once (see the module docstring of
    ``iiot_server.services.limits``): 200 devices on one shared PT and 100 on per-device
    PTs; each provisioned device registers and refreshes, each unprovisioned one inits
    and polls complete every ``poll_interval`` for a minute. Per key the traffic is what
    each of 10,000 devices sends; per shared PT it is 1/50 of it, within the defaults
    sized for 10,000 (checked arithmetically in the last lines)."""
    settings = Settings()
    shared = platform.admin.create_provisioning_token("run").provisioning_token
    bulk = platform.admin.create_provisioning_tokens_bulk("bulk", count=100, device_id_prefix="b-")
    per_device = [(t.provisioning_token, str(t.device_id)) for t in bulk]

    def start(pt: str, device_id: str) -> httpx.Response:  # per-device PTs carry their ID
        return init(http, pt, deviceId=device_id) if pt == shared else init(http, pt)

    # half of each kind was provisioned before the power cut
    provisioned: list[tuple[str, str, str]] = []  # (pt, device_id, rt)
    for i in range(100):
        pt, device_id = (shared, f"s-{i:05d}") if i < 50 else per_device[i - 50]
        op_id = start(pt, device_id).json()["provisioningOperationId"]
        platform.admin.approve_operation(op_id)
        provisioned.append((pt, device_id, complete(http, pt, op_id).json()["registrationToken"]))
    statuses: list[int] = []
    # the power comes back: everyone at once
    for pt, _device_id, rt in provisioned:
        statuses.append(register(http, rt).status_code)
        fresh = refresh(http, pt, rt)
        statuses.append(fresh.status_code)
        statuses.append(register(http, fresh.json()["registrationToken"]).status_code)
    pending = [(shared, f"s-{i:05d}") for i in range(100, 250)] + per_device[50:]
    operations = []
    for pt, device_id in pending:
        answer = start(pt, device_id)
        statuses.append(answer.status_code)
        operations.append((pt, answer.json()["provisioningOperationId"]))
    for _ in range(int(60 / settings.poll_interval)):
        clock.advance(settings.poll_interval)
        for pt, op_id in operations:
            statuses.append(complete(http, pt, op_id).status_code)
    assert 429 not in statuses, statuses.count(429)
    assert set(statuses) <= {200, 201, 202}
    # the same per-PT shape at 10,000 devices on one shared PT fits the defaults
    fleet = 10_000
    assert settings.max_open_operations_per_provisioning_token >= fleet
    assert settings.provisioning_token_request_burst >= fleet  # one request each at once
    assert settings.provisioning_token_requests_per_second >= fleet / settings.poll_interval
