"""``python -m iiot_server --tls`` (and so ``iiotsim serve --tls``): HTTPS and MQTT over
TLS with a development CA in the data directory, or the operator's certificate."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
from iiot_server.tls import development_certificates

from iiotsim.platform import SPOTFLOW_MQTT_PORT

from .test_standalone import free_port, start_until_ready, stop


def serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    return start_until_ready(
        [sys.executable, "-m", "iiot_server", "--port", str(free_port()), "--mqtt-port", "0",
         *args],
        {**os.environ, "IIOT_ADMIN_KEY": "ak_tls-test"},
    )  # fmt: skip


def tls_handshake(port: int, ca: Path) -> str | None:
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def test_serve_tls_makes_a_development_ca_and_prints_its_path(tmp_path: Path) -> None:
    proc, output = serve("--tls", "--data-dir", str(tmp_path))
    try:
        url = re.search(r"listening on (https://\S+)", output)
        ca = re.search(r"Development CA .*: (\S+)", output)
        mqtt = re.search(r"MQTT broker on \S+:(\d+) \(MQTT over TLS\)", output)
        assert url and ca and mqtt, output
        assert Path(ca.group(1)) == (tmp_path / "tls" / "ca.pem").resolve()
        assert (tmp_path / "iiot.db").exists()  # --data-dir holds the database too
        trusted = ssl.create_default_context(cafile=ca.group(1))
        health = httpx.get(f"{url.group(1)}/health", verify=trusted, timeout=10)
        assert health.status_code == 200
        assert tls_handshake(int(mqtt.group(1)), Path(ca.group(1)))
    finally:
        stop(proc)


def test_serve_tls_takes_the_mqtts_port_by_default(tmp_path: Path, spotflow_port: int) -> None:
    """With TLS and no --mqtt-port, MQTT listens on 8883 (MQTTS; the only port Spotflow's
    SDK connects to); without TLS on 1883."""
    proc, output = start_until_ready(
        [sys.executable, "-m", "iiot_server", "--port", str(free_port()), "--tls",
         "--data-dir", str(tmp_path)],
        {**os.environ, "IIOT_ADMIN_KEY": "ak_tls-test"},
    )  # fmt: skip
    try:
        assert "MQTT broker on 127.0.0.1:8883 (MQTT over TLS)" in output, output
        assert tls_handshake(SPOTFLOW_MQTT_PORT, tmp_path / "tls" / "ca.pem")
    finally:
        stop(proc)


def test_serve_with_the_operators_certificate(tmp_path: Path) -> None:
    own = development_certificates(tmp_path / "operator")  # stands for the operator's CA
    assert own.ca_cert is not None
    proc, output = serve(
        "--data-dir", str(tmp_path / "data"), "--tls-cert", str(own.cert), "--tls-key", str(own.key)
    )
    try:
        url = re.search(r"listening on (https://\S+)", output)
        assert url, output
        assert "Development CA" not in output
        assert not (tmp_path / "data" / "tls").exists()
        trusted = ssl.create_default_context(cafile=str(own.ca_cert))
        assert httpx.get(f"{url.group(1)}/health", verify=trusted, timeout=10).status_code == 200
    finally:
        stop(proc)


def test_a_certificate_without_its_key_is_a_usage_error(tmp_path: Path) -> None:
    own = development_certificates(tmp_path)
    proc, output = serve("--tls-cert", str(own.cert))
    assert proc.wait(30) == 2
    assert "--tls-cert and --tls-key go together" in output
