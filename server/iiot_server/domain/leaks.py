"""Leak detection rules (issue 15): when the platform's own observations mean a device's or
a Provisioning Token's secret has a second holder. Pure: the service (``services/alerts.py``)
feeds observations and times in, and stores what a rule finds.

Four rules, each explainable in a sentence (``docs/leak_detection.md``):

- **shared_credential** (a): a CONNECT takes over a live session of the same Device ID from
  another address. Same Registration Token on both sides: ``high`` (one credential, two
  holders at once); the device's other usable token (a parent in its grace period), or a
  broker that cannot tell (Mosquitto): ``medium``.
  From the same address it is a reconnect over a half-open connection, not flagged (rule d
  still counts it).
- **token_replay** (b): a Registration Token that a refresh replaced is presented after it
  stopped working (grace period over, or its own parent was refreshed): its holder and the
  one who refreshed it both had it. ``high``.
- **provisioning_rate** / **provisioning_device_ids** (c): a Provisioning Token opens more
  operations in a window than its history explains, or for a Device ID outside the prefix
  its earlier Device IDs share. ``medium``.
- **connection_flapping** (d): a Device ID taken over more often than a threshold per
  window: two holders fighting over one Device ID. ``medium``.

>>> from datetime import UTC, datetime
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> shared_credential(
...     "pump-0001",
...     SessionSighting("10.0.0.5", 50000, "rt-1", t0),
...     SessionSighting("10.9.9.9", 40000, "rt-1", t0),
... ).severity
<Severity.HIGH: 'high'>
>>> device_id_prefix(["pump-0001", "pump-0002", "pump-0042"])
'pump-'
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class AlertKind(StrEnum):
    """What a rule flagged."""

    SHARED_CREDENTIAL = "shared_credential"
    TOKEN_REPLAY = "token_replay"
    PROVISIONING_RATE = "provisioning_rate"
    PROVISIONING_DEVICE_IDS = "provisioning_device_ids"
    CONNECTION_FLAPPING = "connection_flapping"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class LeakResponse(StrEnum):
    """What the platform does by itself when an alert is raised (settings
    ``leak_response_<kind>``). ``revoke_device``: the admin route's revocation switch (every
    Registration Token of the device revoked, its MQTT session closed; it must provision
    again). ``revoke_token``: the Provisioning Token is revoked (irreversible: a new PT is
    needed afterwards). ``pause_token``: the Provisioning Token is paused (it opens no new
    operation until an administrator resumes it; reversible, for a false positive)."""

    NONE = "none"
    REVOKE_DEVICE = "revoke_device"
    REVOKE_TOKEN = "revoke_token"
    PAUSE_TOKEN = "pause_token"


DEVICE_KINDS = frozenset(
    {AlertKind.SHARED_CREDENTIAL, AlertKind.TOKEN_REPLAY, AlertKind.CONNECTION_FLAPPING}
)
"""Kinds whose subject is a device (response ``revoke_device``); the others' subject is a
Provisioning Token (response ``revoke_token``)."""


def allowed_responses(kind: AlertKind) -> tuple[LeakResponse, ...]:
    """The automatic responses that make sense for a kind.

    >>> [r.value for r in allowed_responses(AlertKind.TOKEN_REPLAY)]
    ['none', 'revoke_device']
    """
    if kind in DEVICE_KINDS:
        return (LeakResponse.NONE, LeakResponse.REVOKE_DEVICE)
    return (LeakResponse.NONE, LeakResponse.REVOKE_TOKEN, LeakResponse.PAUSE_TOKEN)


@dataclass(frozen=True)
class Finding:
    """What a rule concluded: an alert to raise (or to count as a repeat of an open one)."""

    kind: AlertKind
    severity: Severity
    evidence: dict[str, Any]
    device_id: str | None = None
    """The device key (``domain/workspaces.py``) for device kinds."""
    provisioning_token_id: str | None = None


@dataclass(frozen=True)
class SessionSighting:
    """One MQTT session as the broker saw it at CONNECT."""

    address: str | None
    port: int | None
    registration_token_id: str | None
    """The token its credentials are bound to; None where the broker cannot tell."""
    at: datetime | None = None


# (a) shared credential ---------------------------------------------------------------


def shared_credential(
    device_id: str, previous: SessionSighting, newcomer: SessionSighting
) -> Finding | None:
    """A takeover seen as two holders: the newcomer comes from another address than the
    live session it pushes out. None for the same address (a reconnect) or an unknown one."""
    if previous.address is None or newcomer.address is None:
        return None
    if previous.address == newcomer.address:
        return None
    same_token: bool | None = None  # unknown (Mosquitto mode: its passwords are its own)
    if previous.registration_token_id is not None and newcomer.registration_token_id is not None:
        same_token = previous.registration_token_id == newcomer.registration_token_id
    return Finding(
        kind=AlertKind.SHARED_CREDENTIAL,
        severity=Severity.HIGH if same_token else Severity.MEDIUM,
        device_id=device_id,
        evidence={
            "sameRegistrationToken": same_token,
            "previous": _sighting(previous),
            "newcomer": _sighting(newcomer),
        },
    )


def _sighting(s: SessionSighting) -> dict[str, Any]:
    return {
        "address": s.address,
        "port": s.port,
        "registrationTokenId": s.registration_token_id,
        "connectedAt": _iso(s.at),
    }


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


# (b) token replay ----------------------------------------------------------------------


@dataclass(frozen=True)
class PresentedToken:
    """A refused Registration Token and what the store says about it."""

    registration_token_id: str
    device_id: str
    parent_id: str | None
    superseded_at: datetime | None
    revoked_at: datetime | None
    replaced_by_retry: bool
    """Revoked because its parent was refreshed again (a refresh retried after a lost
    answer): whoever presents it received the answer after all."""
    device_live: bool
    """The device still has a token that is not revoked: its registration did not end (an
    admin revocation, deletion or re-provisioning ends it; then nothing is a replay)."""


def token_replay(token: PresentedToken, now: datetime, *, use: str) -> Finding | None:
    """A refused token that a refresh had replaced, presented while the device lives on its
    successor: two holders of one token. None for other refusals (expired, revoked by an
    admin, unknown).

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> token_replay(PresentedToken("rt-1", "pump-0001", None, t, None, False, True), t,
    ...              use="refresh").kind
    <AlertKind.TOKEN_REPLAY: 'token_replay'>
    >>> token_replay(PresentedToken("rt-1", "pump-0001", None, None, t, False, True), t,
    ...              use="refresh") is None  # revoked, never refreshed away
    True
    """
    if not token.device_live:
        return None
    if token.superseded_at is None and not token.replaced_by_retry:
        return None
    return Finding(
        kind=AlertKind.TOKEN_REPLAY,
        severity=Severity.HIGH,
        device_id=token.device_id,
        evidence={
            "registrationTokenId": token.registration_token_id,
            "use": use,
            "supersededAt": None
            if token.superseded_at is None
            else token.superseded_at.isoformat(),
            "revokedAt": None if token.revoked_at is None else token.revoked_at.isoformat(),
            "replacedByRetriedRefresh": token.replaced_by_retry,
            "presentedAt": now.isoformat(),
        },
    )


# (c) provisioning token anomalies ------------------------------------------------------


@dataclass(frozen=True)
class ProvisioningThresholds:
    """Rule (c)'s knobs (settings ``leak_provisioning_*``)."""

    window: float = 600.0
    """Seconds of the window whose count of inits is compared with the token's history."""
    history: float = 7 * 86400.0
    """Seconds of history the baseline rate is taken over."""
    floor: int = 100
    """A window may always hold this many inits: a factory line booting 500 devices an
    hour opens ~83 per 10 minutes on a new PT without an alert."""
    factor: float = 5.0
    """Beyond the floor, an alert when the window holds more than this many times the
    token's average per window over its history."""
    prefix_sample: int = 50
    """Device IDs remembered per token for the prefix rule."""
    prefix_min_history: int = 5
    """Device IDs needed before the prefix rule speaks."""
    prefix_min_length: int = 3
    """Shortest common prefix that counts as a naming scheme."""


