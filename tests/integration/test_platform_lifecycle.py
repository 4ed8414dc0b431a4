"""``iiotsim.Platform`` stops cleanly: no threads, sockets, file descriptors or asyncio
tasks outlive it, and its ports are free again."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .mqtt import Device, provision


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def test_platform_leaves_nothing_behind(tmp_path: Path) -> None:
    with Platform(data_dir=tmp_path / "warm-up"):
        pass  # uvloop's first loop in a process opens a process-wide pipe that it keeps
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    with Platform(data_dir=tmp_path, clock=ManualClock()) as platform:
        ports = (platform.runner.port, platform.mqtt_port)
        reg = provision(platform, "lifecycle-01")
        device = Device(platform, reg.device_id, reg.password)
        assert device.connect() == 0
        device.publish("devices/lifecycle-01/messages/default", b"hello")
        device.close()
        del device  # paho keeps a wake-up socket pair until its client is collected
        runner = platform.runner
    gc.collect()
    assert runner.leftover_tasks == []
    assert set(threading.enumerate()) - threads_before == set()
    leaked = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in open_fds() - fds_before}
    leaked = {fd: target for fd, target in leaked.items() if os.path.exists(f"/proc/self/fd/{fd}")}
    assert leaked == {}
    for port in ports:  # both listeners are closed: the ports can be bound again
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_restarted_platform_on_the_same_directory_keeps_its_data(tmp_path: Path) -> None:
    with Platform(data_dir=tmp_path) as first:
        first.admin.create_provisioning_token("kept")
    with Platform(data_dir=tmp_path) as second:
        assert [t.name for t in second.admin.list_provisioning_tokens()] == ["kept"]


def test_a_platform_left_running_removes_its_temporary_directory_at_exit() -> None:
    """Notebooks keep their platform live to the end (its widgets stay usable), so the
    kernel's exit, not ``stop()``, must remove the temporary data directory."""
    script = (
        "from iiotsim import Platform\n"
        "platform = Platform().start()\n"
        "platform.admin.create_provisioning_token('left-running')\n"
        "print(platform.data_dir, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    data_dir = Path(done.stdout.strip())
    assert data_dir.name.startswith("iiotsim-")
    assert not data_dir.exists()
