"""Leak detection's rules (``iiot_server.domain.leaks``) on their own, and their settings:
the thresholds as ``docs/leak_detection.md`` states them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from iiot_server.domain.errors import SettingsError
from iiot_server.domain.leaks import (
    AlertKind,
    PresentedToken,
    ProvisioningHistory,
    ProvisioningThresholds,
    SessionSighting,
    Severity,
    shared_credential,
    token_replay,
)
from iiot_server.settings import Settings

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
DEFAULTS = ProvisioningThresholds()


def inits(history: ProvisioningHistory, count: int, start: datetime, every: float) -> list[str]:
    kinds = []
    for i in range(count):
        found = history.observe("pt", None, start + timedelta(seconds=i * every), DEFAULTS)
        kinds += [f.kind.value for f in found]
    return kinds


def test_a_new_token_may_open_the_floor_per_window_and_no_more() -> None:
    history = ProvisioningHistory()
    assert inits(history, 100, T0, 5.0) == []  # 100 in 500 s: a factory line's pace
    [rate] = history.observe("pt", None, T0 + timedelta(seconds=500), DEFAULTS)
    assert rate.kind is AlertKind.PROVISIONING_RATE
    assert rate.evidence["initsInWindow"] == 101 and rate.evidence["limit"] == 100


def test_a_busy_history_raises_the_limit_to_five_times_its_average() -> None:
    history = ProvisioningHistory()
    # a day at 60 per 10 minutes: the baseline is 60 per window, the limit 300
    assert inits(history, 6 * 24 * 60, T0, 10.0) == []
    later = T0 + timedelta(days=1, seconds=600)  # after a quiet window
    assert inits(history, 290, later, 1.0) == []  # 290 in the window: under 300
    assert "provisioning_rate" in inits(history, 20, later + timedelta(seconds=290), 1.0)
    # a week later the history is gone: the floor again
    quiet = ProvisioningHistory()
    inits(quiet, 6 * 24 * 60, T0, 10.0)
    assert "provisioning_rate" in inits(quiet, 120, T0 + timedelta(days=9), 1.0)


def test_device_ids_outside_the_tokens_naming_scheme() -> None:
    history = ProvisioningHistory()

    def init(device_id: str) -> list[str]:
        return [f.kind.value for f in history.observe("pt", device_id, T0, DEFAULTS)]

    assert init("cam-1") == []  # too few to have a scheme
    assert [init(f"pump-{i:04d}") for i in range(95, 101)] == [[]] * 6  # 'pump-0099' → 'pump-0100'
    # the first five (cam-1, pump-0095…) share nothing: still no scheme, no alert
    assert init("valve-1") == []
    history = ProvisioningHistory()
    for i in range(95, 101):
        init(f"pump-{i:04d}")
    assert init("pump-0101") == []
    assert init("valve-1") == ["provisioning_device_ids"]


def test_a_takeover_from_another_address_and_what_is_not_one() -> None:
    here = SessionSighting("10.0.0.5", 50000, "rt-1")
    assert shared_credential("pump", here, SessionSighting("10.0.0.5", 50001, "rt-1")) is None
    assert shared_credential("pump", here, SessionSighting(None, None, "rt-1")) is None
    same = shared_credential("pump", here, SessionSighting("10.9.9.9", 1, "rt-1"))
    parent = shared_credential("pump", here, SessionSighting("10.9.9.9", 1, "rt-0"))
    unknown = shared_credential("pump", SessionSighting("10.0.0.5", 1, None),
                                SessionSighting("10.9.9.9", 1, None))  # fmt: skip
    assert same is not None and parent is not None and unknown is not None
    assert (same.severity, same.evidence["sameRegistrationToken"]) == (Severity.HIGH, True)
    assert (parent.severity, parent.evidence["sameRegistrationToken"]) == (Severity.MEDIUM, False)
    assert (unknown.severity, unknown.evidence["sameRegistrationToken"]) == (Severity.MEDIUM, None)


def test_only_a_token_a_refresh_replaced_is_a_replay() -> None:
    def presented(**changes: object) -> PresentedToken:
        values: dict[str, object] = {
            "registration_token_id": "rt-1",
            "device_id": "pump",
            "parent_id": "rt-0",
            "superseded_at": None,
            "revoked_at": None,
            "replaced_by_retry": False,
            "device_live": True,
        }
        values.update(changes)
        return PresentedToken(**values)  # type: ignore[arg-type]

    assert token_replay(presented(superseded_at=T0), T0, use="refresh") is not None
    assert token_replay(presented(revoked_at=T0, replaced_by_retry=True), T0, use="x") is not None
    assert token_replay(presented(revoked_at=T0), T0, use="x") is None  # an admin's revoke
    # the device's registration ended (revoked, deleted): nothing to replay against
    assert token_replay(presented(superseded_at=T0, device_live=False), T0, use="x") is None


def test_responses_are_checked_per_kind_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SettingsError, match="leak_response_token_replay must be one of"):
        Settings(leak_response_token_replay="revoke_token")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="leak_response_provisioning_rate"):
        Settings.from_environment(leak_response_provisioning_rate="revoke_device")
    monkeypatch.setenv("IIOT_LEAK_RESPONSE_SHARED_CREDENTIAL", "revoke_device")
    assert Settings.from_environment().leak_response_shared_credential == "revoke_device"
