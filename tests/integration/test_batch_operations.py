"""Batch approval and cancellation of Provisioning Operations (issue 15), over real HTTP on
a real platform: what each filter field selects, that a dry run changes nothing, the
per-operation results (skipped with a reason, failed with a problem), the refusals, the
per-call limit, workspace isolation, and a factory line of 500 devices approved in one call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from iiot_server.api.models import BatchOut

from iiotsim.cli import main
from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform

# selection is SQL over device keys and workspace columns: held on both databases
pytestmark = pytest.mark.both_databases

APPROVE = "/api/v1/provisioning-operations/approve"
CANCEL = "/api/v1/provisioning-operations/cancel"


@pytest.fixture
def admin(platform: Platform) -> Iterator[httpx.Client]:
    """The platform-wide admin key over plain HTTP (the batch routes' wire format)."""
    with httpx.Client(
        base_url=platform.http_url,
        timeout=60,
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    ) as client:
        yield client


def token(admin: httpx.Client, prefix: str = "/api/v1", **options: Any) -> dict[str, Any]:
    r = admin.post(f"{prefix}/provisioning-tokens", json={"name": "line", **options})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def init(
    http: httpx.Client,
    pt: dict[str, Any],
    device_id: str | None,
    attributes: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"attributes": attributes} if attributes else {}
    if device_id is not None:
        body["deviceId"] = device_id
    r = http.post(
        "/provisioning-operations/init",
        json=body,
        headers={"Authorization": f"DeviceToken {pt['provisioningToken']}"},
    )
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def batch(admin: httpx.Client, route: str, body: dict[str, Any]) -> dict[str, Any]:
    r = admin.post(route, json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def states(admin: httpx.Client, prefix: str = "/api/v1") -> dict[str, tuple[str, str | None]]:
    """Every operation of a workspace: id -> (state, cancelReason)."""
    r = admin.get(f"{prefix}/provisioning-operations", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return {op["id"]: (op["state"], op["cancelReason"]) for op in r.json()}


def device_ids(answer: dict[str, Any]) -> list[str]:
    return [item["deviceId"] for item in answer["results"]]


def test_each_filter_field_narrows_and_a_dry_run_changes_nothing(
    platform: Platform, admin: httpx.Client, http: httpx.Client, clock: ManualClock
) -> None:
    line3, line4 = token(admin), token(admin)
    started = clock.now()
    ops: dict[str, dict[str, Any]] = {}
    for pt, device, attributes in [
        (line3, "line3-0001", {"site": "hall-3", "rev": "b"}),
        (line3, "line3-0002", {"site": "hall-3", "rev": "a"}),
        (line3, "line3-0100", {"site": "hall-4"}),
        (line4, "LINE3-0003", None),  # another case: not line3- (SQLite's LIKE would say so)
        (line4, "line4-0001", {"site": "hall-3"}),
        (line4, "line3_0004", None),  # "_" is LIKE's one-character wildcard
    ]:
        if device == "line3-0100":
            clock.advance(60)
            middle = clock.now()
        ops[device] = init(http, pt, device, attributes)
        clock.advance(1)  # created one after another: "oldest first" is one order
    before = states(admin)

    def selected(route: str, **filter_fields: Any) -> list[str]:
        answer = batch(admin, route, {"filter": filter_fields, "dryRun": True})
        assert answer["dryRun"] is True
        assert answer["matched"] == len(answer["results"]) and not answer["truncated"]
        return device_ids(answer)

    assert selected(APPROVE, provisioningTokenId=line4["id"]) == [
        "LINE3-0003",
        "line4-0001",
        "line3_0004",
    ]
    assert selected(APPROVE, deviceIdPrefix="line3-") == ["line3-0001", "line3-0002", "line3-0100"]
    assert selected(APPROVE, deviceIdPattern="line3-000?") == ["line3-0001", "line3-0002"]
    assert selected(APPROVE, deviceIdPattern="*-0001") == ["line3-0001", "line4-0001"]
    assert selected(APPROVE, deviceIdPattern="line3-?1*") == ["line3-0100"]
    assert selected(APPROVE, deviceIdPrefix="line3_") == ["line3_0004"]
    assert selected(APPROVE, attributes={"site": "hall-3"}) == [
        "line3-0001",
        "line3-0002",
        "line4-0001",
    ]
    assert selected(APPROVE, attributes={"site": "hall-3", "rev": "a"}) == ["line3-0002"]
    assert selected(APPROVE, createdBefore=middle.isoformat()) == ["line3-0001", "line3-0002"]
    assert selected(APPROVE, createdAfter=middle.isoformat(), deviceIdPrefix="line3") == [
        "line3-0100",
        "line3_0004",
    ]  # createdAfter is inclusive, createdBefore exclusive
    assert selected(
        APPROVE, createdAfter=started.isoformat(), createdBefore=middle.isoformat()
    ) == ["line3-0001", "line3-0002"]
    named = [
        ops["line4-0001"]["provisioningOperationId"],
        ops["line3-0002"]["provisioningOperationId"],
    ]
    assert selected(APPROVE, ids=named) == ["line3-0002", "line4-0001"]  # oldest first
    code = ops["line3-0100"]["verificationCode"]
    assert selected(APPROVE, verificationCodes=[code.lower().replace("-", "")]) == ["line3-0100"]
    # fields are AND-ed
    assert selected(APPROVE, provisioningTokenId=line3["id"], attributes={"site": "hall-3"}) == [
        "line3-0001",
        "line3-0002",
    ]
    assert selected(APPROVE, provisioningTokenId=line4["id"], deviceIdPrefix="line3-") == []
    results = batch(admin, APPROVE, {"filter": {"deviceIdPrefix": "line3-"}, "dryRun": True})
    assert {item["result"] for item in results["results"]} == {"would_approve"}
    assert results["counts"] == {"would_approve": 3}
    assert selected(CANCEL, deviceIdPrefix="line4") == ["line4-0001"]
    assert states(admin) == before  # nothing approved or cancelled by any dry run

    approved = batch(admin, APPROVE, {"filter": {"deviceIdPrefix": "line3-"}})
    assert [i["result"] for i in approved["results"]] == ["approved"] * 3
    # cancel acts on pending and approved ones; state narrows to one of them
    assert selected(CANCEL, deviceIdPattern="line3*") == [
        "line3-0001",
        "line3-0002",
        "line3-0100",
        "line3_0004",
    ]
    assert selected(CANCEL, deviceIdPattern="line3*", state="pending") == ["line3_0004"]
    cancelled = batch(admin, CANCEL, {"filter": {"deviceIdPattern": "line3*", "state": "approved"}})
    assert [i["result"] for i in cancelled["results"]] == ["cancelled"] * 3
    after = states(admin)
    for device in ("line3-0001", "line3-0002", "line3-0100"):
        assert after[ops[device]["provisioningOperationId"]] == ("cancelled", "technician")
    assert after[ops["line3_0004"]["provisioningOperationId"]] == ("pending", None)


def test_skipped_and_failed_operations_say_why(
    platform: Platform, admin: httpx.Client, http: httpx.Client, clock: ManualClock
) -> None:
    pt = token(admin)
    stale = init(http, pt, "cell-0000")
    clock.advance(14 * 60)
    done = init(http, pt, "cell-0001")
    twin_a = init(http, pt, "cell-0002")
    twin_b = init(http, pt, "cell-0002")  # a second operation for one Device ID
    fine = init(http, pt, "cell-0003")
    chooser = token(admin, deviceIdOverride="enforced_at_approval")
    nameless = init(http, chooser, None)  # the technician must give its Device ID
    revoked = token(admin)
    orphan = init(http, revoked, "cell-0004")
    assert admin.post(f"/api/v1/provisioning-tokens/{revoked['id']}/revoke").status_code == 200
    assert platform.admin.approve_operation(done["provisioningOperationId"]).state == "approved"
    clock.advance(2 * 60)  # stale is now past its 15 min

    ids = [
        op["provisioningOperationId"]
        for op in (stale, done, twin_a, twin_b, fine, nameless, orphan)
    ]
    ids.append("00000000-0000-0000-0000-000000000000")
    for dry_run in (True, False):
        answer = batch(admin, APPROVE, {"filter": {"ids": ids}, "dryRun": dry_run})
        by_id = {item["provisioningOperationId"]: item for item in answer["results"]}
        assert answer["matched"] == 8 and len(by_id) == 8
        assert by_id[stale["provisioningOperationId"]]["result"] == "skipped"
        assert by_id[stale["provisioningOperationId"]]["reason"] == "expired"
        assert by_id[done["provisioningOperationId"]]["reason"] == "already approved"
        for twin in (twin_a, twin_b):
            item = by_id[twin["provisioningOperationId"]]
            assert item["result"] == "skipped" and "Device ID conflict" in item["reason"]
            assert item["deviceId"] == "cell-0002"
        assert by_id[fine["provisioningOperationId"]]["result"] == (
            "would_approve" if dry_run else "approved"
        )
        failed = by_id[nameless["provisioningOperationId"]]
        assert failed["result"] == "failed"
        assert failed["problem"]["status"] == 400 and failed["problem"]["field"] == "deviceId"
        failed = by_id[orphan["provisioningOperationId"]]
        assert failed["result"] == "failed" and failed["problem"]["status"] == 409
        assert "revoked" in failed["problem"]["detail"]
        unknown = by_id["00000000-0000-0000-0000-000000000000"]
        assert unknown == {
            "provisioningOperationId": "00000000-0000-0000-0000-000000000000",
            "verificationCode": None,
            "deviceId": None,
            "result": "skipped",
            "reason": "not found",
        }
    after = states(admin)
    assert after[fine["provisioningOperationId"]] == ("approved", None)
    for twin in (twin_a, twin_b):  # neither approved, neither superseded
        assert after[twin["provisioningOperationId"]] == ("pending", None)
    assert after[nameless["provisioningOperationId"]] == ("pending", None)

    # cancel: an approved one is cancelled, a completed one skipped
    completed = http.put(
        "/provisioning-operations/complete",
        json={"provisioningOperationId": fine["provisioningOperationId"]},
        headers={"Authorization": f"DeviceToken {pt['provisioningToken']}"},
    )
    assert completed.status_code == 200, completed.text
    answer = batch(
        admin,
        CANCEL,
        {
            "filter": {"ids": [done["provisioningOperationId"], fine["provisioningOperationId"]]},
            "reason": "line 2 stopped",
        },
    )
    results = {i["provisioningOperationId"]: i for i in answer["results"]}
    assert results[done["provisioningOperationId"]]["result"] == "cancelled"
    assert results[fine["provisioningOperationId"]]["reason"] == "already completed"


def test_refusals_name_the_field(platform: Platform, admin: httpx.Client) -> None:
    cases: list[tuple[str, Any, str]] = [
        (APPROVE, {}, "filter"),
        (APPROVE, {"filter": {}}, "filter"),
        (CANCEL, {"filter": {"state": "pending"}}, "filter"),  # state alone narrows nothing
        (APPROVE, {"filter": {"attributes": {}}}, "filter"),
        (APPROVE, {"filter": {"deviceIdPrefix": ""}}, "filter.deviceIdPrefix"),
        (APPROVE, {"filter": {"deviceIdPrefix": "a:b"}}, "filter.deviceIdPrefix"),
        (APPROVE, {"filter": {"deviceIdPattern": "line[12]-*"}}, "filter.deviceIdPattern"),
        (APPROVE, {"filter": {"createdAfter": "yesterday"}}, "filter.createdAfter"),
        (APPROVE, {"filter": {"createdAfter": "2026-01-01T08:00:00"}}, "filter.createdAfter"),
        (
            APPROVE,
            {
                "filter": {
                    "createdAfter": "2026-01-02T00:00:00Z",
                    "createdBefore": "2026-01-01T00:00:00Z",
                }
            },
            "filter.createdBefore",
        ),
        (APPROVE, {"filter": {"ids": "abc"}}, "filter.ids"),
        (APPROVE, {"filter": {"ids": ["x"] * 1001}}, "filter.ids"),
        (APPROVE, {"filter": {"verificationCodes": ["nope"]}}, "filter.verificationCodes[0]"),
        (APPROVE, {"filter": {"ids": ["x"], "state": "approved"}}, "filter.state"),
        (CANCEL, {"filter": {"ids": ["x"], "state": "completed"}}, "filter.state"),
        (APPROVE, {"filter": {"ids": ["x"]}, "deviceId": "one-for-all"}, "deviceId"),
        (APPROVE, {"filter": {"ids": ["x"]}, "limit": 0}, "limit"),
        (APPROVE, {"filter": {"ids": ["x"]}, "limit": 1001}, "limit"),
        (APPROVE, {"filter": {"ids": ["x"]}, "dryRun": "yes"}, "dryRun"),
        (APPROVE, {"filter": {"ids": ["x"]}, "dryRun": 0}, "dryRun"),  # no lenient 0 = false
        (CANCEL, {"filter": {"ids": ["x"]}, "limit": "5"}, "limit"),
        (APPROVE, {"filter": {"createdAfter": 0}}, "filter.createdAfter"),  # not a Unix time
        (APPROVE, {"filter": {"ids": ["x"]}, "reason": "x" * 501}, "reason"),
        (
            APPROVE,
            {"filter": {"ids": ["x"]}, "registrationTokenLifetime": -1},
            "registrationTokenLifetime",
        ),
        (APPROVE, {"filter": {"ids": ["x"], "deviceIDPrefix": "a"}}, "filter.deviceIDPrefix"),
        (CANCEL, {"filter": {"ids": ["x"]}, "infiniteLifetime": True}, "infiniteLifetime"),
    ]
    for route, body, field in cases:
        r = admin.post(route, json=body)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert r.json()["field"] == field, (body, r.json())
    # each code is a look-up, rate-limited per key (burst 20) like the single routes'
    codes = [f"BCDF-{a}{b}GH" for a in "BCDFGHJ" for b in "KLM"]  # 21 distinct codes
    r = admin.post(APPROVE, json={"filter": {"verificationCodes": codes}})
    assert r.status_code == 429, r.text
    assert r.json()["field"] == "filter.verificationCodes"


def test_a_call_acts_on_at_most_limit_operations_and_says_so(
    platform: Platform, admin: httpx.Client, http: httpx.Client, clock: ManualClock
) -> None:
    pt = token(admin)
    ops = []
    for i in range(5):
        ops.append(init(http, pt, f"lim-{i:04d}"))
        clock.advance(1)
    first = batch(admin, APPROVE, {"filter": {"provisioningTokenId": pt["id"]}, "limit": 2})
    assert first["matched"] == 5 and first["truncated"] is True
    assert device_ids(first) == ["lim-0000", "lim-0001"]  # oldest first
    now = states(admin)
    assert [now[op["provisioningOperationId"]][0] for op in ops] == ["approved"] * 2 + [
        "pending"
    ] * 3
    rest = batch(admin, APPROVE, {"filter": {"provisioningTokenId": pt["id"]}, "limit": 3})
    assert rest["matched"] == 3 and rest["truncated"] is False
    assert device_ids(rest) == ["lim-0002", "lim-0003", "lim-0004"]

    # a Device ID conflict counts over every match, also one past the limit
    pt = token(admin)
    first = init(http, pt, "dup-0001")
    clock.advance(1)
    filler = init(http, pt, "dup-0002")
    clock.advance(1)
    second = init(http, pt, "dup-0001")
    answer = batch(admin, APPROVE, {"filter": {"provisioningTokenId": pt["id"]}, "limit": 2})
    assert [(i["deviceId"], i["result"]) for i in answer["results"]] == [
        ("dup-0001", "skipped"),
        ("dup-0002", "approved"),
    ]
    now = states(admin)
    assert now[first["provisioningOperationId"]] == ("pending", None)
    assert now[second["provisioningOperationId"]] == ("pending", None)  # not superseded
    assert now[filler["provisioningOperationId"]] == ("approved", None)


def test_a_workspace_key_never_touches_another_workspace(
    platform: Platform, admin: httpx.Client, http: httpx.Client
) -> None:
    for workspace in ("ws-1", "ws-2"):
        assert admin.post("/api/v1/workspaces", json={"id": workspace}).status_code == 201
    key = admin.post(
        "/api/v1/workspaces/ws-1/api-keys", json={"name": "ws-1 admin", "role": "admin"}
    ).json()["apiKey"]
    victim_tokens = {None: token(admin), "ws-2": token(admin, "/api/v1/workspaces/ws-2")}
    victims = {ws: init(http, pt, "pump-0001") for ws, pt in victim_tokens.items()}
    mine = init(http, token(admin, "/api/v1/workspaces/ws-1"), "pump-0001")
    named = [op["provisioningOperationId"] for op in (*victims.values(), mine)]
    own = "/api/v1/workspaces/ws-1/provisioning-operations"
    with httpx.Client(
        base_url=platform.http_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as attacker:
        # the others' operation ids (alone, and with a filter matching the same Device ID)
        for dry_run, selection in (
            (True, {"ids": named}),
            (True, {"deviceIdPrefix": "pump", "ids": named}),
            (False, {"ids": named}),
        ):
            answer = batch(attacker, f"{own}/approve", {"filter": selection, "dryRun": dry_run})
            by_id = {i["provisioningOperationId"]: i for i in answer["results"]}
            assert by_id[mine["provisioningOperationId"]]["result"] == (
                "would_approve" if dry_run else "approved"
            )
            for victim in victims.values():  # as unknown as an id that never existed
                assert by_id[victim["provisioningOperationId"]]["reason"] == "not found"
        for pt in victim_tokens.values():  # another workspace's token selects nothing
            answer = batch(attacker, f"{own}/cancel", {"filter": {"provisioningTokenId": pt["id"]}})
            assert answer["matched"] == 0 and answer["results"] == []
        for route in (APPROVE, CANCEL, "/api/v1/workspaces/ws-2/provisioning-operations/cancel"):
            r = attacker.post(route, json={"filter": {"deviceIdPrefix": "pump"}})
            assert r.status_code == 404, r.text
        answer = batch(attacker, f"{own}/cancel", {"filter": {"deviceIdPrefix": "pump"}})
        assert [i["provisioningOperationId"] for i in answer["results"]] == [
            mine["provisioningOperationId"]
        ]
    assert states(admin)[victims[None]["provisioningOperationId"]] == ("pending", None)
    ws2 = states(admin, "/api/v1/workspaces/ws-2")
    assert ws2[victims["ws-2"]["provisioningOperationId"]] == ("pending", None)


def test_a_factory_line_of_500_is_approved_in_one_call(
    platform: Platform, admin: httpx.Client, http: httpx.Client, clock: ManualClock
) -> None:
    pt = token(admin, maxRegistrationTokenLifetime=86400)
    auth = {"Authorization": f"DeviceToken {pt['provisioningToken']}"}
    ops = [init(http, pt, f"line3-{i:05d}", {"line": "3"}) for i in range(500)]
    clock.advance(30)
    answer = batch(
        admin,
        APPROVE,
        {"filter": {"provisioningTokenId": pt["id"], "deviceIdPrefix": "line3-"}},
    )
    assert answer["matched"] == 500 and not answer["truncated"]
    assert answer["counts"] == {"approved": 500}
    # one instant on the ManualClock: oldest first, then by id
    assert sorted(device_ids(answer)) == [f"line3-{i:05d}" for i in range(500)]
    for op in ops[::25]:  # 20 devices complete and receive their Registration Tokens
        done = http.put(
            "/provisioning-operations/complete",
            json={"provisioningOperationId": op["provisioningOperationId"]},
            headers=auth,
        )
        assert done.status_code == 200, done.text
        rt = done.json()
        assert rt["registrationToken"].startswith("rt_")
        assert rt["lifetime"] == 86400
        registered = http.put(
            "/devices/register",
            headers={"Authorization": f"DeviceToken {rt['registrationToken']}"},
        )
        assert registered.status_code == 200, registered.text
        assert registered.json()["deviceId"] == rt["deviceId"]


def test_the_admin_client_and_the_cli(
    platform: Platform,
    http: httpx.Client,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = platform.admin.create_provisioning_token("line 3")
    pt = {"provisioningToken": created.provisioning_token}
    for i in range(3):
        init(http, pt, f"line3-{i:04d}")
        clock.advance(1)
    preview = platform.admin.approve_operations(
        {"provisioning_token_id": created.id, "deviceIdPrefix": "line3-"}, dry_run=True
    )
    assert isinstance(preview, BatchOut)
    assert preview.counts == {"would_approve": 3} and preview.dry_run
    assert [r.device_id for r in preview.results] == ["line3-0000", "line3-0001", "line3-0002"]
    assert platform.admin.audit(action="operation.approved") == []  # the dry run left none
    with pytest.raises(PlatformError) as refused:
        platform.admin.approve_operations({"state": "pending"})
    assert refused.value.status == 400 and refused.value.field == "filter"

    monkeypatch.setenv("IIOT_SERVER", platform.http_url)
    monkeypatch.setenv("IIOT_ADMIN_KEY", platform.admin_key)
    capsys.readouterr()
    line = ["--token", created.id, "--prefix", "line3-", "--limit", "2", "--reason", "line 3"]
    assert main(["approve-batch", *line]) == 1
    out = capsys.readouterr()
    assert "3 matched: 2 approved." in out.out
    assert "only the first 2 of 3 were approved" in out.err  # never silent about the rest
    audited = platform.admin.audit(action="operation.approved")
    assert sorted(e.target_id for e in audited) == sorted(
        str(r.provisioning_operation_id) for r in preview.results[:2]
    )
    assert {(e.reason, e.actor_role) for e in audited} == {("line 3", "admin")}
    assert main(["approve-batch", "--pattern", "line3-*", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "Dry run: 1 matched: 1 would_approve." in out.out and "line3-0002" in out.out
    assert main(["cancel-batch", "--prefix", "line3-", "--state", "approved"]) == 0
    out = capsys.readouterr()
    assert "2 matched: 2 cancelled." in out.out
    states = {op.device_id: op.state for op in platform.admin.list_operations()}
    assert states == {"line3-0000": "cancelled", "line3-0001": "cancelled", "line3-0002": "pending"}
    assert main(["cancel-batch", "--attribute", "oops"]) == 1
    assert "--attribute 'oops': give KEY=VALUE" in capsys.readouterr().err


def test_a_batch_and_single_approvals_at_once_approve_each_operation_once(
    platform: Platform, admin: httpx.Client, http: httpx.Client
) -> None:
    """PostgreSQL runs a batch's chunks and other requests on several threads at once: every
    operation ends approved exactly once, by one of them, and nothing answers 500."""
    pt = token(admin)
    ops = [init(http, pt, f"race-{i:04d}") for i in range(300)]
    singles = [op["provisioningOperationId"] for op in ops[::10]]
    answers: list[tuple[str, int]] = []

    def approve_singly() -> None:
        with httpx.Client(
            base_url=platform.http_url,
            timeout=60,
            headers={"Authorization": f"Bearer {platform.admin_key}"},
        ) as client:
            for operation_id in singles:
                r = client.post(f"/api/v1/provisioning-operations/{operation_id}/approve")
                answers.append((operation_id, r.status_code))

    worker = threading.Thread(target=approve_singly)
    worker.start()
    answer = batch(admin, APPROVE, {"filter": {"provisioningTokenId": pt["id"]}})
    worker.join(60)
    assert not worker.is_alive()
    assert {status for _, status in answers} <= {200, 409} and len(answers) == len(singles)
    by_single = {operation_id for operation_id, status in answers if status == 200}
    by_batch = {
        i["provisioningOperationId"] for i in answer["results"] if i["result"] == "approved"
    }
    for op in ops:  # approved once: by the batch or by its single call, never both
        operation_id = op["provisioningOperationId"]
        assert (operation_id in by_batch) != (operation_id in by_single), operation_id
    assert {state for state, _ in states(admin).values()} == {"approved"}
