"""Leak detection in Mosquitto mode (``docs/leak_detection.md``): mosquitto does the
takeover itself, and the platform reads both peers from its connection log. One database
(the rule's storage is tested on both in ``test_leak_detection.py``)."""

from __future__ import annotations

import pytest

from iiotsim.platform import Platform

from .brokers import needs_mosquitto
from .mqtt import Device, provision, wait_for
from .test_leak_detection import connect_from, kinds, take_over


@needs_mosquitto
@pytest.mark.parametrize("mqtt_broker", ["mosquitto"])
def test_mosquitto_mode_reads_the_peers_from_its_connection_log(
    platform: Platform, devices: list[Device]
) -> None:
    """Mosquitto does the takeover itself; its connection log lines name the peers (which
    token a password belongs to is its own: ``medium``, the same token not known)."""
    pump = provision(platform, "pump-0001")
    connect_from(platform, pump, "127.0.0.1", devices)
    take_over(platform, pump, "127.0.0.2", devices)
    assert wait_for(lambda: platform.admin.alerts(kind="shared_credential") != [])
    [alert] = platform.admin.alerts(kind="shared_credential")
    assert (alert.severity, alert.device_id) == ("medium", "pump-0001")
    assert alert.evidence["previous"]["address"] == "127.0.0.1"
    assert alert.evidence["newcomer"]["address"] == "127.0.0.2"
    assert alert.evidence["sameRegistrationToken"] is None
    take_over(platform, pump, "127.0.0.2", devices)
    take_over(platform, pump, "127.0.0.2", devices)
    assert wait_for(lambda: "connection_flapping" in kinds(platform))
