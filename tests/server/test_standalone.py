"""``python -m iiot_server`` as an operator runs it: prints its URL, honours IIOT_ADMIN_KEY."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_until_ready(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server command; return once it says it answers ("Press Ctrl+C ...") or
    prints an error, with what it printed until then."""
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    output = ""
    for line in proc.stdout:  # the server prints "listening on ..." once it answers
        output += line
        if "Press Ctrl+C" in line or "error:" in line:
            break
    return proc, output


def run_server(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    database = f"sqlite:///{tmp_path / 'standalone.db'}"
    return start_until_ready(
        [sys.executable, "-m", "iiot_server", "--port", str(free_port()), "--mqtt-port", "0",
         "--database-url", database],
        {**os.environ, **env},
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(30)


def test_first_start_prints_url_and_a_working_admin_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IIOT_ADMIN_KEY"}
    proc, output = run_server(tmp_path, {"IIOT_ADMIN_KEY": ""} | env)
    try:
        url = re.search(r"listening on (http://\S+)", output)
        key = re.search(r"(ak_[A-Za-z0-9_-]+)", output)
        assert url and key, output
        response = httpx.get(
            f"{url.group(1)}/api/v1/devices", headers={"Authorization": f"Bearer {key.group(1)}"}
        )
        assert response.status_code == 200
    finally:
        stop(proc)
    # a second start with the same database prints no new key
    proc, output = run_server(tmp_path, {"IIOT_ADMIN_KEY": ""})
    stop(proc)
    assert "ak_" not in output


def test_admin_key_from_environment(tmp_path: Path) -> None:
    proc, output = run_server(tmp_path, {"IIOT_ADMIN_KEY": "ak_chosen-by-automation"})
    try:
        url = re.search(r"listening on (http://\S+)", output)
        assert url, output
        assert "ak_chosen-by-automation" not in output  # never echoed
        ok = httpx.get(
            f"{url.group(1)}/api/v1/api-keys",
            headers={"Authorization": "Bearer ak_chosen-by-automation"},
        )
        assert ok.status_code == 200
    finally:
        stop(proc)
