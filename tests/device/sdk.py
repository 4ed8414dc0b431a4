"""Helpers for driving real SDK clients against the real embedded platform."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iiot_device import Backoff, DeviceClient, ProvisioningOperation

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

WAIT = 20.0  # real seconds: bound on network events on a loaded machine


def run_clock_until(
    clock: ManualClock, condition: Callable[[], bool], step: float = 0.5, timeout: float = WAIT
) -> bool:
    """Let clock time pass in small steps (back-off and poll waits run out) until
    ``condition`` holds; bounded in real time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        clock.advance(step)
        time.sleep(0.005)
    return condition()


class Approver:
    """An ``on_provisioning_operation`` callback that approves through the admin API, as
    a technician would, and records what the device showed."""

    def __init__(self, platform: Platform, approve: bool = True) -> None:
        self.platform = platform
        self.approve = approve
        self.shown: list[ProvisioningOperation] = []
        self.event = threading.Event()

    def __call__(self, op: ProvisioningOperation) -> None:
        self.shown.append(op)
        self.event.set()
        if self.approve:
            self.platform.admin.approve_operation(op.verification_code)


def start_device(
    platform: Platform,
    clock: ManualClock,
    pt: str,
    db: Path,
    approver: Approver | None = None,
    **options: Any,
) -> DeviceClient:
    options.setdefault("backoff", Backoff(base=0.5, cap=2.0))
    return DeviceClient.start(
        pt,
        db,
        server_url=platform.http_url,
        clock=clock,
        on_provisioning_operation=approver or Approver(platform),
        **options,
    )