def device_id_prefix(device_ids: list[str] | deque[str], *, min_length: int = 3) -> str | None:
    """The naming scheme of a token's Device IDs: their longest common prefix without
    trailing digits (so ``pump-0099`` then ``pump-0100`` stay inside ``pump-``); None when
    shorter than ``min_length``.

    >>> device_id_prefix(["dev0001", "dev0002"]), device_id_prefix(["a-1", "b-1"])
    ('dev', None)
    """
    if not device_ids:
        return None
    first, last = min(device_ids), max(device_ids)  # their common prefix is everyone's
    common = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), None)
    prefix = first[: len(min(first, last, key=len)) if common is None else common]
    prefix = prefix.rstrip("0123456789")
    return prefix if len(prefix) >= min_length else None


@dataclass
class ProvisioningHistory:
    """What the platform remembers of one Provisioning Token's inits (since it started):
    their times, split at the window's start so each init costs O(1) amortised (a
    factory PT has tens of thousands in its history), and its last Device IDs."""

    recent: deque[datetime] = field(default_factory=deque)
    """inits within the window"""
    older: deque[datetime] = field(default_factory=deque)
    """inits in the history before the window"""
    device_ids: deque[str] = field(default_factory=deque)

    def observe(
        self,
        provisioning_token_id: str,
        device_id: str | None,
        now: datetime,
        thresholds: ProvisioningThresholds,
    ) -> list[Finding]:
        """Record one init (``device_id`` bare, None when not given) and say what it breaks.

        >>> from datetime import UTC, datetime, timedelta
        >>> h, t = ProvisioningHistory(), datetime(2026, 1, 1, tzinfo=UTC)
        >>> quiet = ProvisioningThresholds(floor=2, factor=5.0)
        >>> [len(h.observe("pt", None, t + timedelta(seconds=i), quiet)) for i in range(3)]
        [0, 0, 1]
        """
        findings = []
        window_start = now - timedelta(seconds=thresholds.window)
        while self.recent and self.recent[0] <= window_start:
            self.older.append(self.recent.popleft())
        history_start = now - timedelta(seconds=thresholds.history)
        while self.older and self.older[0] < history_start:
            self.older.popleft()
        in_window = 1 + len(self.recent)
        baseline = 0.0
        if self.older:
            # the average per window over the history seen before this window
            span = max(thresholds.window, (window_start - self.older[0]).total_seconds())
            baseline = len(self.older) * thresholds.window / span
        limit = max(float(thresholds.floor), thresholds.factor * baseline)
        if in_window > limit:
            findings.append(
                Finding(
                    kind=AlertKind.PROVISIONING_RATE,
                    severity=Severity.MEDIUM,
                    provisioning_token_id=provisioning_token_id,
                    evidence={
                        "initsInWindow": in_window,
                        "windowSeconds": thresholds.window,
                        "limit": round(limit, 2),
                        "baselinePerWindow": round(baseline, 2),
                        "historySeconds": thresholds.history,
                    },
                )
            )
        self.recent.append(now)
        if device_id is not None:
            enough = len(self.device_ids) >= thresholds.prefix_min_history
            prefix = (
                device_id_prefix(self.device_ids, min_length=thresholds.prefix_min_length)
                if enough
                else None
            )
            if prefix is not None and not device_id.startswith(prefix):
                findings.append(
                    Finding(
                        kind=AlertKind.PROVISIONING_DEVICE_IDS,
                        severity=Severity.MEDIUM,
                        provisioning_token_id=provisioning_token_id,
                        evidence={
                            "deviceId": device_id,
                            "expectedPrefix": prefix,
                            "previousDeviceIds": len(self.device_ids),
                        },
                    )
                )
            self.device_ids.append(device_id)
            while len(self.device_ids) > thresholds.prefix_sample:
                self.device_ids.popleft()
        return findings


