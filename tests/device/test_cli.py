"""``iiot-device run``: a virtual device process against the real platform."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from iiotsim.platform import Platform

from ..integration.mqtt import wait_for


def test_run_provisions_and_sends(platform: Platform, tmp_path: Path) -> None:
    pt = platform.admin.create_provisioning_token(
        "cli", allow_infinite_lifetime=True
    ).provisioning_token
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "iiot_device.cli", "run",
            "--provisioning-token", pt, "--server", platform.http_url,
            "--db", str(tmp_path / "cli.db"), "--device-id", "cli-0001",
            "--interval", "0.05", "--count", "3",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("Verification code: "), first
    code = first.split()[2]
    platform.admin.approve_operation(code)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "device cli-0001 running" in out
    assert wait_for(lambda: len(platform.admin.list_device_messages("cli-0001")) == 3)


def test_run_with_a_refused_token_says_so(platform: Platform, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "iiot_device.cli", "run", "--provisioning-token", "pt_nope",
            "--server", platform.http_url, "--db", str(tmp_path / "x.db"),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: the platform refused the Provisioning Token" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_sdk_imports_nothing_of_the_platform() -> None:
    script = (
        "import sys, iiot_device, iiot_device.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'litestar', 'amqtt', 'iiot_server', 'iiotsim', 'simpy', 'pandas', 'sqlalchemy'})\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_run_without_a_device_id_says_how_to_give_one(platform: Platform, tmp_path: Path) -> None:
    """The default token wants the device to name itself: the README's old command, which
    had no --device-id, ended in "refused Device ID None" and no way forward."""
    pt = platform.admin.create_provisioning_token("line").provisioning_token
    result = subprocess.run(
        [sys.executable, "-m", "iiot_device.cli", "run", "--provisioning-token", pt,
         "--server", platform.http_url, "--db", str(tmp_path / "d.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "requires the device to give its Device ID" in result.stderr
    assert "(give the device its ID: --device-id ID)" in result.stderr
    assert "Traceback" not in result.stderr
