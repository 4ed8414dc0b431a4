"""The Provisioning Operation state machine (pure).

``pending → approved → completed``; ``cancelled`` by a technician (pending or approved), by
expiry, or when another operation with the same Device ID is approved. Completing an
approved operation yields a Registration Token; completing it again re-issues one (and
invalidates the earlier) until the operation expires.

Revoking or deleting a device closes every operation for its Device ID that could still
yield a token (pending, approved, or completed and not yet expired): they become
``cancelled`` with reason ``device_revoked`` / ``device_deleted``, so completing one again
answers 410 instead of handing the device a fresh token (issue 10, item 3). Revocation is
one switch; the device must provision again, through a technician.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from .device_id import validate_device_id
from .errors import (
    InvalidTransition,
    ProvisioningOperationCancelled,
    ProvisioningOperationExpired,
    ValidationError,
)
from .tokens import ProvisioningTokenOptions, resolve_registration_token_lifetime

DEFAULT_OPERATION_LIFETIME: float = 15 * 60.0
"""Seconds an operation stays open for approval and completion."""

MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_LENGTH = 256


class OperationState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class CancelReason(StrEnum):
    TECHNICIAN = "technician"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"  # another operation with the same Device ID was approved
    DEVICE_REVOKED = "device_revoked"  # an admin revoked the device: no token from it again
    DEVICE_DELETED = "device_deleted"  # an admin deleted the device


CLOSED_BY_DEVICE_END = (OperationState.PENDING, OperationState.APPROVED, OperationState.COMPLETED)
"""States of an unexpired operation that revoking or deleting its device cancels: each can
still yield a Registration Token (completed ones re-issue until expiry)."""


@dataclass(frozen=True)
class ProvisioningOperation:
    """One device's request to be provisioned, as the technician and the device see it."""

    id: str
    provisioning_token_id: str
    verification_code: str
    created_at: datetime
    expires_at: datetime
    device_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    state: OperationState = OperationState.PENDING
    approved_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: CancelReason | None = None
    registration_token_lifetime: float | None = None  # resolved at approval; None = infinite

    @property
    def is_open(self) -> bool:
        """Pending or approved (not yet closed by completion or cancellation)."""
        return self.state in (OperationState.PENDING, OperationState.APPROVED)

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def validate_attributes(attributes: object) -> dict[str, str]:
    """Attributes a device shows the technician: a small string-to-string map."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise ValidationError("attributes must be an object", field="attributes")
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValidationError(f"at most {MAX_ATTRIBUTES} attributes", field="attributes")
    for key, value in attributes.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError("attribute names and values must be strings", field="attributes")
        if len(key) > MAX_ATTRIBUTE_LENGTH or len(value) > MAX_ATTRIBUTE_LENGTH:
            raise ValidationError(
                f"attribute names and values are at most {MAX_ATTRIBUTE_LENGTH} characters",
                field=f"attributes.{key[:40]}",
            )
    return dict(attributes)


def resolve_device_id_at_init(
    options: ProvisioningTokenOptions, requested: str | None
) -> str | None:
    """The operation's Device ID when a device initiates it (None: the technician decides)."""
    mode = options.device_id_override
    if requested is not None:
        if not mode.device_may_choose:
            raise ValidationError(
                f"this Provisioning Token (deviceIdOverride {mode.value}) does not let the "
                "device choose its Device ID",
                field="deviceId",
            )
        return validate_device_id(requested)
    if mode.device_must_choose:
        raise ValidationError(
            "this Provisioning Token requires the device to give its Device ID", field="deviceId"
        )
    return options.device_id


def resolve_device_id_at_approval(
    options: ProvisioningTokenOptions, current: str | None, requested: str | None
) -> str:
    """The Device ID an approval settles on."""
    mode = options.device_id_override
    if requested is not None:
        if not mode.technician_may_choose:
            raise ValidationError(
                f"this Provisioning Token (deviceIdOverride {mode.value}) does not let the "
                "technician choose the Device ID",
                field="deviceId",
            )
        return validate_device_id(requested)
    if mode.technician_must_choose or current is None:
        raise ValidationError(
            "this Provisioning Token requires the technician to give the Device ID",
            field="deviceId",
        )
    return current


