"""The technician/admin commands (``iiotsim token create``, ``operations``, ``approve``,
``cancel``, ``devices``, ``messages``, ``admin-key create``) against the real platform,
through ``iiotsim.cli.main`` with captured output (a subprocess adds nothing here; the
README walkthrough runs them as processes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from iiotsim.cli import main
from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .server.device_calls import complete, init
from .server.test_standalone import free_port, start_until_ready


def run(platform: Platform, *argv: str) -> int:
    return main([*argv, "--server", platform.http_url, "--api-key", platform.admin_key])


def test_token_create_prints_the_secret_once_with_its_options(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(platform, "token", "create", "line-1", "--max-registration-token-lifetime",
               "1d12h", "--registration-token-lifetime-override", "allowed") == 0  # fmt: skip
    out = capsys.readouterr().out
    secret = re.search(r"^(pt_\S+)$", out, re.M)
    assert secret, out
    assert "line-1" in out and "1.5 d" in out and "enforced_at_init" in out
    [token] = platform.admin.list_provisioning_tokens()
    assert token.max_registration_token_lifetime == 1.5 * 86400
    assert token.registration_token_lifetime_override == "allowed"
    assert token.id in out


def test_operations_approve_and_cancel_by_code(
    platform: Platform, clock: ManualClock, http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    pt = platform.admin.create_provisioning_token("line-1").provisioning_token
    first = init(http, pt, deviceId="pump-1").json()
    second = init(http, pt, deviceId="pump-2").json()
    clock.advance(120)  # ages and expiries come from the platform's clock
    assert run(platform, "operations") == 0
    rows = capsys.readouterr().out.splitlines()
    assert re.match(r"CODE\s+DEVICE ID\s+STATE\s+AGE\s+EXPIRES IN\s+OPERATION ID", rows[0])
    assert {re.sub(r"\s+", " ", row) for row in rows[1:]} == {
        f"{first['verificationCode']} pump-1 pending 2 min 13 min "
        f"{first['provisioningOperationId']}",
        f"{second['verificationCode']} pump-2 pending 2 min 13 min "
        f"{second['provisioningOperationId']}",
    }
    # the code as a person types it: lower case, no dash
    typed = first["verificationCode"].lower().replace("-", "")
    assert run(platform, "approve", typed) == 0
    assert f"Approved {first['verificationCode']}" in capsys.readouterr().out
    assert complete(http, pt, first["provisioningOperationId"]).status_code == 200
    assert run(platform, "cancel", second["verificationCode"]) == 0
    assert f"Cancelled {second['verificationCode']}" in capsys.readouterr().out
    assert run(platform, "operations") == 0
    assert capsys.readouterr().out == "No pending Provisioning Operations.\n"
    assert run(platform, "devices") == 0
    assert re.search(r"^pump-1\s+no\s", capsys.readouterr().out, re.M)


def test_refusals_print_the_problem_without_a_traceback(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(platform, "approve", "WDJB-MJHT") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: Not found: ")
    assert "WDJB-MJHT" in captured.err and "Traceback" not in captured.err
    assert run(platform, "messages", "no-such-device") == 1
    assert capsys.readouterr().err.startswith("error: Not found: ")
    code = main(["devices", "--server", platform.http_url, "--api-key", "ak_wrong"])
    assert code == 1
    assert "unknown API key (check --api-key or IIOT_ADMIN_KEY)" in capsys.readouterr().err
    code = main(["devices", "--server", f"http://127.0.0.1:{free_port()}", "--api-key", "ak_x"])
    assert code == 1
    assert "cannot reach the platform at http://127.0.0.1:" in capsys.readouterr().err


def test_no_api_key_says_where_to_get_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IIOT_ADMIN_KEY", raising=False)
    assert main(["devices"]) == 1
    assert "iiotsim admin-key create" in capsys.readouterr().err


def test_messages_shows_a_table_and_how_to_page(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    from .integration.mqtt import provision

    device = provision(platform, "pump-1")
    for n in range(3):
        httpx.post(
            f"{platform.http_url}/devices/messages?stream=telemetry&messageId=m{n}",
            content=f'{{"n": {n}}}'.encode(),
            headers={"Authorization": f"DeviceToken {device.rt}"},
        ).raise_for_status()
    assert run(platform, "messages", "pump-1", "--limit", "2") == 0
    rows = capsys.readouterr().out.splitlines()
    assert re.match(r"SEQ\s+RECEIVED\s+STREAM\s+SIZE\s+PAYLOAD", rows[0])
    assert re.match(r'\d+\s+\S+ \S+Z\s+telemetry\s+8 B\s+\{"n": 0\}$', rows[1])
    last_seq = rows[2].split()[0]
    assert rows[3] == f"(more: --after {last_seq})"
    assert run(platform, "messages", "pump-1", "--after", last_seq) == 0
    assert '{"n": 2}' in capsys.readouterr().out


def start_serve(data: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IIOT_")}
    return start_until_ready(
        [sys.executable, "-m", "iiotsim.cli", "serve", "--port", str(free_port()),
         "--no-mqtt", "--database-url", f"sqlite:///{data / 'iiot.db'}"],
        env,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def test_a_lost_admin_key_is_replaced_with_admin_key_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["admin-key", "create", "--data-dir", str(data)]) == 1  # nothing there yet
    assert "no platform database at" in capsys.readouterr().err
    proc, first = start_serve(data)
    stop(proc)
    assert re.search(r"Admin API key \(shown once, keep it\): ak_", first), first
    proc, second = start_serve(data)  # the key printed at first start is lost
    try:
        assert "ak_" not in second
        assert f"to make a new one: iiotsim admin-key create --data-dir {data}" in second, second
        assert main(["admin-key", "create", "--data-dir", str(data)]) == 0
        key = re.search(r"^(ak_\S+)$", capsys.readouterr().out, re.M)
        assert key
        server = re.search(r"listening on (http://\S+)", second)
        assert server
        # the running platform accepts the new key at once, as an admin
        keys = httpx.get(
            f"{server.group(1)}/api/v1/api-keys",
            headers={"Authorization": f"Bearer {key.group(1)}"},
        )
        assert keys.status_code == 200
        assert sorted(k["role"] for k in keys.json()) == ["admin", "admin"]
    finally:
        stop(proc)
