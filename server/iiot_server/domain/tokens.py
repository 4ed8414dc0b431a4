"""Provisioning Token options and Registration Token lifetime rules (pure).

The same functions decide for the HTTP API, the broker and the simulator, so simulation
and platform cannot disagree.

Rules (the contract, see ``docs/tokens.md``):

* Device ID override mode — every path through a mode must yield a Device ID:

  - ``disabled`` and the ``allowed_*`` modes need a default Device ID on the token (when
    nobody overrides, the default is the Device ID);
  - the ``enforced_*`` modes refuse a default Device ID (it could never be used).

* Registration Token lifetime — with no override, a token lives
  ``max_registration_token_lifetime`` if set, else forever if ``allow_infinite_lifetime``,
  else :data:`DEFAULT_REGISTRATION_TOKEN_LIFETIME`. Override ``disabled`` refuses a
  technician's lifetime, ``allowed`` accepts one (up to the max; infinite only if allowed),
  ``enforced`` requires one. A maximum lifetime and allowing infinite lifetime contradict
  each other and are refused together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from .device_id import validate_device_id
from .errors import ValidationError

DEFAULT_REGISTRATION_TOKEN_LIFETIME: float = 30 * 86400.0
"""Lifetime (seconds) when the token sets no maximum and does not allow infinite tokens."""

DEFAULT_REFRESH_GRACE_PERIOD: float = 300.0
"""Seconds a refreshed (parent) Registration Token keeps working, so a lost refresh
response does not strand the device."""

DEFAULT_REFRESH_FRACTION: float = 0.5
"""The SDK refreshes its Registration Token at this fraction of the token's lifetime."""

MIN_REGISTRATION_TOKEN_LIFETIME: float = 1.0

_E = TypeVar("_E", bound=StrEnum)


class LifetimeOverrideMode(StrEnum):
    """Whether a technician may (or must) choose the Registration Token lifetime at approval."""

    DISABLED = "disabled"
    ALLOWED = "allowed"
    ENFORCED = "enforced"


class DeviceIdOverrideMode(StrEnum):
    """Who may (or must) choose the Device ID: the device at init, the technician at approval."""

    DISABLED = "disabled"
    ALLOWED_AT_INIT = "allowed_at_init"
    ENFORCED_AT_INIT = "enforced_at_init"
    ALLOWED_AT_APPROVAL = "allowed_at_approval"
    ENFORCED_AT_APPROVAL = "enforced_at_approval"
    ALLOWED_AT_INIT_AND_APPROVAL = "allowed_at_init_and_approval"

    @property
    def device_may_choose(self) -> bool:
        return self in _DEVICE_CHOOSES

    @property
    def device_must_choose(self) -> bool:
        return self is DeviceIdOverrideMode.ENFORCED_AT_INIT

    @property
    def technician_may_choose(self) -> bool:
        return self in _TECHNICIAN_CHOOSES

    @property
    def technician_must_choose(self) -> bool:
        return self is DeviceIdOverrideMode.ENFORCED_AT_APPROVAL

    @property
    def enforced(self) -> bool:
        return self.device_must_choose or self.technician_must_choose


_DEVICE_CHOOSES = frozenset(
    {
        DeviceIdOverrideMode.ALLOWED_AT_INIT,
        DeviceIdOverrideMode.ENFORCED_AT_INIT,
        DeviceIdOverrideMode.ALLOWED_AT_INIT_AND_APPROVAL,
    }
)
_TECHNICIAN_CHOOSES = frozenset(
    {
        DeviceIdOverrideMode.ALLOWED_AT_APPROVAL,
        DeviceIdOverrideMode.ENFORCED_AT_APPROVAL,
        DeviceIdOverrideMode.ALLOWED_AT_INIT_AND_APPROVAL,
    }
)


@dataclass(frozen=True)
class ProvisioningTokenOptions:
    """What a Provisioning Token lets its operations do. Build with :meth:`validated`.

    >>> ProvisioningTokenOptions.validated(device_id="pump-0001").device_id_override
    <DeviceIdOverrideMode.DISABLED: 'disabled'>
    """

    max_registration_token_lifetime: float | None = None
    registration_token_lifetime_override: LifetimeOverrideMode = LifetimeOverrideMode.DISABLED
    allow_infinite_lifetime: bool = False
    device_id: str | None = None
    device_id_override: DeviceIdOverrideMode = DeviceIdOverrideMode.DISABLED

    @classmethod
    def validated(
        cls,
        *,
        max_registration_token_lifetime: float | None = None,
        registration_token_lifetime_override: LifetimeOverrideMode | str = "disabled",
        allow_infinite_lifetime: bool = False,
        device_id: str | None = None,
        device_id_override: DeviceIdOverrideMode | str = "disabled",
    ) -> ProvisioningTokenOptions:
        """Build options, refusing any combination that cannot yield a valid operation."""
        options = cls(
            max_registration_token_lifetime=max_registration_token_lifetime,
            registration_token_lifetime_override=_enum(
                LifetimeOverrideMode,
                registration_token_lifetime_override,
                "registrationTokenLifetimeOverride",
            ),
            allow_infinite_lifetime=allow_infinite_lifetime,
            device_id=device_id,
            device_id_override=_enum(DeviceIdOverrideMode, device_id_override, "deviceIdOverride"),
        )
        options.validate()
        return options

    def validate(self) -> None:
        """Raise :class:`ValidationError` naming the fields of an impossible combination."""
        max_lifetime = self.max_registration_token_lifetime
        if max_lifetime is not None and not max_lifetime >= MIN_REGISTRATION_TOKEN_LIFETIME:
            raise ValidationError(
                f"maxRegistrationTokenLifetime must be at least "
                f"{MIN_REGISTRATION_TOKEN_LIFETIME:g} s, got {max_lifetime}",
                field="maxRegistrationTokenLifetime",
            )
        if max_lifetime is not None and self.allow_infinite_lifetime:
            raise ValidationError(
                "allowInfiniteLifetime contradicts maxRegistrationTokenLifetime: "
                "set one or the other",
                field="allowInfiniteLifetime,maxRegistrationTokenLifetime",
            )
        if self.device_id is not None:
            validate_device_id(self.device_id)
        mode = self.device_id_override
        if mode.enforced and self.device_id is not None:
            raise ValidationError(
                f"deviceIdOverride {mode.value} never uses a default Device ID: "
                "remove deviceId or choose another mode",
                field="deviceId,deviceIdOverride",
            )
        if not mode.enforced and self.device_id is None:
            raise ValidationError(
                f"deviceIdOverride {mode.value} needs a default deviceId: when nobody "
                "overrides it the operation would have no Device ID",
                field="deviceId,deviceIdOverride",
            )

    @property
    def default_lifetime(self) -> float | None:
        """Lifetime (seconds, None = infinite) when the technician sets none."""
        if self.max_registration_token_lifetime is not None:
            return self.max_registration_token_lifetime
        if self.allow_infinite_lifetime:
            return None
        return DEFAULT_REGISTRATION_TOKEN_LIFETIME


