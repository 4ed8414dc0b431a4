"""The SDK's HTTP calls against the real platform: every refusal becomes the SDK
exception its one problem-to-exception table names (``iiot_device.api.REFUSALS``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from iiot_device import (
    DeviceError,
    DeviceIdRefused,
    PlatformError,
    ProvisioningOperationCancelled,
    ProvisioningTokenRefused,
    RegistrationTokenInvalid,
)
from iiot_device.api import DeviceApi, IssuedToken

from iiotsim.platform import Platform

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

FORGED_PT = "pt_forged"
FORGED_RT = "rt_forged"


@pytest.fixture
def api(platform: Platform) -> Iterator[DeviceApi]:
    client = DeviceApi(platform.http_url)
    yield client
    client.close()


@pytest.fixture
def pt(platform: Platform) -> str:
    return platform.admin.create_provisioning_token(
        "api", max_registration_token_lifetime=7200
    ).provisioning_token


def provision(platform: Platform, api: DeviceApi, pt: str, device_id: str) -> IssuedToken:
    op = api.init(pt, device_id, None)
    platform.admin.approve_operation(op.verification_code)
    issued = api.complete(pt, op.id)
    assert isinstance(issued, IssuedToken)
    return issued


CALLS: dict[str, tuple[Callable[[DeviceApi], object], type[DeviceError]]] = {
    # calls a Provisioning Token authenticates: a 401 is a refused PT
    "init": (lambda a: a.init(FORGED_PT, None, None), ProvisioningTokenRefused),
    "operation_state": (lambda a: a.operation_state(FORGED_PT, "x"), ProvisioningTokenRefused),
    "complete": (lambda a: a.complete(FORGED_PT, "x"), ProvisioningTokenRefused),
    "refresh": (lambda a: a.refresh(FORGED_PT, FORGED_RT), ProvisioningTokenRefused),
    # calls a Registration Token authenticates: a 401 is an invalid RT
    "register": (lambda a: a.register(FORGED_RT), RegistrationTokenInvalid),
    "upload": (lambda a: a.upload(FORGED_RT, "default", "m1", b"x"), RegistrationTokenInvalid),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_forged_credential_is_named_by_every_call(api: DeviceApi, call: str) -> None:
    invoke, expected = CALLS[call]
    with pytest.raises(expected, match="Token"):
        invoke(api)


def test_refreshing_a_revoked_registration_token(
    platform: Platform, api: DeviceApi, pt: str
) -> None:
    issued = provision(platform, api, pt, "api-0001")
    platform.admin.revoke_device("api-0001")
    with pytest.raises(RegistrationTokenInvalid, match="revoked"):
        api.refresh(pt, issued.registration_token)
    with pytest.raises(RegistrationTokenInvalid):
        api.register(issued.registration_token)


def test_a_refused_device_id_is_named(api: DeviceApi, pt: str) -> None:
    with pytest.raises(DeviceIdRefused, match="'no'"):
        api.init(pt, "no", None)  # shorter than 4 characters


def test_a_cancelled_operation(platform: Platform, api: DeviceApi, pt: str) -> None:
    op = api.init(pt, "api-0002", None)
    platform.admin.cancel_operation(op.verification_code)
    with pytest.raises(ProvisioningOperationCancelled, match="cancelled"):
        api.complete(pt, op.id)


def test_other_refusals_carry_the_problem(platform: Platform, api: DeviceApi, pt: str) -> None:
    issued = provision(platform, api, pt, "api-0003")
    with pytest.raises(PlatformError) as refused:
        api.upload(issued.registration_token, "no spaces allowed", "m1", b"x")
    assert refused.value.status == 400
    assert refused.value.problem_type == "/problems/validation"
    assert refused.value.field == "stream"
