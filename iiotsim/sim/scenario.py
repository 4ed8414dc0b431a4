"""A simulation scenario: typed, validated, JSON-serialisable.

Times are seconds unless a field says otherwise. Distributions are given by mean and
shape (not raw scipy parameters). Bad values raise :class:`ScenarioError` naming the
field (``token.refresh_fraction``), whether the scenario comes from Python or JSON.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import msgspec
from iiot_server.domain.errors import ValidationError
from iiot_server.domain.tokens import (
    DEFAULT_REFRESH_FRACTION,
    DEFAULT_REFRESH_GRACE_PERIOD,
    ProvisioningTokenOptions,
    refresh_due_at,
    resolve_registration_token_lifetime,
)

from ..errors import ScenarioError as ScenarioError  # defined in the one tree; re-exported

HOUR = 3600.0
DAY = 86400.0


class Distribution(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A positive duration distribution by mean (seconds) and shape.

    ``kind``: ``exponential`` (mean only), ``weibull`` (``shape`` = Weibull k),
    ``lognormal`` (``shape`` = sigma of the log), ``fixed`` (always the mean), or
    ``empirical`` (resampled from ``sample``, e.g. observed durations; ``mean`` ignored).
    """

    kind: Literal["exponential", "weibull", "lognormal", "fixed", "empirical"] = "exponential"
    mean: float = HOUR
    shape: float = 1.0
    sample: tuple[float, ...] = ()

    @classmethod
    def exponential(cls, mean: float) -> Distribution:
        return cls("exponential", mean)

    @classmethod
    def weibull(cls, mean: float, shape: float) -> Distribution:
        return cls("weibull", mean, shape)

    @classmethod
    def lognormal(cls, mean: float, sigma: float) -> Distribution:
        return cls("lognormal", mean, sigma)

    @classmethod
    def fixed(cls, value: float) -> Distribution:
        return cls("fixed", value)

    @classmethod
    def empirical(cls, durations: Any) -> Distribution:
        """From observed durations (a pandas Series, array or list of seconds)."""
        values = tuple(float(v) for v in durations)
        mean = sum(values) / len(values) if values else 0.0
        return cls("empirical", mean, 1.0, values)

    def check(self, field: str) -> None:
        if self.kind == "empirical":
            if not self.sample or any(not (v >= 0 and math.isfinite(v)) for v in self.sample):
                raise ScenarioError(f"{field}.sample", "needs finite durations >= 0")
            return
        if not (self.mean > 0 and math.isfinite(self.mean)):
            raise ScenarioError(f"{field}.mean", f"must be a positive number, got {self.mean}")
        if self.kind in ("weibull", "lognormal") and not (
            self.shape > 0 and math.isfinite(self.shape)
        ):
            raise ScenarioError(f"{field}.shape", f"must be positive, got {self.shape}")


class Connectivity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An alternating on/off renewal process per device.

    ``diurnal_amplitude`` (0..1) lengthens off periods that start around
    ``diurnal_peak_hour`` and shortens those twelve hours away (a night-time dip).
    """

    on: Distribution = Distribution("exponential", 6 * HOUR)
    off: Distribution = Distribution("exponential", 20 * 60.0)
    diurnal_amplitude: float = 0.0
    diurnal_peak_hour: float = 2.0


class DeviceGroup(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A share of the fleet (``weight``) with its own connectivity; groups also scope
    site outages."""

    name: str
    weight: float = 1.0
    connectivity: Connectivity | None = None


class TokenPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Registration Token policy. ``lifetime`` None = infinite."""

    lifetime: float | None = 7 * DAY
    refresh_fraction: float = DEFAULT_REFRESH_FRACTION
    grace_period: float = DEFAULT_REFRESH_GRACE_PERIOD
    shared_provisioning_token: bool = True
    wipe_store_on_expiry: bool = False
    """pitfall: a device that wipes its token store when its RT expires can never
    provision again (a lockout becomes permanent: someone must visit it)"""


class Provisioning(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Technician approvals: ``technicians`` is a simpy resource, so approvals queue."""

    technicians: int = 2
    approval_time: Distribution = Distribution("exponential", 10 * 60.0)
    """how long a technician takes to handle one approval (holds the technician)"""
    working_hours: tuple[float, float] | None = (8.0, 17.0)
    """technicians start approvals only between these hours (UTC) every day; None = 24/7"""
    operation_expiry: float = 900.0
    poll_interval: float = 2.0


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Reconnect back-off. ``reset``: ``stable`` resets after ``stable_after`` seconds
    connected; ``connect`` resets at every successful connect (a pitfall: a broker that
    accepts and then drops a device keeps it retrying at the base delay)."""

    kind: Literal["fixed", "exponential", "full_jitter"] = "full_jitter"
    base: float = 1.0
    cap: float = 300.0
    reset: Literal["stable", "connect"] = "stable"
    stable_after: float = 60.0


class Messages(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rate_per_hour: float = 60.0
    outbox_capacity: int = 10_000


class Leaks(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Leak events at uniformly random times: ``registration_tokens`` RTs of random
    devices and ``provisioning_tokens`` PTs; each is detected after ``detection_delay``
    with probability ``detection_probability`` (else never) and then revoked.

    A leaked RT does not change what its device does (the device refreshes on, and its
    refresh ends the leaked token after the grace period), so its exposure is measured
    on the leak events and, until the standard error of the mean exposure is at most
    ``exposure_relative_se`` of it (2 %), on further leaks sampled the same way (on 256
    followed devices, 500 per round, at most ``exposure_max_samples``); the summary
    reports the sample size and the relative standard error reached. Measured on
    notebook 02's connectivity (2,000 devices x 60 d): 1,200-2,700 leaks from 1 d to
    infinite lifetimes; at 1 h the cap (2.7 %: most leaks fall while the device awaits
    approval, exposure 0). The 200 leak events alone gave 4.7 % (means scattered 6.2 %
    across seeds; 1.9 % now). None: the leak events alone.

    A leaked PT that is revoked stops every later lockout of the devices holding it
    (all of them if the PT is shared) from recovering.

    ``detection_rules``: the platform's own leak detection (``docs/leak_detection.md``)
    also catches a leaked RT, ``response_delay`` seconds before its revocation (0: the
    automatic response ``leak_response_shared_credential = "revoke_device"``). What it
    catches depends on the ``thief``: ``"online"`` registers with the RT and keeps an MQTT
    session from the leak on, so rule (a) fires at the first instant the device is online
    too (a takeover from another address), drawn from the device's own connectivity;
    ``"stealthy"`` connects only while the device is offline, and no rule sees it (the
    simulated thief never refreshes, so rule (b), which catches one who does, has nothing
    to see: the device's refresh ends the stolen copy after the grace period). The
    revocation is the earlier of the rules' and the ``detection_delay``'s."""

    registration_tokens: int = 200
    provisioning_tokens: int = 0
    detection_delay: Distribution = Distribution("exponential", 3 * DAY)
    detection_probability: float = 1.0
    exposure_relative_se: float | None = 0.02
    exposure_max_samples: int = 20_000
    detection_rules: bool = False
    thief: Literal["online", "stealthy"] = "online"
    response_delay: float = 0.0


class Outage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A scheduled outage: ``group`` None = the broker (every device), else a site."""

    start: float
    duration: float
    group: str | None = None


class Outages(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    scheduled: tuple[Outage, ...] = ()
    random_per_day: float = 0.0
    """rate of random outages (Poisson), each of ``random_duration``"""
    random_duration: Distribution = Distribution("exponential", 30 * 60.0)
    random_scope: Literal["broker", "site"] = "broker"
    broker_connects_per_second: float | None = None
    """the broker's connection capacity; None = unlimited (attempts beyond fail)"""


