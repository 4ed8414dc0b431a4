"""``Platform(tls=True)``: HTTPS and MQTT over TLS with a development CA made in the data
directory, and our SDK provisioning, connecting and sending over both, trusting that CA."""

from __future__ import annotations

import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from iiot_device import Status
from iiot_device.api import DeviceApi
from iiot_server.settings import Settings

from iiotsim.cli import main as admin_cli
from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from ..device.sdk import Approver, start_device


@pytest.fixture
def tls_platform(clock: ManualClock, tmp_path: Path) -> Iterator[Platform]:
    with Platform(data_dir=tmp_path / "data", clock=clock, tls=True, mqtt_port=0) as running:
        yield running


def test_the_development_ca_is_made_in_the_data_directory_with_private_keys(
    tls_platform: Platform, tmp_path: Path
) -> None:
    tls_dir = tmp_path / "data" / "tls"
    assert tls_platform.ca_cert_path == tls_dir / "ca.pem"
    assert tls_platform.http_url.startswith("https://127.0.0.1:")
    for key in ("ca-key.pem", "server-key.pem"):
        assert stat.S_IMODE((tls_dir / key).stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate((tls_dir / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_sdk_provisions_and_sends_over_https_and_mqtts(
    tls_platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    pt = tls_platform.admin.create_provisioning_token("tls").provisioning_token
    approver = Approver(tls_platform)
    with start_device(
        tls_platform,
        clock,
        pt,
        tmp_path / "d.db",
        approver,
        device_id="tls-0001",
        ca_cert=tls_platform.ca_cert_path,
    ) as device:
        assert len(approver.shown) == 1
        device.send_message(b"over tls", message_id="t1")
        assert device.wait_sent(20)
        assert device.status is Status.CONNECTED
    stored = tls_platform.admin.list_device_messages("tls-0001", stream="default")
    assert [m.message_id for m in stored] == ["t1"]


def test_mqtt_over_tls_refuses_a_plain_connection_and_checks_the_ca(
    tls_platform: Platform,
) -> None:
    """The broker's port speaks TLS only: a plain MQTT CONNECT gets no CONNACK; a TLS
    client trusting the CA completes the handshake for the name 127.0.0.1."""
    port = tls_platform.mqtt_port
    connect = bytes.fromhex("101000044d5154540402003c000470726f62")  # CONNECT, id "prob"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(connect)
        try:
            answer = plain.recv(4)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"\x20")  # no CONNACK
    context = ssl.create_default_context(cafile=str(tls_platform.ca_cert_path))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_plain_http_to_the_tls_port_fails(tls_platform: Platform) -> None:
    plain_url = tls_platform.http_url.replace("https://", "http://")
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.TransportError):
        client.get(f"{plain_url}/health")


def test_https_without_trusting_the_ca_is_refused(tls_platform: Platform) -> None:
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.ConnectError):
        client.get(f"{tls_platform.http_url}/health")
    trusted = ssl.create_default_context(cafile=str(tls_platform.ca_cert_path))
    with httpx.Client(timeout=5, verify=trusted) as client:
        assert client.get(f"{tls_platform.http_url}/health").status_code == 200


def test_a_second_start_on_the_same_directory_reuses_the_ca(tmp_path: Path) -> None:
    with Platform(data_dir=tmp_path, tls=True, mqtt_port=0) as first:
        assert first.ca_cert_path is not None
        ca = first.ca_cert_path.read_bytes()
        server = (tmp_path / "tls" / "server.pem").read_bytes()
    with Platform(data_dir=tmp_path, tls=True, mqtt_port=0) as second:
        assert second.ca_cert_path is not None
        assert second.ca_cert_path.read_bytes() == ca
        assert (tmp_path / "tls" / "server.pem").read_bytes() == server
        assert second.admin.list_provisioning_tokens() == []  # the admin client trusts it


def test_device_api_trusts_the_given_ca_only(tls_platform: Platform) -> None:
    """Without ``ca_cert`` the SDK uses the system's trust store, which does not hold the
    development CA: the call fails on the certificate (the client retries such failures
    as an unreachable platform), nothing is sent in clear."""
    pt = tls_platform.admin.create_provisioning_token("untrusted").provisioning_token
    untrusting = DeviceApi(tls_platform.http_url, timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.init(pt, "tls-0002", None)
    untrusting.close()
    trusting = DeviceApi(tls_platform.http_url, timeout=5, ca_cert=tls_platform.ca_cert_path)
    assert trusting.init(pt, "tls-0002", None).device_id == "tls-0002"
    trusting.close()


def test_admin_commands_trust_the_ca_they_are_given(
    tls_platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--server", tls_platform.http_url, "--api-key", tls_platform.admin_key]
    assert admin_cli(["devices", *server, "--ca-cert", str(tls_platform.ca_cert_path)]) == 0
    capsys.readouterr()
    assert admin_cli(["devices", *server]) == 1  # the system store lacks the development CA
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err


def test_a_silent_tls_connection_is_closed_after_the_handshake_timeout(tmp_path: Path) -> None:
    """asyncio gives a TLS handshake 60 s; the platform gives it tls_handshake_timeout, on
    both listeners, so silent sockets cannot pile up before any other deadline starts."""
    with Platform(
        data_dir=tmp_path, tls=True, mqtt_port=0, settings=Settings(tls_handshake_timeout=1.0)
    ) as platform:
        for port in (platform.runner.port, platform.mqtt_port):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as silent:
                assert silent.recv(1) == b""  # closed by the server (20 s would raise)