def _enum(kind: type[_E], value: _E | str, field: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ValidationError(
            f"{field} must be one of {allowed}, got {value!r}", field=field
        ) from None


def resolve_registration_token_lifetime(
    options: ProvisioningTokenOptions,
    requested: float | None = None,
    *,
    infinite_requested: bool = False,
) -> float | None:
    """The lifetime (seconds; None = infinite) of tokens an approval with these inputs yields.

    >>> opts = ProvisioningTokenOptions.validated(
    ...     device_id="pump-0001", max_registration_token_lifetime=86400,
    ...     registration_token_lifetime_override="allowed")
    >>> resolve_registration_token_lifetime(opts, 3600)
    3600.0
    """
    field = "registrationTokenLifetime"
    mode = options.registration_token_lifetime_override
    chosen = requested is not None or infinite_requested
    if requested is not None and infinite_requested:
        raise ValidationError("give a lifetime or ask for an infinite one, not both", field=field)
    if chosen and mode is LifetimeOverrideMode.DISABLED:
        raise ValidationError(
            "this Provisioning Token does not allow overriding the lifetime", field=field
        )
    if not chosen and mode is LifetimeOverrideMode.ENFORCED:
        raise ValidationError(
            "this Provisioning Token requires the technician to set the lifetime", field=field
        )
    if infinite_requested:
        if not options.allow_infinite_lifetime:
            raise ValidationError(
                "this Provisioning Token does not allow infinite lifetime", field=field
            )
        return None
    if requested is None:
        return options.default_lifetime
    lifetime = float(requested)
    if not lifetime >= MIN_REGISTRATION_TOKEN_LIFETIME:
        raise ValidationError(
            f"lifetime must be at least {MIN_REGISTRATION_TOKEN_LIFETIME:g} s, got {requested}",
            field=field,
        )
    maximum = options.max_registration_token_lifetime
    if maximum is not None and lifetime > maximum:
        raise ValidationError(
            f"lifetime {lifetime:g} s exceeds this token's maximum of {maximum:g} s", field=field
        )
    return lifetime


def expires_at(issued_at: datetime, lifetime: float | None) -> datetime | None:
    """When a token issued at ``issued_at`` with ``lifetime`` seconds expires (None = never)."""
    return None if lifetime is None else issued_at + timedelta(seconds=lifetime)


def refresh_due_at(
    issued_at: datetime, expires_at: datetime | None, fraction: float = DEFAULT_REFRESH_FRACTION
) -> datetime | None:
    """When a holder should refresh a token (``fraction`` of its lifetime); None = never."""
    if not 0.0 < fraction <= 1.0:
        raise ValidationError(
            f"refresh fraction must be in (0, 1], got {fraction}", field="fraction"
        )
    if expires_at is None:
        return None
    return issued_at + (expires_at - issued_at) * fraction


class TokenStatus(StrEnum):
    """What a Registration Token is good for at a given time."""

    VALID = "valid"
    GRACE = "grace"  # superseded by a refresh, still accepted until the grace period ends
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    REVOKED = "revoked"

    @property
    def usable(self) -> bool:
        return self in (TokenStatus.VALID, TokenStatus.GRACE)


def registration_token_status(
    now: datetime,
    *,
    expires_at: datetime | None,
    revoked_at: datetime | None = None,
    superseded_at: datetime | None = None,
    grace_period: float = DEFAULT_REFRESH_GRACE_PERIOD,
) -> TokenStatus:
    """The status of a Registration Token at ``now``: revocation wins, then expiry, then
    supersession (with its grace period)."""
    if revoked_at is not None and revoked_at <= now:
        return TokenStatus.REVOKED
    if expires_at is not None and now >= expires_at:
        return TokenStatus.EXPIRED
    if superseded_at is not None:
        if now < superseded_at + timedelta(seconds=grace_period):
            return TokenStatus.GRACE
        return TokenStatus.SUPERSEDED
    return TokenStatus.VALID


def usable_until(
    *,
    expires_at: datetime | None,
    revoked_at: datetime | None = None,
    superseded_at: datetime | None = None,
    grace_period: float = DEFAULT_REFRESH_GRACE_PERIOD,
) -> datetime | None:
    """The first instant the token stops being usable (None = not foreseeable)."""
    ends = [t for t in (expires_at, revoked_at) if t is not None]
    if superseded_at is not None:
        ends.append(superseded_at + timedelta(seconds=grace_period))
    return min(ends, default=None)
