"""What the SDK raises. Every error names what went wrong; none is a bare traceback."""

from __future__ import annotations


class DeviceError(Exception):
    """Base of every SDK error."""


class PlatformError(DeviceError):
    """The platform answered with a problem (RFC 9457) the SDK does not handle itself."""

    def __init__(
        self, status: int, type_: str, detail: str | None = None, field: str | None = None
    ) -> None:
        self.status, self.type, self.detail, self.field = status, type_, detail, field
        where = f" (field {field!r})" if field else ""
        super().__init__(f"platform refused the request: {status} {type_}{where}: {detail or ''}")


class ProvisioningTokenRefused(DeviceError):
    """The Provisioning Token is unknown, revoked or expired: the device cannot provision."""


class DeviceIdRefused(DeviceError):
    """The platform refused the requested Device ID."""


class ProvisioningOperationCancelled(DeviceError):
    """A technician (or a conflicting approval) cancelled the Provisioning Operation."""


class ProvisioningOperationExpired(DeviceError):
    """Provisioning Operations expired without approval, as many times as allowed."""


class RegistrationTokenInvalid(DeviceError):
    """The Registration Token expired or was revoked: the device must provision again."""


class OutboxFull(DeviceError):
    """The local outbox is at its limit and its policy is to refuse new messages."""


class DatabaseInUse(DeviceError):
    """Another process (or client) holds the device's local database."""


class ClientClosed(DeviceError):
    """The client was closed."""
