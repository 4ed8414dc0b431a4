"""The device SDK takes cloud-to-device messages (issue 13): kept in its database before
the PUBACK, taken once each, in order, across a restart of the client."""

from __future__ import annotations

from pathlib import Path

import pytest
from iiot_device import CloudToDeviceMessage, Status
from iiot_device.store import LocalStore

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from ..integration.mqtt import WAIT, wait_for
from .sdk import start_device


@pytest.fixture
def pt(platform: Platform) -> str:
    return platform.admin.create_provisioning_token("c2d").provisioning_token


def states(platform: Platform, device_id: str) -> list[str]:
    return [m.state for m in platform.admin.list_cloud_to_device_messages(device_id)]


def test_the_sdk_receives_in_order_and_each_message_survives_until_taken(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    db = tmp_path / "d.db"
    with start_device(platform, clock, pt, db, device_id="sdk-c2d-1") as device:
        assert wait_for(lambda: device.status is Status.CONNECTED)
        assert device.receive_cloud_to_device() is None  # nothing yet, no wait
        first = platform.admin.send_to_device("sdk-c2d-1", "one", properties={"op": "set"})
        platform.admin.send_to_device("sdk-c2d-1", b"\x00two")
        assert wait_for(lambda: states(platform, "sdk-c2d-1") == ["delivered"] * 2)
        assert device.pending_cloud_to_device_count == 2
        taken = device.receive_cloud_to_device(timeout=WAIT)
        assert taken == CloudToDeviceMessage(first.message_id, {"op": "set"}, b"one")
    # acknowledged to the platform, not yet taken by the application: still in the database
    with start_device(platform, clock, pt, db, device_id="sdk-c2d-1") as again:
        second = again.receive_cloud_to_device()
        assert second is not None and second.payload == b"\x00two"
        assert again.receive_cloud_to_device() is None


def test_a_message_sent_again_is_taken_once(tmp_path: Path) -> None:
    """The platform sends a message again when its PUBACK was lost: same ``$.mid``."""
    store = LocalStore(tmp_path / "d.db")
    assert store.add_inbox("m1", {}, b"x")
    assert not store.add_inbox("m1", {}, b"x")  # still waiting
    assert store.take_inbox() == ("m1", {}, b"x")
    assert not store.add_inbox("m1", {}, b"x")  # already taken
    assert store.take_inbox() is None
    store.close()