# (d) flapping --------------------------------------------------------------------------


@dataclass
class TakeoverHistory:
    """A device's recent takeovers."""

    times: deque[datetime] = field(default_factory=deque)

    def observe(
        self, device_id: str, now: datetime, *, threshold: int, window: float
    ) -> Finding | None:
        """Record a takeover; a finding once ``threshold`` of them fall within ``window``
        seconds.

        >>> from datetime import UTC, datetime, timedelta
        >>> h, t = TakeoverHistory(), datetime(2026, 1, 1, tzinfo=UTC)
        >>> [h.observe("d", t + timedelta(seconds=i), threshold=3, window=60) is not None
        ...  for i in range(3)]
        [False, False, True]
        """
        start = now - timedelta(seconds=window)
        while self.times and self.times[0] <= start:
            self.times.popleft()
        self.times.append(now)
        if len(self.times) < threshold:
            return None
        return Finding(
            kind=AlertKind.CONNECTION_FLAPPING,
            severity=Severity.MEDIUM,
            device_id=device_id,
            evidence={
                "takeoversInWindow": len(self.times),
                "windowSeconds": window,
                "threshold": threshold,
                "firstAt": self.times[0].isoformat(),
            },
        )


__all__ = [
    "DEVICE_KINDS",
    "AlertKind",
    "Finding",
    "LeakResponse",
    "PresentedToken",
    "ProvisioningHistory",
    "ProvisioningThresholds",
    "SessionSighting",
    "Severity",
    "TakeoverHistory",
    "allowed_responses",
    "device_id_prefix",
    "shared_credential",
    "token_replay",
]
