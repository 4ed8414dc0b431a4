"""The platform verifies the SAS it hands out at register (``authenticate_sas``, what the
broker's IoT Hub dialect will call at CONNECT): signature, resource, ids, expiry, and the
Registration Token it is bound to."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from iiot_server.domain import sas
from iiot_server.services.registration import MqttIdentity

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .device_calls import refresh, register
from .test_http_flow import provision

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

LIFETIME = 7200


class Connect:
    """What the Spotflow SDK sends in its CONNECT, from a register answer."""

    def __init__(self, body: dict[str, str]) -> None:
        parts = dict(p.split("=", 1) for p in body["connectionString"].split(";"))
        self.client_id = parts["DeviceId"]
        self.username = f"{parts['HostName']}/{self.client_id}/?api-version=2018-06-30"
        self.password = parts["SharedAccessSignature"]
        self.expiration = datetime.fromisoformat(body["connectionStringExpiration"])


def authenticate(
    platform: Platform,
    client_id: str,
    username: str,
    password: str,
) -> MqttIdentity | None:
    registration = platform.services.registration
    return platform.runner.call(registration.authenticate_sas(client_id, username, password))


def accepted(platform: Platform, connect: Connect) -> MqttIdentity | None:
    return authenticate(platform, connect.client_id, connect.username, connect.password)


@pytest.fixture
def pt(platform: Platform) -> str:
    return platform.admin.create_provisioning_token(
        "sas", max_registration_token_lifetime=LIFETIME
    ).provisioning_token


def test_the_sas_from_register_is_accepted_until_it_expires(
    platform: Platform, http: httpx.Client, pt: str, clock: ManualClock
) -> None:
    connect = Connect(register(http, provision(platform, http, pt, deviceId="sas-01")).json())
    identity = accepted(platform, connect)
    assert identity is not None
    assert identity.device_id == "sas-01"
    assert identity.expires_at == connect.expiration
    clock.advance((connect.expiration - clock.now()).total_seconds())
    assert accepted(platform, connect) is None


def test_a_sas_is_refused_when_anything_in_it_or_around_it_is_changed(
    platform: Platform, http: httpx.Client, pt: str
) -> None:
    connect = Connect(register(http, provision(platform, http, pt, deviceId="sas-02")).json())
    provision(platform, http, pt, deviceId="sas-03")
    parsed = sas.parse(connect.password)
    assert parsed is not None
    later = connect.password.replace(f"se={parsed.expiry}", f"se={parsed.expiry + 3600}")
    other_resource = connect.password.replace("sas-02", "sas-03")
    forged = sas.sign(parsed.resource, b"\x00" * 32, parsed.expiry)
    refused = [
        (connect.client_id, connect.username, later),  # expiry extended: signature breaks
        (connect.client_id, connect.username, forged),  # another key
        ("default:sas-03", connect.username.replace("sas-02", "sas-03"), other_resource),
        ("default:sas-03", connect.username.replace("sas-02", "sas-03"), connect.password),
        ("other:sas-02", connect.username, connect.password),  # another workspace
        (connect.client_id, "somewhere/default:sas-02/?api-version=2018-06-30", connect.password),
        (connect.client_id, connect.username, "mp_not-a-sas"),
        (connect.client_id, connect.username, ""),
    ]
    for client_id, username, password in refused:
        assert authenticate(platform, client_id, username, password) is None, (
            client_id,
            username,
            password,
        )
    assert accepted(platform, connect) is not None  # the original still is


def test_the_sas_dies_with_its_registration_token(
    platform: Platform, http: httpx.Client, pt: str, clock: ManualClock
) -> None:
    rt = provision(platform, http, pt, deviceId="sas-04")
    connect = Connect(register(http, rt).json())
    child = refresh(http, pt, rt).json()["registrationToken"]
    newer = Connect(register(http, child).json())
    identity = accepted(platform, connect)
    assert identity is not None  # the parent in its grace period
    grace = timedelta(seconds=platform.settings.refresh_grace_period)
    assert identity.expires_at == clock.now() + grace
    clock.advance(platform.settings.refresh_grace_period)
    assert accepted(platform, connect) is None
    assert accepted(platform, newer) is not None
    platform.admin.revoke_device("sas-04")
    assert accepted(platform, newer) is None


def test_a_new_provisioning_invalidates_the_earlier_sas(
    platform: Platform, http: httpx.Client, pt: str
) -> None:
    first = Connect(register(http, provision(platform, http, pt, deviceId="sas-05")).json())
    second = Connect(register(http, provision(platform, http, pt, deviceId="sas-05")).json())
    assert accepted(platform, first) is None
    assert accepted(platform, second) is not None
