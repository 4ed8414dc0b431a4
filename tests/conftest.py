"""Shared fixtures: a real embedded platform on free loopback ports, driven by a
ManualClock so tests move through token lifetimes without sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .integration.mqtt import Device

START = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def mqtt_broker() -> str:
    """The device-facing broker of ``platform``: tests run on both with
    ``@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)`` (``tests/integration/brokers.py``)."""
    return "amqtt"


@pytest.fixture
def platform(clock: ManualClock, tmp_path: Path, mqtt_broker: str) -> Iterator[Platform]:
    """A running platform (HTTP API) with SQLite under ``tmp_path/data``."""
    with Platform(data_dir=tmp_path / "data", clock=clock, broker=mqtt_broker) as running:
        yield running


@pytest.fixture
def http(platform: Platform) -> Iterator[httpx.Client]:
    """A plain HTTP client for the device-facing API (no credentials)."""
    with httpx.Client(base_url=platform.http_url, timeout=30) as client:
        yield client


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    """MQTT connections a test opens (append them); all closed at the end."""
    opened: list[Device] = []
    yield opened
    for device in opened:
        device.close()
