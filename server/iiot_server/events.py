"""In-process publish/subscribe between the platform's parts.

The HTTP layer changes state; the broker layer must react (end a revoked device's MQTT
session, push a desired-properties patch). Events decouple the two: services publish,
the broker subscribes. Callbacks run on the server's event loop and must not block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class RegistrationEnded(StrEnum):
    """Why a device's registration (and any MQTT session bound to it) ended."""

    REVOKED = "revoked"
    DELETED = "deleted"
    REPROVISIONED = "reprovisioned"


class PlatformEvents:
    """Named events with any number of listeners.

    >>> events = PlatformEvents()
    >>> events.subscribe("registration_ended", lambda device_id, reason: print(device_id))
    >>> events.publish("registration_ended", "pump-0001", RegistrationEnded.REVOKED)
    pump-0001
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[..., Any]]] = {}

    def subscribe(self, name: str, listener: Callable[..., Any]) -> None:
        self._listeners.setdefault(name, []).append(listener)

    def unsubscribe(self, name: str, listener: Callable[..., Any]) -> None:
        if listener in self._listeners.get(name, []):
            self._listeners[name].remove(listener)

    def publish(self, name: str, *args: Any) -> None:
        """Call every listener; a failing listener is logged and never stops the others."""
        for listener in list(self._listeners.get(name, [])):
            try:
                listener(*args)
            except Exception:
                log.exception("listener %r of event %s failed", listener, name)
