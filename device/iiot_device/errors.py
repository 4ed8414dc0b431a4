"""What the SDK raises: the whole tree, in this one module. Every error names what went
wrong; none is a bare traceback.

::

    DeviceError                         base of every SDK error
    ├── PlatformError                   a problem (RFC 9457) the SDK does not handle itself
    ├── ProvisioningTokenRefused        the PT is unknown, revoked, expired or paused
    ├── DeviceIdRefused                 the platform refused the requested Device ID
    ├── ProvisioningOperationCancelled  a technician (or a conflicting approval) cancelled it
    ├── ProvisioningOperationExpired    operations expired unapproved, as often as allowed
    ├── RegistrationTokenInvalid        the RT expired or was revoked: provision again
    ├── BrokerConnectionFailed          the MQTT broker refused or did not answer (retried)
    ├── OutboxFull                      the outbox is at its limit and refuses new messages
    ├── DatabaseInUse                   another process or client holds the database
    └── ClientClosed                    the client was closed

Which platform problem becomes which of these is one table, ``iiot_device.api.REFUSALS``.

>>> from iiot_device import DeviceError, PlatformError
>>> error = PlatformError(400, "/problems/validation", "must be 1-64 characters", "stream")
>>> isinstance(error, DeviceError), error.problem_type, error.field
(True, '/problems/validation', 'stream')
>>> str(error)
"platform refused the request: 400 /problems/validation (field 'stream'): must be 1-64 characters"
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base of every SDK error."""


class PlatformError(DeviceError):
    """The platform answered with a problem (RFC 9457) the SDK does not handle itself.

    ``problem_type`` is the problem's ``type`` (named as in ``iiotsim.PlatformError``).
    """

    def __init__(
        self,
        status: int,
        problem_type: str,
        detail: str | None = None,
        field: str | None = None,
    ) -> None:
        self.status = status
        self.problem_type = problem_type
        self.detail = detail
        self.field = field
        where = f" (field {field!r})" if field else ""
        super().__init__(
            f"platform refused the request: {status} {problem_type}{where}: {detail or ''}"
        )


class ProvisioningTokenRefused(DeviceError):
    """The Provisioning Token is unknown, revoked or expired, or paused (until an
    administrator resumes it): the device cannot provision now."""


class DeviceIdRefused(DeviceError):
    """The platform refused the requested Device ID."""


class ProvisioningOperationCancelled(DeviceError):
    """A technician (or a conflicting approval) cancelled the Provisioning Operation."""


class ProvisioningOperationExpired(DeviceError):
    """Provisioning Operations expired without approval, as many times as allowed."""


class RegistrationTokenInvalid(DeviceError):
    """The Registration Token expired or was revoked: the device must provision again."""


class BrokerConnectionFailed(DeviceError):
    """The MQTT broker refused the connection (or the twin subscription) or did not answer
    in time. The client retries with back-off; this is what ``client.last_error`` shows
    meanwhile."""


class OutboxFull(DeviceError):
    """The local outbox is at its limit and its policy is to refuse new messages."""


class DatabaseInUse(DeviceError):
    """Another process (or client) holds the device's local database."""


class ClientClosed(DeviceError):
    """The client was closed."""


__all__ = [
    "BrokerConnectionFailed",
    "ClientClosed",
    "DatabaseInUse",
    "DeviceError",
    "DeviceIdRefused",
    "OutboxFull",
    "PlatformError",
    "ProvisioningOperationCancelled",
    "ProvisioningOperationExpired",
    "ProvisioningTokenRefused",
    "RegistrationTokenInvalid",
]
