"""Provisioning Operation transitions, including all three ways to be cancelled."""

from datetime import UTC, datetime, timedelta

import pytest
from iiot_server.domain import operations as ops
from iiot_server.domain.device_id import validate_device_id
from iiot_server.domain.errors import (
    InvalidTransition,
    ProvisioningOperationCancelled,
    ProvisioningOperationExpired,
    TooManyRequests,
    ValidationError,
)
from iiot_server.domain.tokens import ProvisioningTokenOptions
from iiot_server.domain.verification import (
    ALPHABET,
    RateLimiter,
    new_verification_code,
    normalize_verification_code,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
OPTS = ProvisioningTokenOptions.validated(
    device_id="default-01", device_id_override="allowed_at_init_and_approval"
)


def new_op(op_id: str = "op-1", device_id: str | None = None) -> ops.ProvisioningOperation:
    return ops.initiate_operation(
        OPTS,
        operation_id=op_id,
        provisioning_token_id="pt",
        verification_code="BCDF-GHJK",
        now=NOW,
        device_id=device_id,
        attributes={"serial": "SN-1"},
    )


def test_happy_path() -> None:
    op = new_op()
    assert op.state is ops.OperationState.PENDING
    assert ops.complete(op, NOW) is None  # still pending: device polls again
    approved = ops.approve(op, OPTS, NOW)
    assert approved.state is ops.OperationState.APPROVED
    done = ops.complete(approved, NOW)
    assert done is not None and done.state is ops.OperationState.COMPLETED
    again = ops.complete(done, NOW + timedelta(minutes=1))  # re-issue until expiry
    assert again is not None


def test_cancel_by_technician_pending_and_approved() -> None:
    for op in (new_op(), ops.approve(new_op(), OPTS, NOW)):
        cancelled = ops.cancel(op, NOW)
        assert cancelled.cancel_reason is ops.CancelReason.TECHNICIAN
        with pytest.raises(ProvisioningOperationCancelled):
            ops.complete(cancelled, NOW)


def test_cancel_by_expiry() -> None:
    op = new_op()
    later = op.expires_at
    assert ops.effective(op, later).cancel_reason is ops.CancelReason.EXPIRED
    with pytest.raises(ProvisioningOperationExpired):
        ops.complete(op, later)
    with pytest.raises(InvalidTransition):
        ops.approve(op, OPTS, later)
    approved = ops.approve(op, OPTS, NOW)
    with pytest.raises(ProvisioningOperationExpired):
        ops.complete(approved, later)


def test_cancel_by_approval_of_same_device_id() -> None:
    a, b, c = new_op("a", "dev-same"), new_op("b", "dev-same"), new_op("c", "dev-other")
    approved = ops.approve(a, OPTS, NOW)
    cancelled = ops.superseded_by(approved, [a, b, c], NOW)
    assert [op.id for op in cancelled] == ["b"]
    assert cancelled[0].cancel_reason is ops.CancelReason.SUPERSEDED


def test_illegal_transitions() -> None:
    done = ops.complete(ops.approve(new_op(), OPTS, NOW), NOW)
    assert done is not None
    with pytest.raises(InvalidTransition):
        ops.approve(done, OPTS, NOW)
    with pytest.raises(InvalidTransition):
        ops.cancel(done, NOW)
    cancelled = ops.cancel(new_op(), NOW)
    with pytest.raises(InvalidTransition):
        ops.cancel(cancelled, NOW)
    with pytest.raises(InvalidTransition):
        ops.approve(ops.approve(new_op(), OPTS, NOW), OPTS, NOW)


def test_device_id_modes_at_init_and_approval() -> None:
    disabled = ProvisioningTokenOptions.validated(device_id="default-01")
    with pytest.raises(ValidationError) as err:
        ops.resolve_device_id_at_init(disabled, "chosen-01")
    assert err.value.field == "deviceId"
    assert ops.resolve_device_id_at_init(disabled, None) == "default-01"
    enforced = ProvisioningTokenOptions.validated(device_id_override="enforced_at_approval")
    assert ops.resolve_device_id_at_init(enforced, None) is None
    with pytest.raises(ValidationError):
        ops.resolve_device_id_at_approval(enforced, None, None)
    assert ops.resolve_device_id_at_approval(enforced, None, "tech-01") == "tech-01"


def test_attributes_validated() -> None:
    with pytest.raises(ValidationError) as err:
        ops.validate_attributes({"a": 1})
    assert err.value.field == "attributes"
    with pytest.raises(ValidationError):
        ops.validate_attributes([1])


@pytest.mark.parametrize("value", ["abc", "x" * 91, "has space", "ümlaut1", "", "a/b/c/d"])
def test_bad_device_ids(value: str) -> None:
    with pytest.raises(ValidationError):
        validate_device_id(value)


@pytest.mark.parametrize("value", ["abcd", "x" * 90, "A-b_c.9"])
def test_good_device_ids(value: str) -> None:
    assert validate_device_id(value) == value


def test_verification_codes() -> None:
    code = new_verification_code()
    assert len(code) == 9 and code[4] == "-"
    assert all(ch in ALPHABET for ch in code.replace("-", ""))
    assert normalize_verification_code(code.lower().replace("-", " ")) == code.replace("-", "")
    with pytest.raises(ValidationError):
        normalize_verification_code("AAAA-AAAA")  # vowels are not in the alphabet


def test_lookup_rate_limit() -> None:
    limiter = RateLimiter(capacity=3, rate=1.0)
    for _ in range(3):
        limiter.check("k", NOW)
    with pytest.raises(TooManyRequests) as err:
        limiter.check("k", NOW)
    assert err.value.retry_after == pytest.approx(1.0)
    limiter.check("other", NOW)  # per key
    limiter.check("k", NOW + timedelta(seconds=1))  # refilled
