"""The one exception hierarchy of the platform server.

Each error names its problem ``type`` slug (RFC 9457 style) and, where there is one, the
offending input ``field``; the HTTP layer maps the classes to status codes once
(``iiot_server.api.problems``), the broker layer to CONNACK/refusals::

    DomainError                          a rule refused the caller's input or state
    ├── ValidationError                  400
    │   └── SettingsError                (also a ValueError) a setting the server cannot run with
    ├── Unauthorized                     401
    │   ├── RegistrationTokenUnknown     401 (an RT the platform never issued)
    │   ├── RegistrationTokenExpired     401
    │   └── RegistrationTokenRevoked     401
    ├── Forbidden                        403
    │   └── ProvisioningTokenPaused      403 (a paused PT opens no operation until resumed)
    ├── NotFound                         404
    ├── Conflict                         409
    │   └── InvalidTransition            409
    ├── ProvisioningOperationCancelled   410
    ├── ProvisioningOperationExpired     410
    ├── TooManyRequests                  429 (with retry_after)
    ├── PacketTooLarge                   MQTT: the connection is closed
    └── BrokerUnavailable                503 (Mosquitto missing, or not carrying out a command)
"""

from __future__ import annotations


class DomainError(Exception):
    """A platform rule refused something. Never a bug: always the caller's input or state."""

    problem_type: str = "/problems/validation"
    title: str = "Request refused"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def __str__(self) -> str:
        return f"{self.detail} (field: {self.field})" if self.field else self.detail


class ValidationError(DomainError):
    """Input that breaks a rule (bad Device ID, impossible token options, ...)."""

    problem_type = "/problems/validation"
    title = "Invalid input"


class NotFound(DomainError):
    problem_type = "/problems/notFound"
    title = "Not found"


class Unauthorized(DomainError):
    """Missing, unknown, expired or revoked secret."""

    problem_type = "/problems/unauthorized"
    title = "Unauthorized"


class Forbidden(DomainError):
    """A valid secret that may not do this."""

    problem_type = "/problems/forbidden"
    title = "Forbidden"


class ProvisioningTokenPaused(Forbidden):
    """A paused Provisioning Token: it authenticates, but opens no new Provisioning
    Operation until an administrator resumes it. A 403, not a 401: the secret is valid and
    will be again, so a device backs off and retries rather than discarding it."""

    problem_type = "/problems/provisioningTokenPaused"
    title = "Provisioning Token is paused"


class Conflict(DomainError):
    problem_type = "/problems/conflict"
    title = "Conflict"


class InvalidTransition(Conflict):
    """A state machine was asked for a move its current state does not allow."""

    problem_type = "/problems/invalidTransition"
    title = "Invalid state transition"


class ProvisioningOperationCancelled(DomainError):
    problem_type = "/problems/deviceProvisioning/provisioningOperationCancelled"
    title = "Provisioning Operation was cancelled"


class ProvisioningOperationExpired(DomainError):
    problem_type = "/problems/deviceProvisioning/provisioningOperationExpired"
    title = "Provisioning Operation has expired"


class RegistrationTokenUnknown(Unauthorized):
    """An RT the platform does not know (never issued, or its device deleted). Like an
    expired or revoked one it is a 401: Spotflow's SDK provisions again on a 401 at
    register and only then (on a 403 it retried the dead token every 5 s forever)."""

    problem_type = "/problems/registrationTokenUnknown"
    title = "Unknown Registration Token"


class RegistrationTokenExpired(Unauthorized):
    problem_type = "/problems/registrationTokenExpired"
    title = "Registration Token has expired"


class RegistrationTokenRevoked(Unauthorized):
    problem_type = "/problems/registrationTokenRevoked"
    title = "Registration Token was revoked"


class TooManyRequests(DomainError):
    problem_type = "/problems/tooManyRequests"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: float, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.retry_after = retry_after


class SettingsError(ValidationError, ValueError):
    """A setting the platform cannot run with; the message names the setting (and its
    environment variable) so ``iiotsim serve`` can print it as it is. A ValueError too, so
    that msgspec reports it from ``Settings.__post_init__``."""

    title = "Invalid setting"


class PacketTooLarge(DomainError):
    """An MQTT packet announced more bytes than the broker reads: its connection is closed.

    Not an amqtt ``MQTTError``: amqtt's reader loop discards the packet and keeps reading
    after one of those, which would read the oversized body after all."""

    title = "MQTT packet too large"


class BrokerUnavailable(DomainError):
    """The device-facing broker the platform manages (Mosquitto) is not installed, or did
    not carry out a command (a device's client or password at register): retry later."""

    problem_type = "/problems/serviceUnavailable"
    title = "MQTT broker unavailable"
