"""A real MQTT client of another project (Debian's mosquitto-clients) against our broker."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from ..server.test_register_spotflow_shape import expected_signature
from .brokers import BOTH_BROKERS
from .mqtt import provision, wait_for
from .test_broker import stored
from .test_iot_hub_dialect import hub_credentials

MISSING = shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None
pytestmark = pytest.mark.skipif(
    MISSING and not os.environ.get("CI"),
    reason="mosquitto-clients not installed (.ci/run installs it; apt-get install mosquitto-clients)",
)


def mosquitto_pub(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            platform.mqtt_host,
            "-p",
            str(platform.mqtt_port),
            "-V",
            "mqttv311",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_mosquitto_pub_with_device_credentials_is_stored(platform: Platform) -> None:
    reg = provision(platform, "mosq-0001")
    result = mosquitto_pub(
        platform,
        "-i",
        reg.device_id,
        "-u",
        reg.device_id,
        "-P",
        reg.password,
        "-q",
        "1",
        "-t",
        "devices/mosq-0001/messages/default/mid=from-mosquitto",
        "-m",
        "hello from mosquitto_pub",
    )
    assert result.returncode == 0, result.stderr
    assert wait_for(
        lambda: (
            stored(platform, "mosq-0001")
            == [("default", "from-mosquitto", "hello from mosquitto_pub")]
        )
    )


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_mosquitto_clients_without_credentials_are_refused(platform: Platform) -> None:
    provision(platform, "mosq-0002")
    anonymous = mosquitto_pub(
        platform, "-i", "mosq-0002", "-t", "devices/mosq-0002/messages/default", "-m", "x"
    )
    assert anonymous.returncode != 0
    wrong = mosquitto_pub(
        platform,
        "-i",
        "mosq-0002",
        "-u",
        "mosq-0002",
        "-P",
        "mp_wrong",
        "-t",
        "devices/mosq-0002/messages/default",
        "-m",
        "x",
    )
    assert wrong.returncode != 0
    sub = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            platform.mqtt_host,
            "-p",
            str(platform.mqtt_port),
            "-V",
            "mqttv311",
            "-i",
            "mosq-0002",
            "-t",
            "devices/mosq-0002/twin/desired",
            "-C",
            "1",
            "-W",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert sub.returncode != 0
    assert stored(platform, "mosq-0002") == []


def test_mosquitto_sub_receives_platform_messages(platform: Platform) -> None:
    reg = provision(platform, "mosq-0003")
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            platform.mqtt_host,
            "-p",
            str(platform.mqtt_port),
            "-V",
            "mqttv311",
            "-i",
            reg.device_id,
            "-u",
            reg.device_id,
            "-P",
            reg.password,
            "-q",
            "1",
            "-t",
            "devices/mosq-0003/twin/desired",
            "-C",
            "1",
            "-W",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    broker = platform.services.broker
    assert wait_for(lambda: platform.admin.get_device("mosq-0003").connected)
    assert wait_for(
        lambda: any(f == "devices/mosq-0003/twin/desired" for f in broker.subscriptions)
    )
    platform.runner.call(
        broker.internal_message_broadcast("devices/mosq-0003/twin/desired", b'{"$version": 1}', 1)
    )
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err
    assert out.strip() == '{"$version": 1}'


@pytest.mark.parametrize(
    ("topic", "retain"),
    [("devices/mosq-victim/twin/desired", False), ("devices/mosq-rogue/messages/will", True)],
    ids=["another-devices-twin", "retained-on-own-topic"],
)
def test_mosquitto_pub_with_a_forbidden_will_is_refused(
    platform: Platform, topic: str, retain: bool
) -> None:
    """issue 10, item 1, with another project's client: a Will on another device's topic,
    or a retained one, refuses the CONNECT (not authorised) and nothing is delivered."""
    rogue = provision(platform, "mosq-rogue")
    victim = provision(platform, "mosq-victim")
    will = ["--will-topic", topic, "--will-payload", '{"setpoint": 9999, "$version": 1000}']
    result = mosquitto_pub(
        platform,
        "-i",
        rogue.device_id,
        "-u",
        rogue.device_id,
        "-P",
        rogue.password,
        *will,
        *(["--will-retain"] if retain else []),
        "-t",
        "devices/mosq-rogue/messages/default",
        "-m",
        "never sent",
    )
    assert result.returncode != 0
    assert "not authori" in (result.stderr + result.stdout).lower()
    assert not platform.services.broker.retained_messages
    assert not stored(platform, rogue.device_id)
    assert platform.admin.get_twin(victim.device_id).desired.version == 0


def test_mosquitto_pub_over_tls_with_a_sas_from_register_speaks_the_iot_hub_dialect(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 13, with another project's client: the IoT Hub dialect as Spotflow's SDK
    speaks it (client id ``<ws>:<dev>``, the IoT Hub username, the SAS from the register
    answer as password) over TLS, trusting the development CA. Telemetry is stored; a
    wrong signature and an expired SAS are refused at CONNECT; another device's topic is
    not stored."""
    with Platform(data_dir=tmp_path / "data", clock=clock, tls=True, mqtt_port=0) as tls:
        assert tls.ca_cert_path is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_cert_path))  # for httpx, as for the SDK
        reg, other = provision(tls, "mosq-hub-1"), provision(tls, "mosq-hub-2")
        creds = hub_credentials(tls, reg)

        def hub_pub(password: str, topic: str, message: str) -> subprocess.CompletedProcess[str]:
            return mosquitto_pub(
                tls,
                "--cafile",
                str(tls.ca_cert_path),
                "-i",
                creds.client_id,
                "-u",
                creds.username,
                "-P",
                password,
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                message,
            )

        own = "devices/default:mosq-hub-1/messages/events/stream-name=temp&message-id=t1"
        sent = hub_pub(creds.password, own, "21.5")
        assert sent.returncode == 0, sent.stderr
        assert wait_for(lambda: stored(tls, reg.device_id) == [("temp", "t1", "21.5")])

        sig = creds.password.split("&sig=", 1)[1].split("&", 1)[0]
        wrong = hub_pub(creds.password.replace(sig, "A" * len(sig)), own, "wrong signature")
        sr = creds.password.split("sr=", 1)[1].split("&", 1)[0]
        past = str(int(clock.now().timestamp()) - 1)
        signature = quote(expected_signature(tls, reg.device_id, sr, past), safe="")
        expired_sas = f"SharedAccessSignature sr={sr}&sig={signature}&se={past}"
        expired = hub_pub(expired_sas, own, "expired")
        for refused in (wrong, expired):
            assert refused.returncode != 0
            assert "not authori" in (refused.stderr + refused.stdout).lower()

        forged = hub_pub(
            creds.password, "devices/default:mosq-hub-2/messages/events/stream-name=x", "forged"
        )
        assert forged.returncode == 0, forged.stderr  # accepted on the wire, never stored
        last = hub_pub(creds.password, own.replace("t1", "t2"), "22.0")
        assert last.returncode == 0, last.stderr
        assert wait_for(lambda: len(stored(tls, reg.device_id)) == 2)
        assert stored(tls, other.device_id) == []
