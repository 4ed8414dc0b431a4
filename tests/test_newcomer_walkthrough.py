"""The README's "First device in five commands", run as a newcomer runs it: the commands
are read from the README's own code blocks (so the README cannot drift from what is
tested) and run as separate processes: the platform (the Makefile's ``serve`` recipe),
the admin commands and a real ``iiot-device run``.

The only changes to what the README says: the platform listens on free ports instead of
8000/1883 (``IIOT_SERVER`` and the device's ``--server`` follow it) and runs in a temp
directory; placeholders (``ak_...``, ``pt_...``, ``CODE``) are filled from what the
previous commands printed, as a person copies them.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from .server.test_standalone import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment under test: .venv/bin
SECTION = "## First device in five commands"
README_SERVER = "http://127.0.0.1:8000"
WAIT = 60.0  # seconds, bound on real network effects (start-up, a poll, MQTT delivery)


def readme_commands() -> list[str]:
    """The commands of the README's walkthrough, in order, without their comments."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, "README.md has no first-device walkthrough"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


def makefile_recipe(target: str) -> list[str]:
    """The last command of a Makefile target's recipe (what ``make TARGET`` runs)."""
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, f"no {target} target in the Makefile"
    return shlex.split(recipe.group(1).splitlines()[-1].strip())


def local(argv: list[str]) -> list[str]:
    """``.venv/bin/X`` of the README as this environment's X."""
    name = argv[0]
    if name.startswith(".venv/bin/"):
        name = str(BIN / name.removeprefix(".venv/bin/"))
    return [name, *argv[1:]]


class Output:
    """A long-running process's output, read on a thread, awaited line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._changed:
                self.text += line
                self._changed.notify_all()

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + WAIT
        with self._changed:
            while not (found := re.search(pattern, self.text)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} within {WAIT} s in:\n{self.text}")
                self._changed.wait(left)
            return found


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Long-running processes a test starts; interrupted (as Ctrl+C) at its end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in reversed(started):
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def until(run: Callable[[], str], shows: str) -> str:
    """Run a listing again until it shows ``shows`` (bounded), as a person re-runs it
    while a device finishes its poll or its first message is on its way."""
    deadline = time.monotonic() + WAIT
    while True:
        output = run()
        if re.search(shows, output) or time.monotonic() > deadline:
            return output
        time.sleep(0.5)  # re-running a command, not waiting for clock time


def test_readme_first_device_walkthrough(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    commands = readme_commands()
    names = [" ".join(shlex.split(c)[:2]) for c in commands]
    assert names == [
        "make serve",
        "export IIOT_ADMIN_KEY=ak_...",
        ".venv/bin/iiotsim token",
        ".venv/bin/iiot-device run",
        ".venv/bin/iiotsim operations",
        ".venv/bin/iiotsim approve",
        ".venv/bin/iiotsim devices",
        ".venv/bin/iiotsim messages",
    ], commands
    env = {k: v for k, v in os.environ.items() if not k.startswith("IIOT_")}
    filled: dict[str, str] = {}
    printed: dict[str, str] = {}

    def run(argv: list[str]) -> str:
        result = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WAIT
        )
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result.stdout

    for command in commands:
        argv = shlex.split(command)
        if argv == ["make", "serve"]:
            http_port, mqtt_port = free_port(), free_port()
            serve = local(makefile_recipe("serve"))
            assert serve[1:] == ["serve"], serve
            proc = subprocess.Popen(
                [*serve, "--port", str(http_port), "--mqtt-port", str(mqtt_port)],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            processes.append(proc)
            output = Output(proc)
            output.wait_for("Press Ctrl\\+C")
            server = output.wait_for(r"listening on (http://\S+)").group(1)
            filled["ak_..."] = output.wait_for(r"(ak_[A-Za-z0-9_-]+)").group(1)
            filled[README_SERVER] = server
            env["IIOT_SERVER"] = server  # the README's default port, moved
            assert (tmp_path / "iiot-data" / "iiot.db").is_file()  # serve's default data dir
        elif argv[0] == "export":
            name, value = argv[1].split("=", 1)
            env[name] = filled[value]
        elif argv[0].endswith("iiot-device"):
            device_argv = local([filled.get(a, a) for a in argv])
            proc = subprocess.Popen(
                device_argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            processes.append(proc)
            device = Output(proc)
            code = device.wait_for(r"Verification code: ([A-Z0-9]{4}-[A-Z0-9]{4})").group(1)
            filled["CODE"] = code
        else:
            sub = argv[1]
            if sub == "token":
                printed[sub] = out = run(local(argv))
                filled["pt_..."] = re.search(r"^(pt_\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
            elif sub == "operations":
                printed[sub] = run(local(argv))
            elif sub == "approve":
                printed[sub] = run(local([filled.get(a, a) for a in argv]))
            elif sub == "devices":
                printed[sub] = until(partial(run, local(argv)), r"pump-1\s+yes")
            elif sub == "messages":
                printed[sub] = until(partial(run, local(argv)), "telemetry")
            else:
                raise AssertionError(f"a README command this test does not know: {command}")

    assert "Provisioning Token" in printed["token"]
    operations = printed["operations"].splitlines()
    assert re.match(r"CODE\s+DEVICE ID\s+STATE\s+AGE\s+EXPIRES IN", operations[0], re.I)
    assert re.match(rf"{code}\s+pump-1\s+pending\s+\d+ s\s+1[45] min\s+\S+", operations[1])
    assert f"Approved {code}" in printed["approve"]
    assert "device pump-1" in printed["approve"]
    device.wait_for("device pump-1 running")
    assert re.search(r"^pump-1\s+yes\s", printed["devices"], re.M), printed["devices"]
    messages = printed["messages"].splitlines()
    assert re.match(r"SEQ\s+RECEIVED\s+STREAM\s+SIZE\s+PAYLOAD", messages[0], re.I)
    assert re.match(r'1\s+\S+ \S+Z\s+telemetry\s+\d+ B\s+\{"time": ', messages[1]), messages
