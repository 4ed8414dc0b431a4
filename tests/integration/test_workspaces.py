"""Workspaces (issue 16), tested as an attacker would: a key, token, device or MQTT session of
one workspace reads and changes nothing of another's, over HTTP or MQTT.

Workspaces ``default``, ``ws-1`` (the attacker's) and ``ws-2`` (the victim's) on one real platform;
the attacker holds an admin key of ``ws-1`` and devices provisioned in ``ws-1``. Workspace ids
follow the Device ID rules (4-90 characters), hence ``ws-1`` rather than ``w1``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from iiot_device import Backoff, DeviceClient, ProvisioningOperation, Status

from iiotsim.admin import AdminClient
from iiotsim.cli import main
from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform
from iiotsim.widgets import ApprovalPanel
from tests.integration.brokers import needs_mosquitto
from tests.integration.mqtt import WAIT, Device, wait_for
from tests.security.raw_mqtt import abort, connect_packet, open_socket, read_connack

# the isolation is SQL filters on device keys and workspace columns: held on both databases
pytestmark = pytest.mark.both_databases

CONDITION = {"eq": {"path": "tags.site", "value": "north"}}


@dataclass
class Provisioned:
    workspace: str
    device_id: str
    client_id: str
    password: str
    register: dict[str, Any]


def api(workspace: str | None) -> str:
    return "/api/v1" if workspace is None else f"/api/v1/workspaces/{workspace}"


@pytest.fixture
def admin(platform: Platform) -> Iterator[httpx.Client]:
    """The platform-wide admin key (``IIOT_ADMIN_KEY``) over plain HTTP."""
    with httpx.Client(
        base_url=platform.http_url,
        timeout=30,
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    ) as client:
        yield client


@pytest.fixture
def key_of(platform: Platform, admin: httpx.Client) -> Iterator[Callable[[str, str], httpx.Client]]:
    """An HTTP client holding a new API key of a workspace (made by the platform admin)."""
    opened: list[httpx.Client] = []

    def make(workspace: str, role: str = "admin") -> httpx.Client:
        r = admin.post(
            f"{api(workspace)}/api-keys", json={"name": f"{workspace}-{role}", "role": role}
        )
        assert r.status_code == 201, r.text
        assert r.json()["workspaceId"] == workspace
        client = httpx.Client(
            base_url=platform.http_url,
            timeout=30,
            headers={"Authorization": f"Bearer {r.json()['apiKey']}"},
        )
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def make_workspaces(admin: httpx.Client, *ids: str) -> None:
    for workspace in ids:
        r = admin.post("/api/v1/workspaces", json={"id": workspace})
        assert r.status_code == 201, r.text


def create_token(admin: httpx.Client, workspace: str | None) -> dict[str, Any]:
    r = admin.post(f"{api(workspace)}/provisioning-tokens", json={"name": "pt"})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def init(http: httpx.Client, pt: str, device_id: str) -> dict[str, Any]:
    r = http.post(
        "/provisioning-operations/init",
        json={"deviceId": device_id},
        headers={"Authorization": f"DeviceToken {pt}"},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def provision_in(
    admin: httpx.Client, http: httpx.Client, workspace: str | None, device_id: str
) -> Provisioned:
    """init → approve (the workspace's route) → complete → register, over real HTTP."""
    pt = create_token(admin, workspace)["provisioningToken"]
    auth = {"Authorization": f"DeviceToken {pt}"}
    op = init(http, pt, device_id)
    approved = admin.post(
        f"{api(workspace)}/provisioning-operations/{op['provisioningOperationId']}/approve"
    )
    assert approved.status_code == 200, approved.text
    done = http.put(
        "/provisioning-operations/complete",
        json={"provisioningOperationId": op["provisioningOperationId"]},
        headers=auth,
    )
    assert done.status_code == 200, done.text
    rt = done.json()["registrationToken"]
    reg = http.put("/devices/register", headers={"Authorization": f"DeviceToken {rt}"})
    assert reg.status_code == 200, reg.text
    body = reg.json()
    return Provisioned(
        workspace or "default", device_id, body["mqttClientId"], body["mqttPassword"], body
    )


def connected(platform: Platform, devices: list[Device], device: Provisioned) -> Device:
    session = Device(platform, device.client_id, device.password)
    devices.append(session)
    assert session.connect() == 0
    return session


# The workspaces resource ------------------------------------------------------------------


def test_workspaces_are_created_listed_refused_and_deleted(
    admin: httpx.Client, http: httpx.Client
) -> None:
    created = admin.post("/api/v1/workspaces", json={"id": "class-01"})
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "class-01"
    assert [w["id"] for w in admin.get("/api/v1/workspaces").json()] == ["class-01", "default"]
    assert admin.get("/api/v1/workspaces/class-01").status_code == 200

    bad = admin.post("/api/v1/workspaces", json={"id": "a:b"})
    assert bad.status_code == 400
    assert bad.json()["field"] == "id"
    assert "a:b" in bad.json()["detail"]
    duplicate = admin.post("/api/v1/workspaces", json={"id": "class-01"})
    assert duplicate.status_code == 409
    unknown = admin.get("/api/v1/workspaces/nowhere/devices")
    assert unknown.status_code == 404
    assert "nowhere" in unknown.json()["detail"]
    assert admin.get("/api/v1/workspaces/nowhere").status_code == 404
    assert admin.delete("/api/v1/workspaces/default").status_code == 409

    # a workspace with a device is not deleted (409): delete the device first
    provision_in(admin, http, "class-01", "pump-0001")
    refused = admin.delete("/api/v1/workspaces/class-01")
    assert refused.status_code == 409
    assert "1 devices" in refused.json()["detail"]
    assert admin.delete("/api/v1/workspaces/class-01/devices/pump-0001").status_code == 204
    assert admin.delete("/api/v1/workspaces/class-01").status_code == 204
    assert [w["id"] for w in admin.get("/api/v1/workspaces").json()] == ["default"]
    assert admin.get("/api/v1/workspaces/class-01/devices").status_code == 404
    assert admin.delete("/api/v1/workspaces/class-01").status_code == 404


def test_keys_made_without_a_workspace_stay_platform_wide(
    admin: httpx.Client, key_of: Callable[..., httpx.Client]
) -> None:
    made = admin.post("/api/v1/api-keys", json={"name": "ops", "role": "technician"})
    assert made.json()["workspaceId"] == "*"
    make_workspaces(admin, "ws-1")
    w1 = key_of("ws-1")
    assert [k["workspaceId"] for k in w1.get(f"{api('ws-1')}/api-keys").json()] == ["ws-1"]
    # a workspace's admin key never makes a wider key, even on the default routes' path
    assert w1.post("/api/v1/api-keys", json={"name": "x", "role": "admin"}).status_code == 404
    wider = w1.post(f"{api('ws-1')}/api-keys", json={"name": "x", "role": "admin"})
    assert wider.json()["workspaceId"] == "ws-1"


# Isolation over HTTP ------------------------------------------------------------------------


def test_a_workspace_key_reads_and_changes_nothing_of_another_workspace(
    platform: Platform,
    admin: httpx.Client,
    http: httpx.Client,
    key_of: Callable[..., httpx.Client],
) -> None:
    make_workspaces(admin, "ws-1", "ws-2")
    attacker = key_of("ws-1")
    victim_key = admin.post(f"{api('ws-2')}/api-keys", json={"name": "v", "role": "admin"}).json()
    victim_token = create_token(admin, "ws-2")
    victim = provision_in(admin, http, "ws-2", "victim-01")
    pending = init(http, victim_token["provisioningToken"], "victim-02")
    code, op_id = pending["verificationCode"], pending["provisioningOperationId"]
    config = {"id": "cfg-1", "targetCondition": CONDITION, "desiredProperties": {"rate": 5}}
    assert admin.post(f"{api('ws-2')}/fleet-configurations", json=config).status_code == 201

    # another workspace's routes, default's included, answer as an unknown workspace would
    for path in (
        f"{api('ws-2')}/provisioning-tokens",
        f"{api('ws-2')}/devices",
        f"{api('ws-2')}/provisioning-operations",
        f"{api(None)}/devices",
        f"{api(None)}/provisioning-tokens",
        f"{api('nowhere')}/devices",
    ):
        r = attacker.get(path)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["field"] == "workspaceId"
    assert attacker.get(f"{api('ws-2')}/devices").json()["detail"] == "no workspace 'ws-2'"
    assert attacker.get(f"{api('nowhere')}/devices").json()["detail"] == "no workspace 'nowhere'"
    assert attacker.get("/api/v1/workspaces").status_code == 403
    assert attacker.post("/api/v1/workspaces", json={"id": "ws-3"}).status_code == 403
    assert attacker.delete("/api/v1/workspaces/ws-2").status_code == 403

    # w2's things named by id or code on w1's own routes: unknown there
    w1 = api("ws-1")
    token_id = victim_token["id"]
    assert attacker.get(f"{w1}/provisioning-tokens").json() == []
    assert attacker.get(f"{w1}/provisioning-tokens/{token_id}").status_code == 404
    assert attacker.post(f"{w1}/provisioning-tokens/{token_id}/revoke").status_code == 404
    assert attacker.get(f"{w1}/provisioning-operations").json() == []
    assert (
        attacker.get(f"{w1}/provisioning-operations", params={"verificationCode": code}).json()
        == []
    )
    assert attacker.get(f"{w1}/provisioning-operations/{op_id}").status_code == 404
    for target in (op_id, code):
        for action in ("approve", "cancel"):
            r = attacker.post(f"{w1}/provisioning-operations/{target}/{action}")
            assert r.status_code == 404, (target, action, r.text)
    assert attacker.get(f"{w1}/devices").json() == []
    device = f"{w1}/devices/{victim.device_id}"
    for method, path in (
        ("GET", device),
        ("GET", f"{device}/twin"),
        ("GET", f"{device}/messages"),
        ("GET", f"{device}/connections"),
        ("GET", f"{device}/cloud-to-device-messages"),
        ("POST", f"{device}/revoke"),
        ("DELETE", device),
    ):
        r = attacker.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
    assert attacker.get(device).json()["detail"] == "no device 'victim-01' in workspace 'ws-1'"
    assert attacker.patch(f"{device}/twin/desired", json={"rate": 1}).status_code == 404
    assert attacker.patch(f"{device}/twin/tags", json={"site": "x"}).status_code == 404
    sent = attacker.post(f"{device}/cloud-to-device-messages", json={"payload": "stop"})
    assert sent.status_code == 404
    assert attacker.get(f"{w1}/fleet-configurations").json() == []
    assert attacker.get(f"{w1}/fleet-configurations/cfg-1").status_code == 404
    assert attacker.delete(f"{w1}/fleet-configurations/cfg-1").status_code == 404
    assert [k["workspaceId"] for k in attacker.get(f"{w1}/api-keys").json()] == ["ws-1"]
    assert attacker.post(f"{w1}/api-keys/{victim_key['id']}/revoke").status_code == 404

    # w2 is as it was
    w2 = api("ws-2")
    assert admin.get(f"{w2}/provisioning-tokens/{token_id}").json()["revokedAt"] is None
    assert admin.get(f"{w2}/provisioning-operations/{op_id}").json()["state"] == "pending"
    assert admin.get(f"{w2}/devices/{victim.device_id}").status_code == 200
    assert admin.get(f"{w2}/fleet-configurations/cfg-1").status_code == 200
    keys = {k["id"]: k for k in admin.get(f"{w2}/api-keys").json()}
    assert keys[victim_key["id"]]["revokedAt"] is None
    # and the same id of a configuration is w1's own to use
    assert attacker.post(f"{w1}/fleet-configurations", json=config).status_code == 201


def test_a_provisioning_token_opens_operations_only_in_its_workspace(
    admin: httpx.Client, http: httpx.Client
) -> None:
    make_workspaces(admin, "ws-1", "ws-2")
    pt = create_token(admin, "ws-1")["provisioningToken"]
    op = init(http, pt, "sensor-01")["provisioningOperationId"]
    assert [o["id"] for o in admin.get(f"{api('ws-1')}/provisioning-operations").json()] == [op]
    assert admin.get(f"{api('ws-2')}/provisioning-operations").json() == []
    assert admin.get(f"{api(None)}/provisioning-operations").json() == []
    assert admin.post(f"{api(None)}/provisioning-operations/{op}/approve").status_code == 404
    assert admin.post(f"{api('ws-1')}/provisioning-operations/{op}/approve").status_code == 200
    done = http.put(
        "/provisioning-operations/complete",
        json={"provisioningOperationId": op},
        headers={"Authorization": f"DeviceToken {pt}"},
    ).json()
    assert done["deviceId"] == "sensor-01"
    reg = http.put(
        "/devices/register", headers={"Authorization": f"DeviceToken {done['registrationToken']}"}
    ).json()
    assert (reg["workspaceId"], reg["deviceId"], reg["mqttClientId"], reg["mqttUsername"]) == (
        "ws-1",
        "sensor-01",
        "ws-1:sensor-01",
        "ws-1:sensor-01",
    )
    assert "DeviceId=ws-1:sensor-01;" in reg["connectionString"]
    listed = admin.get(f"{api('ws-1')}/devices").json()
    assert [(d["deviceId"], d["workspaceId"]) for d in listed] == [("sensor-01", "ws-1")]
    assert admin.get(f"{api(None)}/devices").json() == []


# Isolation over MQTT -----------------------------------------------------------------------


def test_one_device_id_in_two_workspaces_lives_apart_over_mqtt(
    platform: Platform, admin: httpx.Client, http: httpx.Client, devices: list[Device]
) -> None:
    make_workspaces(admin, "ws-1", "ws-2")
    mine = provision_in(admin, http, "ws-1", "pump-0001")
    theirs = provision_in(admin, http, "ws-2", "pump-0001")
    plain = provision_in(admin, http, None, "pump-0001")
    assert (mine.client_id, theirs.client_id, plain.client_id) == (
        "ws-1:pump-0001",
        "ws-2:pump-0001",
        "pump-0001",
    )
    assert plain.register["workspaceId"] == "default"

    victim = connected(platform, devices, theirs)
    assert victim.subscribe("devices/ws-2:pump-0001/#") == [1]
    attacker = connected(platform, devices, mine)
    connected(platform, devices, plain)  # no takeover between the three
    assert not victim.disconnected.is_set()

    # another workspace's topics: subscribe refused, publish dropped
    assert attacker.subscribe("devices/ws-2:pump-0001/#") == [0x80]
    assert attacker.subscribe("devices/pump-0001/#") == [0x80]
    attacker.publish("devices/ws-2:pump-0001/messages/forged", b"x")
    attacker.publish("devices/ws-2:pump-0001/twin/desired", json.dumps({"rate": 666}))
    attacker.publish("devices/ws-1:pump-0001/messages/mine", b"ok")
    w1_messages = f"{api('ws-1')}/devices/pump-0001/messages"
    assert wait_for(lambda: len(admin.get(w1_messages).json()) == 1)
    assert admin.get(f"{api('ws-2')}/devices/pump-0001/messages").json() == []
    assert admin.get(f"{api(None)}/devices/pump-0001/messages").json() == []

    # w1's password is no key to the same Device ID elsewhere
    for client_id in ("ws-2:pump-0001", "pump-0001"):
        impostor = Device(platform, client_id, mine.password)
        devices.append(impostor)
        assert impostor.connect() != 0

    # a Will on the other workspace's twin is refused at CONNECT and never delivered
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    sock.sendall(
        connect_packet(
            mine.client_id,
            mine.client_id,
            mine.password,
            will_topic="devices/ws-2:pump-0001/twin/desired",
            will_message=json.dumps({"rate": 666, "$version": 99}).encode(),
            will_qos=1,
        )
    )
    assert read_connack(sock) == 5
    abort(sock)
    patched = admin.patch(f"{api('ws-2')}/devices/pump-0001/twin/desired", json={"rate": 7})
    assert patched.status_code == 200
    first = victim.messages.get(timeout=WAIT)
    assert first.topic == "devices/ws-2:pump-0001/twin/desired"
    assert json.loads(first.payload)["rate"] == 7


def test_a_fleet_configuration_reaches_only_its_own_workspace(
    admin: httpx.Client, http: httpx.Client
) -> None:
    make_workspaces(admin, "ws-1", "ws-2")
    for workspace in ("ws-1", "ws-2", None):
        provision_in(admin, http, workspace, "pump-0001")
        tagged = admin.patch(
            f"{api(workspace)}/devices/pump-0001/twin/tags", json={"site": "north"}
        )
        assert tagged.status_code == 200
    config = {"id": "cfg-1", "targetCondition": CONDITION, "desiredProperties": {"rate": 5}}
    made = admin.post(f"{api('ws-1')}/fleet-configurations", json=config)
    assert made.status_code == 201, made.text
    assert made.json()["metrics"]["targeted"] == 1

    def desired(workspace: str | None) -> dict[str, Any]:
        twin = admin.get(f"{api(workspace)}/devices/pump-0001/twin").json()
        return {k: v for k, v in twin["desired"]["properties"].items() if not k.startswith("$")}

    assert desired("ws-1") == {"rate": 5}
    assert desired("ws-2") == {}
    assert desired(None) == {}
    # a tag change re-evaluates one device: still its own workspace's configurations only
    admin.patch(f"{api('ws-2')}/devices/pump-0001/twin/tags", json={"line": 2})
    assert desired("ws-2") == {}


# The device SDK ----------------------------------------------------------------------------


def test_the_sdk_provisions_and_sends_in_a_workspace_with_its_token_alone(
    platform: Platform,
    clock: ManualClock,
    admin: httpx.Client,
    http: httpx.Client,
    tmp_path: Path,
) -> None:
    """The device side needs nothing new: the PT names the workspace, register's
    ``mqttClientId`` gives the MQTT identity (``ws-1:sdk-0001``)."""
    make_workspaces(admin, "ws-1")
    provision_in(admin, http, None, "sdk-0001")  # the same Device ID in default
    pt = create_token(admin, "ws-1")["provisioningToken"]

    def approve(op: ProvisioningOperation) -> None:
        r = admin.post(f"{api('ws-1')}/provisioning-operations/{op.verification_code}/approve")
        assert r.status_code == 200, r.text

    with DeviceClient.start(
        pt,
        tmp_path / "d.db",
        server_url=platform.http_url,
        clock=clock,
        on_provisioning_operation=approve,
        device_id="sdk-0001",
        backoff=Backoff(base=0.5, cap=2.0),
    ) as device:
        assert device.device_id == "sdk-0001"
        for i in range(5):
            device.send_message(f"reading {i}".encode(), message_id=f"m{i}")
        assert device.wait_sent(20)
        assert device.status is Status.CONNECTED
    stored = admin.get(f"{api('ws-1')}/devices/sdk-0001/messages").json()
    assert [m["messageId"] for m in stored] == [f"m{i}" for i in range(5)]
    assert admin.get(f"{api(None)}/devices/sdk-0001/messages").json() == []


# The admin client ---------------------------------------------------------------------------


def test_the_admin_client_acts_in_its_workspace(
    platform: Platform, http: httpx.Client, key_of: Callable[..., httpx.Client]
) -> None:
    platform.admin.create_workspace("ws-1")
    platform.admin.create_workspace("ws-2")
    assert [w.id for w in platform.admin.list_workspaces()] == ["default", "ws-1", "ws-2"]
    secret = str(key_of("ws-1").headers["Authorization"]).removeprefix("Bearer ")
    with AdminClient(platform.http_url, secret, workspace="ws-1") as trainee:
        pt = trainee.create_provisioning_token("bench").provisioning_token
        code = init(http, pt, "bench-0001")["verificationCode"]
        assert trainee.approve_operation(code).state == "approved"
        assert [t.id for t in trainee.list_provisioning_tokens()] == [
            t.id for t in platform.admin.in_workspace("ws-1").list_provisioning_tokens()
        ]
        assert platform.admin.list_provisioning_tokens() == []
        with trainee.in_workspace("ws-2") as elsewhere, pytest.raises(PlatformError) as refused:
            elsewhere.list_devices()
        assert (refused.value.status, refused.value.field) == (404, "workspaceId")
        with pytest.raises(PlatformError) as forbidden:
            trainee.list_workspaces()
        assert forbidden.value.status == 403
    platform.admin.delete_workspace("ws-2")
    assert [w.id for w in platform.admin.list_workspaces()] == ["default", "ws-1"]


def test_the_cli_acts_in_the_workspace_it_is_given(
    platform: Platform,
    admin: httpx.Client,
    http: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_workspaces(admin, "ws-1")
    pt = create_token(admin, "ws-1")["provisioningToken"]
    code = init(http, pt, "cli-0001")["verificationCode"]
    connection = ["--server", platform.http_url, "--api-key", platform.admin_key]
    assert main(["operations", *connection]) == 0
    assert capsys.readouterr().out == "No pending Provisioning Operations.\n"
    assert main(["operations", *connection, "--workspace", "ws-1"]) == 0
    assert code in capsys.readouterr().out
    monkeypatch.setenv("IIOT_WORKSPACE", "ws-1")
    assert main(["approve", code, *connection]) == 0
    assert f"Approved {code}" in capsys.readouterr().out
    assert main(["devices", *connection, "--workspace", "nowhere"]) == 1
    assert "no workspace 'nowhere'" in capsys.readouterr().err


def test_a_device_id_with_a_separator_reaches_no_other_workspace(
    admin: httpx.Client, http: httpx.Client, key_of: Callable[..., httpx.Client]
) -> None:
    """``default``'s keys are bare Device IDs: a path ``ws-2:victim-01`` on its routes must not
    name ws-2's device (a Device ID never holds ``:``)."""
    make_workspaces(admin, "ws-2")
    provision_in(admin, http, "ws-2", "victim-01")
    default_key = key_of("default")
    for client in (default_key, admin):
        for method, path in (
            ("GET", "/api/v1/devices/ws-2:victim-01"),
            ("GET", "/api/v1/devices/ws-2:victim-01/twin"),
            ("GET", "/api/v1/devices/ws-2:victim-01/messages"),
            ("POST", "/api/v1/devices/ws-2:victim-01/revoke"),
            ("DELETE", "/api/v1/devices/ws-2:victim-01"),
        ):
            r = client.request(method, path)
            assert r.status_code == 400, (method, path, r.text)
            assert r.json()["field"] == "deviceId"
    assert admin.get(f"{api('ws-2')}/devices/victim-01").json()["registrationTokenStatus"] == (
        "valid"
    )


@needs_mosquitto
@pytest.mark.parametrize("mqtt_broker", ["mosquitto"])
def test_one_device_id_in_two_workspaces_lives_apart_on_mosquitto(
    platform: Platform, admin: httpx.Client, http: httpx.Client, devices: list[Device]
) -> None:
    """Mosquitto mode: the same keys as client ids and usernames in its dynamic security;
    there a denied PUBLISH closes the connection, and a Will on another workspace's topic
    is accepted at CONNECT but never delivered."""
    make_workspaces(admin, "ws-1", "ws-2")
    mine = provision_in(admin, http, "ws-1", "pump-0001")
    theirs = provision_in(admin, http, "ws-2", "pump-0001")
    victim = connected(platform, devices, theirs)
    attacker = connected(platform, devices, mine)
    assert not victim.disconnected.is_set()
    assert attacker.subscribe("devices/ws-2:pump-0001/#") == [0x80]
    attacker.publish("devices/ws-1:pump-0001/messages/mine/mid=own", b"ok")
    w1_messages = f"{api('ws-1')}/devices/pump-0001/messages"
    assert wait_for(lambda: len(admin.get(w1_messages).json()) == 1)
    attacker.client.publish("devices/ws-2:pump-0001/messages/forged/mid=x", b"x", qos=1)
    assert attacker.disconnected.wait(WAIT)

    dying = Device(platform, mine.client_id, mine.password)
    devices.append(dying)
    dying.client.will_set("devices/ws-2:pump-0001/messages/will/mid=w", b"died", qos=1)
    assert dying.connect() == 0
    dying.client.socket().close()  # dies without DISCONNECT: mosquitto sends a Will it may
    dying.client.loop_stop()
    victim.publish("devices/ws-2:pump-0001/messages/own/mid=v", b"v")
    w2_messages = f"{api('ws-2')}/devices/pump-0001/messages"
    assert wait_for(lambda: len(admin.get(w2_messages).json()) >= 1)
    time.sleep(0.3)  # what a leak would need to land (real network time, not clock time)
    assert [m["messageId"] for m in admin.get(w2_messages).json()] == ["v"]
    assert [m["messageId"] for m in admin.get(w1_messages).json()] == ["own"]


def test_a_class_gives_each_trainee_a_workspace_token_and_key_of_their_own(
    platform: Platform, http: httpx.Client
) -> None:
    seats = platform.admin.create_class(["alice", "bobby"])
    assert [s.workspace_id for s in seats] == ["alice", "bobby"]
    alice, bobby = seats
    code = init(http, alice.provisioning_token, "bench-0001")["verificationCode"]
    with (
        AdminClient(platform.http_url, alice.technician_key, workspace="alice") as mine,
        AdminClient(platform.http_url, bobby.technician_key, workspace="bobby") as theirs,
    ):
        assert [o.verification_code for o in theirs.list_operations()] == []
        with pytest.raises(PlatformError) as refused:
            theirs.approve_operation(code)
        assert refused.value.status == 404
        with theirs.in_workspace("alice") as elsewhere, pytest.raises(PlatformError) as hidden:
            elsewhere.list_operations()
        assert hidden.value.status == 404
        assert mine.approve_operation(code).state == "approved"
        with pytest.raises(PlatformError) as technician:  # an admin route
            mine.create_provisioning_token("more")
        assert technician.value.status == 403


def hub_session(platform: Platform, device: Provisioned, client_id: str | None = None) -> Device:
    """An IoT Hub dialect (Spotflow SDK) session from the register answer's connection string,
    optionally claiming another client id with it."""
    parts = dict(p.split("=", 1) for p in device.register["connectionString"].split(";"))
    claimed = client_id or parts["DeviceId"]
    username = f"{device.register['iotHubHostName']}/{claimed}/?api-version=2018-06-30"
    return Device(platform, claimed, parts["SharedAccessSignature"], username)


def test_the_iot_hub_dialect_keeps_workspaces_apart(
    platform: Platform, admin: httpx.Client, http: httpx.Client, devices: list[Device]
) -> None:
    make_workspaces(admin, "ws-1", "ws-2")
    mine = provision_in(admin, http, "ws-1", "pump-0001")
    provision_in(admin, http, "ws-2", "pump-0001")
    provision_in(admin, http, None, "pump-0001")
    assert "DeviceId=ws-1:pump-0001;" in mine.register["connectionString"]

    # ws-1's SAS proves ws-1's device only
    for claimed in ("ws-2:pump-0001", "default:pump-0001"):
        impostor = hub_session(platform, mine, claimed)
        devices.append(impostor)
        assert impostor.connect() != 0, claimed
    session = hub_session(platform, mine)
    devices.append(session)
    assert session.connect() == 0
    assert session.subscribe("$iothub/twin/PATCH/properties/desired/#") == [1]
    session.publish("devices/ws-2:pump-0001/messages/events/message-id=forged", b"x")
    session.publish("devices/pump-0001/messages/events/message-id=forged", b"x")
    session.publish("devices/ws-1:pump-0001/messages/events/message-id=own", b"ok")
    mine_stored = f"{api('ws-1')}/devices/pump-0001/messages"
    assert wait_for(lambda: len(admin.get(mine_stored).json()) == 1)
    assert admin.get(mine_stored).json()[0]["messageId"] == "own"
    for workspace in ("ws-2", None):
        assert admin.get(f"{api(workspace)}/devices/pump-0001/messages").json() == []

    # desired patches reach the session of their own workspace's device only
    for workspace, rate in (("ws-2", 2), (None, 3), ("ws-1", 1)):
        patched = admin.patch(
            f"{api(workspace)}/devices/pump-0001/twin/desired", json={"rate": rate}
        )
        assert patched.status_code == 200
    first = session.messages.get(timeout=WAIT)
    assert json.loads(first.payload)["rate"] == 1


def test_the_approval_panel_picks_a_workspace(
    platform: Platform, clock: ManualClock, admin: httpx.Client, http: httpx.Client
) -> None:
    make_workspaces(admin, "ws-1")
    in_default = init(http, create_token(admin, None)["provisioningToken"], "dflt-0001")
    in_ws1 = init(http, create_token(admin, "ws-1")["provisioningToken"], "ws1d-0001")
    panel = ApprovalPanel(platform.admin, auto_refresh=False, now=clock.now, workspaces=True)
    try:
        assert panel.picker is not None
        assert list(panel.picker.options) == ["default", "ws-1"]
        assert list(panel.rows) == [in_default["provisioningOperationId"]]
        shown = panel.select_workspace("ws-1")
        assert [op.id for op in shown] == [in_ws1["provisioningOperationId"]]
        assert panel.picker.value == "ws-1"
        with pytest.raises(PlatformError):  # default's operation is not ws-1's
            panel.approve(in_default["verificationCode"])
        assert panel.approve(in_ws1["verificationCode"]).state == "approved"
        panel.picker.value = "default"  # what a click on the picker does
        assert list(panel.rows) == [in_default["provisioningOperationId"]]
    finally:
        panel.close()


def test_a_platform_in_a_workspace_keeps_its_notebook_there(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Platform(data_dir=tmp_path / "data", clock=clock, workspace="class-01") as platform:
        assert platform.admin.workspace == "class-01"
        platform.admin.create_provisioning_token("line 1")
        with platform.admin.in_workspace("default") as default:
            assert default.list_provisioning_tokens() == []
    # started again on the same data: the workspace exists and is used as it is
    with Platform(data_dir=tmp_path / "data", clock=clock, workspace="class-01") as platform:
        assert [t.name for t in platform.admin.list_provisioning_tokens()] == ["line 1"]
    with pytest.raises(PlatformError) as refused:
        Platform(data_dir=tmp_path / "data", clock=clock, workspace="a:b").start()
    assert (refused.value.status, refused.value.field) == (400, "id")
