"""iiotsim device SDK: zero-touch provisioning, durable messaging, token refresh, twin.

>>> from iiot_device import DeviceClient
>>> # client = DeviceClient.start(pt, "device.db", server_url="http://127.0.0.1:8000")
"""

from .api import ProvisioningOperation
from .backoff import Backoff
from .client import CloudToDeviceMessage, DesiredProperties, DeviceClient, Status
from .clock import Clock, SystemClock
from .errors import (
    BrokerConnectionFailed,
    ClientClosed,
    DatabaseInUse,
    DeviceError,
    DeviceIdRefused,
    OutboxFull,
    PlatformError,
    ProvisioningOperationCancelled,
    ProvisioningOperationExpired,
    ProvisioningTokenRefused,
    RegistrationTokenInvalid,
)
from .store import Durability, OutboxLimits, OverflowPolicy

__all__ = [
    "Backoff",
    "BrokerConnectionFailed",
    "ClientClosed",
    "Clock",
    "CloudToDeviceMessage",
    "DatabaseInUse",
    "DesiredProperties",
    "DeviceClient",
    "DeviceError",
    "DeviceIdRefused",
    "Durability",
    "OutboxFull",
    "OutboxLimits",
    "OverflowPolicy",
    "PlatformError",
    "ProvisioningOperation",
    "ProvisioningOperationCancelled",
    "ProvisioningOperationExpired",
    "ProvisioningTokenRefused",
    "RegistrationTokenInvalid",
    "Status",
    "SystemClock",
]
