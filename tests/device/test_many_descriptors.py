"""The SDK's MQTT connections work in a process with more than 1,024 descriptors open
(issue 18): paho's own loop ``select()``s, which takes no descriptor above 1,023, so a
hybrid worker stopped connecting devices at ~90 per process ("no answer")."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest
from iiot_device import Status

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from ..integration.mqtt import wait_for
from .sdk import start_device

HELD = 1100


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = HELD + 512
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the descriptor limit ({hard}) is below {needed}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(HELD)]
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_devices_connect_and_deliver_above_descriptor_1023(
    many_descriptors: None, platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    pt = platform.admin.create_provisioning_token("fds").provisioning_token
    with (
        start_device(platform, clock, pt, tmp_path / "a.db", device_id="fds-a") as a,
        start_device(platform, clock, pt, tmp_path / "b.db", device_id="fds-b") as b,
    ):
        assert wait_for(lambda: a.status is Status.CONNECTED and b.status is Status.CONNECTED)
        a.send_message(b"over epoll")
        b.send_message(b"over epoll too")
        assert a.wait_sent(20) and b.wait_sent(20)
    assert [m.payload for m in platform.admin.list_device_messages("fds-a")] == ["over epoll"]
