"""Every Provisioning Token option combination: 3 × 2 × 2 × 6, with and without a default
Device ID (144 cases), each either accepted and able to yield a valid operation, or refused
with an error naming the fields."""

import itertools
from datetime import UTC, datetime

import pytest
from iiot_server.domain import operations
from iiot_server.domain.errors import ValidationError
from iiot_server.domain.tokens import (
    DEFAULT_REGISTRATION_TOKEN_LIFETIME,
    DeviceIdOverrideMode,
    LifetimeOverrideMode,
    ProvisioningTokenOptions,
    TokenStatus,
    refresh_due_at,
    registration_token_status,
    resolve_registration_token_lifetime,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
COMBINATIONS = list(
    itertools.product(
        LifetimeOverrideMode,
        [None, 86400.0],  # max lifetime
        [False, True],  # allow infinite
        DeviceIdOverrideMode,
        [None, "factory-default-01"],  # default Device ID
    )
)


def expected_refusal(
    max_lifetime: float | None, infinite: bool, mode: DeviceIdOverrideMode, default: str | None
) -> set[str] | None:
    """The fields an invalid combination must name (None: the combination is valid)."""
    if max_lifetime is not None and infinite:
        return {"allowInfiniteLifetime", "maxRegistrationTokenLifetime"}
    enforced = mode in (
        DeviceIdOverrideMode.ENFORCED_AT_INIT,
        DeviceIdOverrideMode.ENFORCED_AT_APPROVAL,
    )
    if enforced == (default is not None):
        return {"deviceId", "deviceIdOverride"}
    return None


def test_there_are_144_combinations() -> None:
    assert len(COMBINATIONS) == 3 * 2 * 2 * 6 * 2


@pytest.mark.parametrize(
    ("lifetime_mode", "max_lifetime", "infinite", "id_mode", "default"), COMBINATIONS
)
def test_option_combination(
    lifetime_mode: LifetimeOverrideMode,
    max_lifetime: float | None,
    infinite: bool,
    id_mode: DeviceIdOverrideMode,
    default: str | None,
) -> None:
    refusal = expected_refusal(max_lifetime, infinite, id_mode, default)
    build = lambda: ProvisioningTokenOptions.validated(  # noqa: E731
        max_registration_token_lifetime=max_lifetime,
        registration_token_lifetime_override=lifetime_mode,
        allow_infinite_lifetime=infinite,
        device_id=default,
        device_id_override=id_mode,
    )
    if refusal is not None:
        with pytest.raises(ValidationError) as err:
            build()
        assert set((err.value.field or "").split(",")) == refusal
        return
    options = build()
    # A valid combination yields a valid completed operation along the path its modes allow.
    device_id = "device-from-init" if id_mode.device_must_choose else None
    op = operations.initiate_operation(
        options,
        operation_id="op-1",
        provisioning_token_id="pt-1",
        verification_code="BCDF-GHJK",
        now=NOW,
        device_id=device_id,
    )
    approve_id = "device-from-tech" if id_mode.technician_must_choose else None
    lifetime = 3600.0 if lifetime_mode is LifetimeOverrideMode.ENFORCED else None
    approved = operations.approve(
        op, options, NOW, device_id=approve_id, registration_token_lifetime=lifetime
    )
    assert approved.device_id in {default, "device-from-init", "device-from-tech"}
    assert approved.device_id is not None
    completed = operations.complete(approved, NOW)
    assert completed is not None
    assert completed.state is operations.OperationState.COMPLETED
    expected_lifetime = (
        lifetime
        if lifetime is not None
        else max_lifetime
        if max_lifetime is not None
        else None
        if infinite
        else DEFAULT_REGISTRATION_TOKEN_LIFETIME
    )
    assert approved.registration_token_lifetime == expected_lifetime


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("maxRegistrationTokenLifetime", {"max_registration_token_lifetime": 0}),
        ("maxRegistrationTokenLifetime", {"max_registration_token_lifetime": float("nan")}),
        (
            "registrationTokenLifetimeOverride",
            {"registration_token_lifetime_override": "sometimes"},
        ),
        ("deviceIdOverride", {"device_id_override": "whenever"}),
        ("deviceId", {"device_id": "no"}),
        ("deviceId", {"device_id": "bad id with spaces"}),
    ],
)
def test_bad_option_values_name_their_field(field: str, kwargs: dict[str, object]) -> None:
    kwargs.setdefault("device_id", "default-device")
    with pytest.raises(ValidationError) as err:
        ProvisioningTokenOptions.validated(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def allowed(**kw: object) -> ProvisioningTokenOptions:
    return ProvisioningTokenOptions.validated(
        device_id="pump-0001",
        registration_token_lifetime_override="allowed",
        **kw,  # type: ignore[arg-type]
    )


def test_lifetime_override_within_max() -> None:
    opts = allowed(max_registration_token_lifetime=7200)
    assert resolve_registration_token_lifetime(opts, 60) == 60.0
    assert resolve_registration_token_lifetime(opts) == 7200.0
    with pytest.raises(ValidationError, match="exceeds") as err:
        resolve_registration_token_lifetime(opts, 7201)
    assert err.value.field == "registrationTokenLifetime"


def test_infinite_only_when_allowed() -> None:
    with pytest.raises(ValidationError, match="infinite"):
        resolve_registration_token_lifetime(allowed(), infinite_requested=True)
    assert (
        resolve_registration_token_lifetime(
            allowed(allow_infinite_lifetime=True), infinite_requested=True
        )
        is None
    )


def test_disabled_override_refuses_a_lifetime() -> None:
    opts = ProvisioningTokenOptions.validated(device_id="pump-0001")
    with pytest.raises(ValidationError, match="does not allow overriding"):
        resolve_registration_token_lifetime(opts, 60)


def test_refresh_point_is_half_lifetime() -> None:
    end = datetime(2026, 1, 3, tzinfo=UTC)
    assert refresh_due_at(NOW, end) == datetime(2026, 1, 2, tzinfo=UTC)
    assert refresh_due_at(NOW, None) is None
    with pytest.raises(ValidationError):
        refresh_due_at(NOW, end, 0)


def test_token_status_order() -> None:
    from datetime import timedelta

    later = NOW + timedelta(hours=1)
    assert registration_token_status(NOW, expires_at=later) is TokenStatus.VALID
    assert registration_token_status(later, expires_at=later) is TokenStatus.EXPIRED
    assert registration_token_status(NOW, expires_at=None, revoked_at=NOW) is TokenStatus.REVOKED
    assert (
        registration_token_status(NOW, expires_at=None, superseded_at=NOW, grace_period=10)
        is TokenStatus.GRACE
    )
    assert (
        registration_token_status(
            NOW + timedelta(seconds=10), expires_at=None, superseded_at=NOW, grace_period=10
        )
        is TokenStatus.SUPERSEDED
    )