def initiate_operation(
    options: ProvisioningTokenOptions,
    *,
    operation_id: str,
    provisioning_token_id: str,
    verification_code: str,
    now: datetime,
    device_id: str | None = None,
    attributes: object = None,
    lifetime: float = DEFAULT_OPERATION_LIFETIME,
) -> ProvisioningOperation:
    """A new pending operation, with its Device ID resolved by the token's mode."""
    return ProvisioningOperation(
        id=operation_id,
        provisioning_token_id=provisioning_token_id,
        verification_code=verification_code,
        created_at=now,
        expires_at=now + timedelta(seconds=lifetime),
        device_id=resolve_device_id_at_init(options, device_id),
        attributes=validate_attributes(attributes),
    )


def effective(operation: ProvisioningOperation, now: datetime) -> ProvisioningOperation:
    """The operation as it stands at ``now``: an open one past its expiry is cancelled."""
    if operation.is_open and operation.expired(now):
        return dataclasses.replace(
            operation,
            state=OperationState.CANCELLED,
            cancelled_at=operation.expires_at,
            cancel_reason=CancelReason.EXPIRED,
        )
    return operation


def approve(
    operation: ProvisioningOperation,
    options: ProvisioningTokenOptions,
    now: datetime,
    *,
    device_id: str | None = None,
    registration_token_lifetime: float | None = None,
    infinite_lifetime: bool = False,
) -> ProvisioningOperation:
    """Approve a pending operation, settling its Device ID and token lifetime."""
    operation = effective(operation, now)
    _require(operation, "approve", OperationState.PENDING)
    resolved_id = resolve_device_id_at_approval(options, operation.device_id, device_id)
    lifetime = resolve_registration_token_lifetime(
        options, registration_token_lifetime, infinite_requested=infinite_lifetime
    )
    return dataclasses.replace(
        operation,
        state=OperationState.APPROVED,
        approved_at=now,
        device_id=resolved_id,
        registration_token_lifetime=lifetime,
    )


def cancel(
    operation: ProvisioningOperation,
    now: datetime,
    reason: CancelReason = CancelReason.TECHNICIAN,
) -> ProvisioningOperation:
    """Cancel a pending or approved operation."""
    operation = effective(operation, now)
    _require(operation, "cancel", OperationState.PENDING, OperationState.APPROVED)
    return dataclasses.replace(
        operation, state=OperationState.CANCELLED, cancelled_at=now, cancel_reason=reason
    )


def superseded_by(
    approved: ProvisioningOperation, others: list[ProvisioningOperation], now: datetime
) -> list[ProvisioningOperation]:
    """The other open operations for the same Device ID, cancelled because ``approved`` was."""
    return [
        cancel(other, now, CancelReason.SUPERSEDED)
        for other in others
        if other.id != approved.id
        and other.device_id == approved.device_id
        and effective(other, now).is_open
    ]


def complete(operation: ProvisioningOperation, now: datetime) -> ProvisioningOperation | None:
    """Complete an approved operation (again, for a completed one): the caller then issues
    a Registration Token. Returns None while still pending (the device polls again)."""
    operation = effective(operation, now)
    if operation.state is OperationState.PENDING:
        return None
    if operation.state is OperationState.CANCELLED:
        if operation.cancel_reason is CancelReason.EXPIRED:
            raise ProvisioningOperationExpired(
                "the Provisioning Operation expired before it was completed",
                field="provisioningOperationId",
            )
        raise ProvisioningOperationCancelled(
            f"the Provisioning Operation was cancelled ({operation.cancel_reason})",
            field="provisioningOperationId",
        )
    if operation.expired(now):  # completed, and its window to re-issue has closed
        raise ProvisioningOperationExpired(
            "the Provisioning Operation has expired", field="provisioningOperationId"
        )
    return dataclasses.replace(operation, state=OperationState.COMPLETED, completed_at=now)


def _require(operation: ProvisioningOperation, action: str, *states: OperationState) -> None:
    if operation.state not in states:
        allowed = " or ".join(s.value for s in states)
        reason = f" ({operation.cancel_reason})" if operation.cancel_reason else ""
        raise InvalidTransition(
            f"cannot {action} a {operation.state.value}{reason} operation; it must be {allowed}",
            field="provisioningOperationId",
        )
