"""An ``IIOT_ADMIN_KEY`` that is not an API key (``ak_…``) is refused at start, with a
message naming the variable, instead of starting a server that then refuses that key
on every request (issue 10, item 12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from iiot_server.domain.errors import SettingsError
from iiot_server.settings import Settings

from ..server.test_standalone import free_port


def test_settings_refuse_an_admin_key_without_the_prefix() -> None:
    with pytest.raises(SettingsError, match="IIOT_ADMIN_KEY"):
        Settings(database_url="sqlite:///:memory:", admin_key="chosen-by-automation")


def test_settings_from_environment_refuse_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IIOT_ADMIN_KEY", "secret123")
    with pytest.raises(SettingsError, match=r"IIOT_ADMIN_KEY.*ak_"):
        Settings.from_environment()


def test_a_prefixed_key_is_still_accepted() -> None:
    assert Settings(admin_key="ak_fine").admin_key == "ak_fine"


@pytest.mark.parametrize(
    "command", [["-m", "iiot_server"], ["-m", "iiotsim.cli", "serve"]], ids=["module", "iiotsim"]
)
def test_the_cli_prints_the_reason_and_exits_2(command: list[str], tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            *command,
            "--port",
            str(free_port()),
            "--mqtt-port",
            str(free_port()),
            "--database-url",
            f"sqlite:///{tmp_path / 'refused.db'}",
        ],
        env={**os.environ, "IIOT_ADMIN_KEY": "not-an-api-key"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert "IIOT_ADMIN_KEY" in run.stderr and "ak_" in run.stderr, output
    assert "Traceback" not in output, output
    assert "listening" not in output, output
