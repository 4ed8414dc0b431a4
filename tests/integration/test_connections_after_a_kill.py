"""A platform killed while devices are connected records them disconnected when it starts
again, on both brokers.

Its broker died with it (mosquitto by ``PDEATHSIG``), so the devices' connections ended,
but nothing recorded it: before, such a device stayed "connected" in the device view and
its connection history until it came back, and forever if it never did.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .brokers import BOTH_BROKERS
from .mqtt import WAIT

CHILD = """
import sys
from iiotsim.clock import ManualClock
from iiotsim.platform import Platform
from tests.integration.mqtt import Device, provision, wait_for
clock = ManualClock()  # 2026-01-01T00:00Z
platform = Platform({data!r}, clock=clock, broker={broker!r}, admin_key={key!r}).start()
reg = provision(platform, "kill-0001")
device = Device(platform, reg.device_id, reg.password)
assert device.connect() == 0
assert wait_for(lambda: platform.admin.get_device(reg.device_id).connected)  # recorded
print("connected", flush=True)
sys.stdin.read()  # until killed
"""


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_devices_connected_when_the_platform_was_killed_are_recorded_disconnected_at_its_start(
    tmp_path: Path, mqtt_broker: str
) -> None:
    data, key = tmp_path / "data", "ak_" + "k" * 40
    start = ManualClock().now()  # the child's clock
    script = CHILD.format(data=str(data), broker=mqtt_broker, key=key)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "connected"
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)
    finally:
        child.kill()
        child.wait()

    restarted_at = start + timedelta(hours=3)
    clock = ManualClock(restarted_at)
    with Platform(data, clock=clock, broker=mqtt_broker, admin_key=key) as platform:
        device = platform.admin.get_device("kill-0001")
        assert not device.connected
        assert device.last_disconnected_at == restarted_at
        events = platform.admin.list_device_connections("kill-0001")
        assert [e.connected for e in events] == [True, False]
