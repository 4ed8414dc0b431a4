"""``PUT /devices/register`` answers Spotflow's fields beside iiotsim's own (issue 13): the
real SDK could not parse the old answer and retried every 5 s forever. The SAS is
recomputed here independently (hmac, the platform's signing key, the RT's id read from
the database) rather than through the platform's own code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest
from iiot_server.domain.errors import SettingsError
from iiot_server.settings import Settings
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .device_calls import register
from .test_http_flow import provision

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

SAS = re.compile(r"^SharedAccessSignature sr=(?P<sr>[^&]+)&sig=(?P<sig>[^&]+)&se=(?P<se>\d+)$")


def registration_token_id(platform: Platform, device_id: str) -> str:
    engine = create_engine(platform.settings.database_url, poolclass=NullPool)
    with engine.connect() as db:
        [(token_id,)] = db.execute(
            text(
                "SELECT id FROM registration_tokens WHERE device_id = :device_id "
                "AND revoked_at IS NULL AND superseded_at IS NULL"
            ),
            {"device_id": device_id},
        ).all()
    engine.dispose()
    return str(token_id)


def expected_signature(platform: Platform, device_id: str, encoded_sr: str, se: str) -> str:
    """IoT Hub's SAS signature under the device key the platform derives (and documents):
    HMAC-SHA256(signing key, label + RT id), then HMAC-SHA256 of "<sr>\\n<se>"."""
    text = platform.settings.sas_signing_key
    assert text is not None
    signing_key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    label = b"iiotsim device SAS key\x00" + registration_token_id(platform, device_id).encode()
    device_key = hmac.new(signing_key, label, hashlib.sha256).digest()
    mac = hmac.new(device_key, f"{encoded_sr}\n{se}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def connection_string_parts(body: dict[str, object]) -> dict[str, str]:
    text = body["connectionString"]
    assert isinstance(text, str)
    return dict(part.split("=", 1) for part in text.split(";"))


def test_register_answers_spotflows_fields(
    platform: Platform, http: httpx.Client, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token(
        "spotflow", max_registration_token_lifetime=2 * 86400 + 3600
    ).provisioning_token
    rt = provision(platform, http, pt, deviceId="sf-0001")
    clock.advance(61.5)
    response = register(http, rt)
    assert response.status_code == 200
    body = response.json()
    # iiotsim's own fields are still there
    assert body["deviceId"] == "sf-0001" and body["mqttPassword"].startswith("mp_")
    assert body["iotHubHostName"] == platform.mqtt_host == "127.0.0.1"
    assert body["connectionStringType"] == "SharedAccessSignature"
    assert body["workspaceId"] == "default"
    # the RT was issued 61.5 s ago with 2 d 1 h: .NET's TimeSpan, whole seconds
    assert body["tokenRemainingLifetime"] == "2.00:58:58"
    rt_expiry = clock.now() + timedelta(seconds=2 * 86400 + 3600 - 61.5)
    assert datetime.fromisoformat(body["registrationTokenExpirationTime"]) == rt_expiry
    parts = connection_string_parts(body)
    assert parts["HostName"] == "127.0.0.1"
    assert parts["DeviceId"] == "default:sf-0001"
    sas = SAS.match(parts["SharedAccessSignature"])
    assert sas, parts["SharedAccessSignature"]
    assert unquote(sas["sr"]) == "127.0.0.1/devices/default:sf-0001"
    assert sas["sr"] == quote("127.0.0.1/devices/default:sf-0001", safe="")
    # the SAS expires with the RT (rounded down to a whole second), and says so
    assert int(sas["se"]) == int(rt_expiry.timestamp())
    expiration = datetime.fromisoformat(body["connectionStringExpiration"])
    assert expiration.timestamp() == int(sas["se"])
    assert unquote(sas["sig"]) == expected_signature(platform, "sf-0001", sas["sr"], sas["se"])


def test_sas_of_an_infinite_token_lasts_a_day(
    platform: Platform, http: httpx.Client, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token(
        "forever", allow_infinite_lifetime=True
    ).provisioning_token
    rt = provision(platform, http, pt, deviceId="sf-0002")
    body = register(http, rt).json()
    assert body["tokenRemainingLifetime"] is None
    expiration = datetime.fromisoformat(body["connectionStringExpiration"])
    assert expiration == clock.now() + timedelta(days=1)
    sas = SAS.match(connection_string_parts(body)["SharedAccessSignature"])
    assert sas
    assert unquote(sas["sig"]) == expected_signature(platform, "sf-0002", sas["sr"], sas["se"])


def test_a_new_token_signs_with_a_new_key(platform: Platform, http: httpx.Client) -> None:
    """The key is bound to the RT: re-provisioning the same Device ID gives another key,
    so an old SAS cannot be replayed as the new one's."""
    pt = platform.admin.create_provisioning_token("again").provisioning_token
    first = register(http, provision(platform, http, pt, deviceId="sf-0003")).json()
    second = register(http, provision(platform, http, pt, deviceId="sf-0003")).json()
    sig = [SAS.match(connection_string_parts(b)["SharedAccessSignature"]) for b in (first, second)]
    assert sig[0] and sig[1] and sig[0]["sig"] != sig[1]["sig"]


def test_the_signing_key_is_kept_in_the_data_directory(
    tmp_path: Path, database_url: str | None
) -> None:
    with Platform(data_dir=tmp_path, database_url=database_url) as first:
        key = first.settings.sas_signing_key
    path = tmp_path / "sas-signing.key"
    assert path.read_text().strip() == key
    assert path.stat().st_mode & 0o777 == 0o600
    with Platform(data_dir=tmp_path, database_url=database_url) as second:
        assert second.settings.sas_signing_key == key


def test_a_signing_key_too_short_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="at least 32 random bytes"):
        Settings(sas_signing_key="c2hvcnQ")
