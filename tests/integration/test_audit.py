"""The audit trail (issue 15) against the real platform: every state-changing admin and
device action leaves one event naming its actor, reason and request id; twin and fleet
configuration changes keep before/after; a workspace's key reads only its own trail; the
database itself refuses to update or delete an event; paging gives each row once; a change
that rolls back leaves no event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from iiot_server.services.audit import audit_context, record_audit
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from iiotsim.cli import main
from iiotsim.clock import ManualClock
from iiotsim.platform import Platform
from tests.server.device_calls import complete, init, refresh, register

pytestmark = pytest.mark.both_databases  # the trail and its triggers are SQL: both databases

CONDITION = {"eq": {"path": "tags.site", "value": "north"}}


@pytest.fixture
def admin(platform: Platform) -> Iterator[httpx.Client]:
    """The platform-wide admin key over plain HTTP (to send reasons and request ids)."""
    with httpx.Client(
        base_url=platform.http_url,
        timeout=30,
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    ) as client:
        yield client


def call(
    client: httpx.Client,
    method: str,
    path: str,
    request_id: str,
    reason: str | None = None,
    **kw: Any,
) -> httpx.Response:
    params = {"reason": reason} if reason is not None else None
    response = client.request(
        method, path, params=params, headers={"X-Request-Id": request_id}, **kw
    )
    assert response.status_code < 400, response.text
    assert response.headers["X-Request-Id"] == request_id
    return response


def audit(client: httpx.Client, prefix: str = "/api/v1", **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{prefix}/audit", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return list(response.json())


def one(events: list[dict[str, Any]], action: str, target_id: str) -> dict[str, Any]:
    found = [e for e in events if e["action"] == action and e["targetId"] == target_id]
    assert len(found) == 1, (action, target_id, [(e["action"], e["targetId"]) for e in events])
    return found[0]


def test_every_mutation_is_recorded_with_actor_reason_and_request_id(
    platform: Platform, admin: httpx.Client, http: httpx.Client, clock: ManualClock
) -> None:
    me = platform.admin.list_api_keys()[0].id
    # a technician approves; the admin does the rest
    tech = call(
        admin,
        "POST",
        "/api/v1/api-keys",
        "r-key",
        "night shift",
        json={"name": "tech", "role": "technician"},
    ).json()
    pt = call(
        admin,
        "POST",
        "/api/v1/provisioning-tokens",
        "r-pt",
        "line 1",
        json={"name": "line 1", "registrationTokenLifetimeOverride": "allowed"},
    ).json()
    bulk = call(
        admin,
        "POST",
        "/api/v1/provisioning-tokens/bulk",
        "r-bulk",
        "factory run",
        json={"name": "run", "deviceIds": ["bulk-0001", "bulk-0002"]},
    ).json()
    op = init(http, pt["provisioningToken"], deviceId="pump-0001").json()
    other = init(http, pt["provisioningToken"], deviceId="pump-0002").json()
    technician = httpx.Client(
        base_url=platform.http_url,
        timeout=30,
        headers={"Authorization": f"Bearer {tech['apiKey']}"},
    )
    with technician:
        call(
            technician,
            "POST",
            f"/api/v1/provisioning-operations/{op['provisioningOperationId']}/approve",
            "r-approve",
            "badge 4711 checked",
            json={"registrationTokenLifetime": 3600},
        )
        call(
            technician,
            "POST",
            f"/api/v1/provisioning-operations/{other['provisioningOperationId']}/cancel",
            "r-cancel",
            "not ours",
        )
    done = complete(http, pt["provisioningToken"], op["provisioningOperationId"]).json()
    register(http, done["registrationToken"])
    clock.advance(40 * 60)
    refresh(http, pt["provisioningToken"], done["registrationToken"])
    call(
        admin,
        "PATCH",
        "/api/v1/devices/pump-0001/twin/desired",
        "r-desired",
        "new setpoint",
        json={"setpoint": 21},
    )
    call(admin, "PATCH", "/api/v1/devices/pump-0001/twin/tags", "r-tags", json={"site": "north"})
    call(
        admin,
        "POST",
        "/api/v1/fleet-configurations",
        "r-fc",
        "winter",
        json={"id": "winter", "targetCondition": CONDITION, "desiredProperties": {"mode": "eco"}},
    )
    call(
        admin,
        "PUT",
        "/api/v1/fleet-configurations/winter",
        "r-fc2",
        json={"targetCondition": CONDITION, "desiredProperties": {"mode": "off"}},
    )
    call(admin, "DELETE", "/api/v1/fleet-configurations/winter", "r-fc3", "spring")
    call(admin, "POST", f"/api/v1/provisioning-tokens/{pt['id']}/revoke", "r-revoke-pt", "leaked")
    call(admin, "POST", f"/api/v1/api-keys/{tech['id']}/revoke", "r-revoke-key", "left")
    call(admin, "POST", "/api/v1/devices/pump-0001/revoke", "r-revoke-dev", "stolen")
    call(admin, "DELETE", "/api/v1/devices/pump-0001", "r-delete-dev", "scrapped")
    call(admin, "POST", "/api/v1/workspaces", "r-ws", "trainee", json={"id": "ws-audit"})
    call(admin, "DELETE", "/api/v1/workspaces/ws-audit", "r-ws2", "course over")

    events = audit(admin)
    by_admin = {"actor": f"api_key:{me}", "actorRole": "admin"}
    expected = [  # action, target, request id, reason, actor
        ("api_key.created", tech["id"], "r-key", "night shift", by_admin),
        ("token.created", pt["id"], "r-pt", "line 1", by_admin),
        *[("token.created", t["id"], "r-bulk", "factory run", by_admin) for t in bulk],
        (
            "operation.approved",
            op["provisioningOperationId"],
            "r-approve",
            "badge 4711 checked",
            {"actor": f"api_key:{tech['id']}", "actorRole": "technician"},
        ),
        (
            "operation.cancelled",
            other["provisioningOperationId"],
            "r-cancel",
            "not ours",
            {"actor": f"api_key:{tech['id']}", "actorRole": "technician"},
        ),
        ("twin.desired_patched", "pump-0001", "r-desired", "new setpoint", by_admin),
        ("twin.tags_patched", "pump-0001", "r-tags", None, by_admin),
        ("configuration.created", "winter", "r-fc", "winter", by_admin),
        ("configuration.updated", "winter", "r-fc2", None, by_admin),
        ("configuration.deleted", "winter", "r-fc3", "spring", by_admin),
        ("token.revoked", pt["id"], "r-revoke-pt", "leaked", by_admin),
        ("api_key.revoked", tech["id"], "r-revoke-key", "left", by_admin),
        ("device.revoked", "pump-0001", "r-revoke-dev", "stolen", by_admin),
        ("device.deleted", "pump-0001", "r-delete-dev", "scrapped", by_admin),
        ("workspace.created", "ws-audit", "r-ws", "trainee", by_admin),
        ("workspace.deleted", "ws-audit", "r-ws2", "course over", by_admin),
    ]
    for action, target, request_id, reason, actor in expected:
        event = one(events, action, target)
        assert (event["requestId"], event["reason"]) == (request_id, reason), event
        assert {k: event[k] for k in actor} == actor, event
        assert event["workspaceId"] == "default"
    approved = one(events, "operation.approved", op["provisioningOperationId"])
    assert approved["detail"] == {"overrides": {"registrationTokenLifetime": 3600}}
    assert approved["before"]["state"] == "pending"
    assert approved["after"]["state"] == "approved"
    # the device's own actions, in the device's name, each with the request id made for it
    device_actor = {"actor": f"provisioning_token:{pt['id']}", "actorRole": None}
    for action, target in (
        ("operation.initiated", op["provisioningOperationId"]),
        ("operation.completed", op["provisioningOperationId"]),
    ):
        event = one(events, action, target)
        assert {k: event[k] for k in device_actor} == device_actor
        assert event["requestId"] and event["reason"] is None
    for action in ("device.registered", "token.refreshed"):
        event = one(events, action, "pump-0001")
        assert event["actor"] == "device:pump-0001"
    # newest first, on the platform's (manual) clock
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert (
        one(events, "token.refreshed", "pump-0001")["at"]
        > one(events, "device.registered", "pump-0001")["at"]
    )


def test_twin_and_configuration_changes_keep_before_and_after(
    platform: Platform, admin: httpx.Client, http: httpx.Client
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op = init(http, pt, deviceId="valve-0001").json()
    platform.admin.approve_operation(op["provisioningOperationId"])
    complete(http, pt, op["provisioningOperationId"])
    call(admin, "PATCH", "/api/v1/devices/valve-0001/twin/desired", "d1", json={"a": 1, "b": 2})
    call(admin, "PATCH", "/api/v1/devices/valve-0001/twin/desired", "d2", json={"a": None, "c": 3})
    call(admin, "PATCH", "/api/v1/devices/valve-0001/twin/tags", "t1", json={"site": "north"})
    call(
        admin,
        "POST",
        "/api/v1/fleet-configurations",
        "f1",
        json={
            "id": "eco-mode",
            "targetCondition": CONDITION,
            "desiredProperties": {"mode": "eco"},
            "priority": 1,
        },
    )
    call(
        admin,
        "PUT",
        "/api/v1/fleet-configurations/eco-mode",
        "f2",
        json={"targetCondition": CONDITION, "desiredProperties": {"mode": "off"}, "priority": 2},
    )
    call(admin, "DELETE", "/api/v1/fleet-configurations/eco-mode", "f3")

    by_request = {e["requestId"]: e for e in audit(admin, targetId="valve-0001")}
    assert (by_request["d2"]["before"], by_request["d2"]["after"]) == (
        {"a": 1, "b": 2},
        {"b": 2, "c": 3},
    )
    assert by_request["d2"]["detail"]["patch"] == {"a": None, "c": 3}
    assert (by_request["t1"]["before"], by_request["t1"]["after"]) == ({}, {"site": "north"})
    events = audit(admin, targetKind="fleet_configuration", targetId="eco-mode")
    assert [e["action"] for e in events] == [
        "configuration.deleted",
        "configuration.updated",
        "configuration.created",
    ]
    deleted, updated, created = events
    assert created["before"] is None
    assert created["after"]["desiredProperties"] == {"mode": "eco"}
    assert updated["before"]["desiredProperties"] == {"mode": "eco"}
    assert (updated["after"]["desiredProperties"], updated["after"]["priority"]) == (
        {"mode": "off"},
        2,
    )
    assert deleted["before"]["desiredProperties"] == {"mode": "off"}
    assert deleted["after"] is None


def test_a_workspace_key_reads_only_its_own_workspaces_trail(
    platform: Platform, admin: httpx.Client
) -> None:
    for ws in ("ws-1", "ws-2"):
        call(admin, "POST", "/api/v1/workspaces", f"make-{ws}", json={"id": ws})
        call(
            admin,
            "POST",
            f"/api/v1/workspaces/{ws}/provisioning-tokens",
            f"pt-{ws}",
            f"secret plans of {ws}",
            json={"name": f"pt of {ws}"},
        )
    key = call(
        admin,
        "POST",
        "/api/v1/workspaces/ws-1/api-keys",
        "k",
        json={"name": "ws-1 admin", "role": "admin"},
    ).json()
    with httpx.Client(
        base_url=platform.http_url, timeout=30, headers={"Authorization": f"Bearer {key['apiKey']}"}
    ) as ws1:
        own = audit(ws1, "/api/v1/workspaces/ws-1")
        assert {e["workspaceId"] for e in own} == {"ws-1"}
        assert "pt-ws-1" in {e["requestId"] for e in own}
        for elsewhere in ("/api/v1/workspaces/ws-2", "/api/v1"):  # ws-2's, and default's
            refused = ws1.get(f"{elsewhere}/audit")
            assert refused.status_code == 404
            assert "secret plans" not in refused.text
        # filtering cannot reach across: ws-2's request id finds nothing here
        assert audit(ws1, "/api/v1/workspaces/ws-1", requestId="pt-ws-2") == []
    # the platform-wide key reads the addressed workspace
    assert {e["requestId"] for e in audit(admin, "/api/v1/workspaces/ws-2")} >= {"pt-ws-2"}
    assert "pt-ws-1" not in {e["requestId"] for e in audit(admin, "/api/v1/workspaces/ws-2")}


def test_the_database_itself_refuses_to_change_or_delete_an_event(
    platform: Platform, admin: httpx.Client
) -> None:
    call(admin, "POST", "/api/v1/provisioning-tokens", "x1", "before", json={"name": "a"})
    engine = platform.services.db.engine
    for statement in (
        "UPDATE audit_events SET reason = 'after', actor = 'someone else'",
        "DELETE FROM audit_events",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    (event,) = audit(admin, requestId="x1")
    assert (event["reason"], event["actor"]) == (
        "before",
        f"api_key:{platform.admin.list_api_keys()[0].id}",
    )
    # and no route edits or deletes it
    assert admin.delete(f"/api/v1/audit/{event['id']}").status_code in (404, 405)
    assert admin.patch("/api/v1/audit", json={}).status_code in (404, 405)


def test_paging_returns_every_row_exactly_once_newest_first(
    platform: Platform, admin: httpx.Client
) -> None:
    created = platform.admin.create_provisioning_tokens_bulk(
        "run", device_ids=[f"dev-{i:04d}" for i in range(23)]
    )
    expected = {t.id for t in created}
    seen: list[dict[str, Any]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 5, "action": "token."}
        if before is not None:
            params["before"] = before
        page = admin.get("/api/v1/audit", params=params).json()
        if not page:
            break
        # a row appended while paging is newer than every page: it never shifts them
        call(admin, "POST", "/api/v1/provisioning-tokens", f"late-{len(seen)}", json={"name": "x"})
        seen += page
        before = page[-1]["id"]
    ids = [e["id"] for e in seen]
    assert ids == sorted(set(ids), reverse=True)  # each once, newest first
    assert {e["targetId"] for e in seen} == expected
    assert {e["action"] for e in seen} == {"token.created"}
    # filters: exact action, actor, since/until on the platform clock
    every = audit(admin)
    assert audit(admin, action="token.created", before=every[0]["id"] + 1) == [
        e for e in every if e["action"] == "token.created"
    ]
    assert audit(admin, until=every[-1]["at"]) == []
    assert len(audit(admin, since=every[-1]["at"])) == len(every)


def test_a_change_that_rolls_back_leaves_no_event(
    platform: Platform, admin: httpx.Client, http: httpx.Client
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op = init(http, pt, deviceId="pump-0009").json()["provisioningOperationId"]
    call(admin, "POST", f"/api/v1/provisioning-operations/{op}/cancel", "c1")
    refused = admin.post(
        f"/api/v1/provisioning-operations/{op}/approve", headers={"X-Request-Id": "a1"}
    )
    assert refused.status_code == 409
    assert refused.headers["X-Request-Id"] == "a1"
    assert audit(admin, requestId="a1") == []
    assert [e["action"] for e in audit(admin, targetId=op)] == [
        "operation.cancelled",
        "operation.initiated",
    ]
    # record_audit writes in its caller's transaction: rolled back with it
    engine = platform.services.db.engine
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(text("audit_events"))).scalar_one()

    def change_that_fails() -> None:
        with engine.begin() as conn:
            record_audit(
                conn,
                action="token.revoked",
                target_kind="provisioning_token",
                target_id="x",
                workspace_id="default",
            )
            raise RuntimeError("the change failed after its audit row")

    with pytest.raises(RuntimeError):
        change_that_fails()
    with engine.connect() as conn:
        assert (
            conn.execute(select(func.count()).select_from(text("audit_events"))).scalar_one()
            == count
        )
    assert audit_context.get().actor == "system"  # outside a request


def test_bad_reasons_request_ids_and_filters_are_named(
    platform: Platform, admin: httpx.Client
) -> None:
    too_long = admin.post(
        "/api/v1/provisioning-tokens", params={"reason": "x" * 501}, json={"name": "a"}
    )
    assert (too_long.status_code, too_long.json()["field"]) == (400, "reason")
    assert platform.admin.list_provisioning_tokens() == []  # nothing made
    insane = admin.get("/api/v1/audit", headers={"X-Request-Id": "no spaces <script>"})
    assert insane.headers["X-Request-Id"] != "no spaces <script>"
    assert len(insane.headers["X-Request-Id"]) == 16
    assert httpx.get(f"{platform.http_url}/health").headers["X-Request-Id"]  # public routes too
    for params, field in (
        ({"action": "DROP TABLE"}, "action"),
        ({"limit": 1001}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "0.5"}, "until"),  # not a number of seconds either
        ({"until": "2026-01-02"}, "until"),  # nor a date alone
        ({"before": 0}, "before"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
    ):
        response = admin.get("/api/v1/audit", params=params)
        assert (response.status_code, response.json()["field"]) == (400, field), params
    tech = platform.admin.create_api_key("tech", "technician").api_key
    refused = httpx.get(
        f"{platform.http_url}/api/v1/audit", headers={"Authorization": f"Bearer {tech}"}
    )
    assert refused.status_code == 403


def test_the_admin_client_and_cli_read_the_trail_and_send_reasons(
    platform: Platform, http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = platform.admin
    pt = admin.create_provisioning_token("t")
    op = init(http, pt.provisioning_token, deviceId="fan-0001").json()
    admin.approve_operation(op["verificationCode"], reason="label matches")
    done = complete(http, pt.provisioning_token, op["provisioningOperationId"]).json()
    register(http, done["registrationToken"])
    admin.revoke_device("fan-0001", reason="returned to vendor")
    admin.revoke_provisioning_token(pt.id, reason="line closed")

    (approved,) = admin.audit(action="operation.approved")
    assert (approved.target_id, approved.reason) == (op["provisioningOperationId"], "label matches")
    assert approved.actor_role == "admin" and approved.request_id
    assert [e.action for e in admin.audit(device_id="fan-0001")] == [
        "device.revoked",
        "device.registered",
    ]
    assert [e.reason for e in admin.audit(action="token.")] == ["line closed", None]
    assert len(admin.audit(limit=2)) == 2

    argv = ["--server", platform.http_url, "--api-key", platform.admin_key]
    assert main(["audit", "--device", "fan-0001", *argv]) == 0
    out = capsys.readouterr().out
    assert "device.revoked" in out and "returned to vendor" in out
    assert "device.registered" in out and "device:fan-0001" in out
    assert "operation.approved" not in out