class Pitfalls(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    duplicate_id_pairs: int = 0
    """pairs of physical devices sharing one Device ID: each connection takes over the
    other's, so each pair reconnects as fast as its back-off lets it"""


class Scenario(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Everything one simulation run needs (see the field docs)."""

    fleet_size: int = 1000
    duration_days: float = 30.0
    deployment_days: float = 0.0
    """devices are deployed uniformly over this many days from the start (0 = all at t=0)"""
    start: Literal["steady", "fresh"] = "steady"
    """how a fleet deployed at t=0 (``deployment_days`` 0) starts: ``steady`` = as if it
    had been running for long (each device's connectivity phase from the on/off
    process's equilibrium, its token's age from its refresh cycle), so no start-up wave
    shows; ``fresh`` = every device online with a new token at t=0 (real devices
    starting now, e.g. a hybrid run). Fleets deployed over time start each device fresh
    at its deployment (real, not an artefact) whatever this says."""
    connectivity: Connectivity = Connectivity()
    groups: tuple[DeviceGroup, ...] = ()
    token: TokenPolicy = TokenPolicy()
    provisioning: Provisioning = Provisioning()
    backoff: Backoff = Backoff()
    messages: Messages = Messages()
    leaks: Leaks = Leaks()
    outages: Outages = Outages()
    pitfalls: Pitfalls = Pitfalls()
    timeline_resolution: float = HOUR
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self)

    # --- convenience -------------------------------------------------------------

    @property
    def duration(self) -> float:
        return self.duration_days * DAY

    def replace(self, **changes: Any) -> Scenario:
        """A copy with dotted-path changes: ``s.replace(**{"token.lifetime": 3600})``."""
        data = msgspec.to_builtins(self)
        for path, value in changes.items():
            node = data
            keys = path.replace("__", ".").split(".")
            for key in keys[:-1]:
                if key not in node or not isinstance(node[key], dict):
                    raise ScenarioError(path, "no such field")
                node = node[key]
            if keys[-1] not in node:
                raise ScenarioError(path, "no such field")
            node[keys[-1]] = msgspec.to_builtins(value)
        return Scenario.from_dict(data)

    def to_builtins(self) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Scenario:
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.ValidationError as exc:
            raise _scenario_error(exc) from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise _scenario_error(exc) from None


def _scenario_error(exc: msgspec.ValidationError) -> ScenarioError:
    """msgspec's error as a ScenarioError naming the dotted field."""
    message = str(exc)
    path = ""
    if " - at `$" in message:
        message, _, path = message.partition(" - at `$")
        path = path.rstrip("`").lstrip(".")
    # errors raised by our own checks (in __post_init__) already start with the field
    ours = re.match(r"^([a-z_]+(?:\.[a-z_0-9]+)*): (.*)$", message, re.S)
    if ours and not path:
        return ScenarioError(ours.group(1), ours.group(2))
    field = re.sub(r"\[(\d+)\]", r".\1", path) or "scenario"
    return ScenarioError(field, message)


def _positive(value: float, field: str, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        raise ScenarioError(field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check(s: Scenario) -> None:
    if s.fleet_size < 1:
        raise ScenarioError("fleet_size", f"must be at least 1, got {s.fleet_size}")
    _positive(s.duration_days, "duration_days")
    _positive(s.deployment_days, "deployment_days", allow_zero=True)
    if s.deployment_days >= s.duration_days:
        raise ScenarioError("deployment_days", "must be shorter than duration_days")
    if s.start not in ("steady", "fresh"):
        raise ScenarioError("start", f"must be 'steady' or 'fresh', got {s.start!r}")
    _positive(s.timeline_resolution, "timeline_resolution")
    for name, conn in [("connectivity", s.connectivity)] + [
        (f"groups.{i}.connectivity", g.connectivity)
        for i, g in enumerate(s.groups)
        if g.connectivity is not None
    ]:
        assert conn is not None
        conn.on.check(f"{name}.on")
        conn.off.check(f"{name}.off")
        if not 0 <= conn.diurnal_amplitude < 1:
            raise ScenarioError(f"{name}.diurnal_amplitude", "must be in [0, 1)")
    names = [g.name for g in s.groups]
    if len(set(names)) != len(names):
        raise ScenarioError("groups", "group names must be unique")
    for i, g in enumerate(s.groups):
        _positive(g.weight, f"groups.{i}.weight")
    # token policy: the platform's own rules decide what is a valid lifetime and refresh
    t = s.token
    try:
        options = ProvisioningTokenOptions.validated(
            max_registration_token_lifetime=t.lifetime,
            registration_token_lifetime_override="disabled",
            allow_infinite_lifetime=t.lifetime is None,
            device_id_override="enforced_at_init",  # each device names itself
        )
        resolve_registration_token_lifetime(options)
    except ValidationError as exc:
        raise ScenarioError("token.lifetime", str(exc)) from None
    from datetime import UTC, datetime, timedelta

    try:
        epoch = datetime(2026, 1, 1, tzinfo=UTC)
        refresh_due_at(epoch, epoch + timedelta(seconds=t.lifetime or 1.0), t.refresh_fraction)
    except ValidationError as exc:
        raise ScenarioError("token.refresh_fraction", str(exc)) from None
    _positive(t.grace_period, "token.grace_period", allow_zero=True)
    p = s.provisioning
    if p.technicians < 1:
        raise ScenarioError("provisioning.technicians", f"must be at least 1, got {p.technicians}")
    p.approval_time.check("provisioning.approval_time")
    _positive(p.operation_expiry, "provisioning.operation_expiry")
    _positive(p.poll_interval, "provisioning.poll_interval")
    if p.working_hours is not None:
        start, end = p.working_hours
        if not (0 <= start < end <= 24):
            raise ScenarioError("provisioning.working_hours", "needs 0 <= start < end <= 24")
    b = s.backoff
    _positive(b.base, "backoff.base")
    if b.cap < b.base:
        raise ScenarioError("backoff.cap", f"must be >= backoff.base ({b.base}), got {b.cap}")
    _positive(b.stable_after, "backoff.stable_after", allow_zero=True)
    _positive(s.messages.rate_per_hour, "messages.rate_per_hour", allow_zero=True)
    if s.messages.outbox_capacity < 0:
        raise ScenarioError("messages.outbox_capacity", "must be >= 0")
    lk = s.leaks
    if lk.registration_tokens < 0 or lk.provisioning_tokens < 0:
        raise ScenarioError("leaks", "leak counts must be >= 0")
    lk.detection_delay.check("leaks.detection_delay")
    if not 0 <= lk.detection_probability <= 1:
        raise ScenarioError("leaks.detection_probability", "must be in [0, 1]")
    if lk.exposure_relative_se is not None and not 0 < lk.exposure_relative_se < 1:
        raise ScenarioError("leaks.exposure_relative_se", "must be in (0, 1), or null")
    if lk.exposure_max_samples < 1:
        raise ScenarioError("leaks.exposure_max_samples", "must be >= 1")
    o = s.outages
    for i, out in enumerate(o.scheduled):
        _positive(out.start, f"outages.scheduled.{i}.start", allow_zero=True)
        _positive(out.duration, f"outages.scheduled.{i}.duration")
        if out.group is not None and out.group not in names:
            raise ScenarioError(f"outages.scheduled.{i}.group", f"no group {out.group!r}")
    _positive(o.random_per_day, "outages.random_per_day", allow_zero=True)
    o.random_duration.check("outages.random_duration")
    if o.broker_connects_per_second is not None:
        _positive(o.broker_connects_per_second, "outages.broker_connects_per_second")
    if s.pitfalls.duplicate_id_pairs < 0:
        raise ScenarioError("pitfalls.duplicate_id_pairs", "must be >= 0")
