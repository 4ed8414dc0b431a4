"""The two device-facing brokers, for tests that hold on both (issue 14)."""

from __future__ import annotations

import pytest
from iiot_server.broker.mosquitto_process import mosquitto_available

MOSQUITTO_MISSING = mosquitto_available()

needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO_MISSING is not None, reason=f"mosquitto mode: {MOSQUITTO_MISSING}"
)

BOTH_BROKERS = ["amqtt", pytest.param("mosquitto", marks=needs_mosquitto)]
"""``@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)`` runs a test on the embedded
amqtt broker and on Mosquitto (skipped with a reason where mosquitto is not installed)."""
