"""``iiotsim serve`` as a user runs it: the platform in the foreground, same options as
``python -m iiot_server``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from .server.test_standalone import free_port, start_until_ready


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    return start_until_ready([sys.executable, "-m", "iiotsim.cli", *args], {**os.environ, **env})


def test_serve_runs_http_and_mqtt_until_interrupted(tmp_path: Path) -> None:
    http_port, mqtt_port = free_port(), free_port()
    proc, output = start(
        [
            "serve",
            "--port",
            str(http_port),
            "--mqtt-port",
            str(mqtt_port),
            "--database-url",
            f"sqlite:///{tmp_path / 'cli.db'}",
        ],
        {"IIOT_ADMIN_KEY": "ak_cli-test"},
    )
    try:
        assert f"listening on http://127.0.0.1:{http_port}" in output, output
        assert f"MQTT broker on 127.0.0.1:{mqtt_port}" in output, output
        devices = httpx.get(
            f"http://127.0.0.1:{http_port}/api/v1/devices",
            headers={"Authorization": "Bearer ak_cli-test"},
        )
        assert devices.status_code == 200
        with socket.create_connection(("127.0.0.1", mqtt_port), timeout=5):
            pass
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert (tmp_path / "cli.db").exists()


def test_serve_on_a_busy_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "iiotsim.cli", "serve", "--port", str(port), "--no-mqtt"],
            env={**os.environ, "IIOT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert re.search(
        r"error: the platform could not start: .*address already in use", result.stderr, re.I
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_no_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iiotsim.cli"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "serve" in result.stderr


def test_lab_serves_the_notebooks_with_this_environments_kernel() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "iiotsim.cli", "lab", "--no-browser",
         f"--ServerApp.port={port}", "--IdentityProvider.token=test-token"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": "token test-token"}
        for _ in range(600):  # JupyterLab takes a few seconds to start
            try:
                contents = httpx.get(f"{base}/api/contents", headers=headers, timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise AssertionError("iiotsim lab exited") from None
                threading.Event().wait(0.1)
        else:
            raise AssertionError("JupyterLab did not answer")
        names = {item["name"] for item in contents.json()["content"]}
        assert "01_quickstart.ipynb" in names
        specs = httpx.get(f"{base}/api/kernelspecs", headers=headers).json()
        argv = specs["kernelspecs"][specs["default"]]["spec"]["argv"]
        assert (
            argv[0] in (sys.executable, "python")
            or Path(argv[0]).resolve() == Path(sys.executable).resolve()
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
