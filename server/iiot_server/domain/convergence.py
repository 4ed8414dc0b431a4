"""Twin convergence and staged rollouts (pure): per-property states, rollout plans, stages.

Each top-level desired property of a device is in one state:

- ``pending``: the desired value changed and the device has not reported it back yet;
- ``converged``: the reported value holds the desired one (objects: every desired leaf
  is reported with that value; the device may report more);
- ``drifted``: the device had converged, then reported something else;
- ``failed``: the device acknowledged the desired change with a failure.

Devices may answer a desired property with an IoT Plug and Play writable-property
acknowledgement (Azure IoT's convention) instead of the bare value: reported
``{"<prop>": {"value": <v>, "ac": <status>, "av": <desired $version>, "ad": "<why>"}}``.
``ac`` 200-299 but 202 (in progress) with a ``value`` that holds the desired one counts as
converged, like a bare report of that value; ``ac`` >= 400 with ``av`` at or past the
desired version that set the property is ``failed`` (an older ``av`` is about a value no
longer desired and is ignored). Any other report moves states as a bare value does.

A desired change restarts the property at ``pending`` (or ``converged`` at once when the
device already reports that value). A drifted or failed property that is reported right
again is ``converged`` again; a failed one stays failed on any other report (the device
said no; a later unrelated value does not take that back).

A staged rollout gives a configuration to its targeted devices in slices: a stage's
``percent`` (of the targeted devices) or ``count`` says how many it adds, in an order fixed
by a hash of the configuration id and the device key (so a stage is a stable, unbiased
sample, not the devices whose ids sort first); the last stage adds every device left. The
rollout halts when the share of the current stage's devices that drifted, failed or timed
out (still pending ``pendingTimeout`` seconds after the stage admitted them) passes
``haltWhenDriftedOrFailed``; otherwise the next stage starts when the converged share of
the devices the stage still waits for (failed and timed-out ones are judged by the halt
threshold alone) reaches ``advanceWhenConverged``."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import ValidationError

MAX_STAGES = 100
MAX_PENDING_TIMEOUT = 10 * 365 * 86400.0  # ten years: also keeps inf and nan out


class ConvergenceState(StrEnum):
    PENDING = "pending"
    CONVERGED = "converged"
    DRIFTED = "drifted"
    FAILED = "failed"


def satisfies(desired: Any, reported: Any) -> bool:
    """Whether a reported value holds a desired one: equal, or for objects every desired
    key satisfied (a device may report more than it was asked for).

    >>> satisfies({"fan": {"speed": 2}}, {"fan": {"speed": 2, "rpm": 1200}})
    True
    >>> satisfies(10, 10.5), satisfies([1, 2], [1, 2])
    (False, True)
    """
    if isinstance(desired, dict):
        return isinstance(reported, dict) and all(
            key in reported and satisfies(value, reported[key]) for key, value in desired.items()
        )
    return bool(type(desired) is type(reported) and desired == reported) or (
        _number(desired) and _number(reported) and desired == reported
    )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


ACKNOWLEDGEMENT_KEYS = frozenset({"value", "ac", "av", "ad"})
IN_PROGRESS = 202
"""IoT Plug and Play's ``ac`` for "accepted, still applying": not converged yet."""
FIRST_FAILURE = 400


@dataclass(frozen=True)
class Acknowledgement:
    """A writable-property acknowledgement (IoT Plug and Play): the device's ``value``,
    an HTTP-like ``status`` (``ac``), the desired ``$version`` it answers (``av``) and an
    optional ``description`` (``ad``)."""

    status: int
    version: int
    value: Any = None
    has_value: bool = False
    description: str | None = None

    @property
    def failed(self) -> bool:
        return self.status >= FIRST_FAILURE

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300 and self.status != IN_PROGRESS


def acknowledgement(reported: Any) -> Acknowledgement | None:
    """The acknowledgement a reported property value is, or None for a bare value: an
    object with integer ``ac`` and ``av`` and no keys but ``value``, ``ac``, ``av``, ``ad``
    (so a device's own object with an ``ac`` field of another meaning is not taken for one).

    >>> acknowledgement({"value": 5, "ac": 500, "av": 3, "ad": "flash full"}).failed
    True
    >>> acknowledgement({"ac": 500, "av": 3, "mode": 2}) is None, acknowledgement(5) is None
    (True, True)
    """
    if not isinstance(reported, dict) or not set(reported) <= ACKNOWLEDGEMENT_KEYS:
        return None
    status, version = reported.get("ac"), reported.get("av")
    if not isinstance(status, int) or not isinstance(version, int):
        return None
    if isinstance(status, bool) or isinstance(version, bool):
        return None
    description = reported.get("ad")
    return Acknowledgement(
        status=status,
        version=version,
        value=reported.get("value"),
        has_value="value" in reported,
        description=description if isinstance(description, str) else None,
    )


def holds(desired: Any, reported: Any) -> bool:
    """Whether a report holds the desired value: :func:`satisfies` on the bare value, or a
    successful acknowledgement (2xx but 202) whose ``value`` satisfies it. The plain
    comparison comes first, so a desired object that looks like an acknowledgement still
    converges on an equal report.

    >>> holds(5, {"value": 5, "ac": 200, "av": 7}), holds(5, {"value": 5, "ac": 202, "av": 7})
    (True, False)
    """
    if satisfies(desired, reported):
        return True
    ack = acknowledgement(reported)
    return ack is not None and ack.succeeded and ack.has_value and satisfies(desired, ack.value)


def refuses(reported: Any, desired_version: int) -> bool:
    """Whether a report is a failure acknowledgement (``ac`` >= 400) of the desired change
    made at ``desired_version`` or a later one (``av``: the document's ``$version`` the device
    answers, which may have grown through other properties since)."""
    ack = acknowledgement(reported)
    return ack is not None and ack.failed and ack.version >= desired_version


def state_after_desired_change(desired: Any, reported: Any) -> ConvergenceState:
    """A property whose desired value just changed: converged when the device already
    reports it, else pending (a failure acknowledgement on record is about an older
    version: the device has not answered this one)."""
    return ConvergenceState.CONVERGED if holds(desired, reported) else ConvergenceState.PENDING


def state_after_report(
    current: ConvergenceState, desired: Any, reported: Any, desired_version: int = 0
) -> ConvergenceState:
    """A property's state once the device reported (``reported`` is the property's whole
    reported value after the patch, or None when absent; ``desired_version``: the desired
    document's version that set the property, which a failure acknowledgement must answer).

    >>> state_after_report(ConvergenceState.CONVERGED, 5, 6)
    <ConvergenceState.DRIFTED: 'drifted'>
    >>> state_after_report(ConvergenceState.PENDING, 5, 6)
    <ConvergenceState.PENDING: 'pending'>
    >>> refused = {"value": 4, "ac": 500, "av": 3, "ad": "out of range"}
    >>> state_after_report(ConvergenceState.PENDING, 5, refused, 3).value
    'failed'
    >>> state_after_report(ConvergenceState.PENDING, 5, refused, 4).value  # an older answer
    'pending'
    >>> state_after_report(ConvergenceState.FAILED, 5, 6, 3).value
    'failed'
    """
    if holds(desired, reported):
        return ConvergenceState.CONVERGED
    if refuses(reported, desired_version):
        return ConvergenceState.FAILED
    if current in (ConvergenceState.PENDING, ConvergenceState.FAILED):
        return current
    return ConvergenceState.DRIFTED


# Staged rollouts ---------------------------------------------------------------------


class RolloutState(StrEnum):
    ROLLING = "rolling"
    HALTED = "halted"
    ABORTED = "aborted"
    COMPLETED = "completed"


@dataclass(frozen=True)
class RolloutStage:
    """How many devices a stage adds: a share of the targeted devices, or a count."""

    percent: float | None = None
    count: int | None = None

    def wire(self) -> dict[str, Any]:
        return {"percent": self.percent} if self.percent is not None else {"count": self.count}


@dataclass(frozen=True)
class RolloutPlan:
    """``pending_timeout``: seconds a device of a stage may stay pending after the stage
    admitted it before it counts as timed out (None: it is waited for indefinitely)."""

    stages: tuple[RolloutStage, ...]
    advance_when_converged: float = 0.9
    halt_when_drifted_or_failed: float = 0.1
    pending_timeout: float | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stages": [s.wire() for s in self.stages],
            "advanceWhenConverged": self.advance_when_converged,
            "haltWhenDriftedOrFailed": self.halt_when_drifted_or_failed,
        }
        if self.pending_timeout is not None:
            out["pendingTimeout"] = self.pending_timeout
        return out


def parse_rollout(raw: object, *, field: str = "rollout") -> RolloutPlan:
    """Validate a rollout as the API takes it::

        {"stages": [{"count": 1}, {"percent": 50}, {"percent": 50}],
         "advanceWhenConverged": 0.9, "haltWhenDriftedOrFailed": 0.1, "pendingTimeout": 3600}

    ``haltWhenDrifted`` (the name before failures and timeouts counted) is the same
    threshold under its old name; giving both is refused. ``pendingTimeout``: seconds, above
    0, optional.

    >>> parse_rollout({"stages": [{"count": 2}, {"percent": 100}]}).stages[0]
    RolloutStage(percent=None, count=2)
    >>> parse_rollout({"stages": [{"count": 1}], "haltWhenDrifted": 0.3}).wire()
    {'stages': [{'count': 1}], 'advanceWhenConverged': 0.9, 'haltWhenDriftedOrFailed': 0.3}
    >>> try:
    ...     parse_rollout({"stages": [{"count": 1}], "pendingTimeout": -5})
    ... except ValidationError as refused:
    ...     print(refused.field)
    rollout.pendingTimeout
    """
    if not isinstance(raw, dict):
        raise ValidationError("a rollout is an object with stages", field=field)
    known = {
        "stages",
        "advanceWhenConverged",
        "haltWhenDrifted",
        "haltWhenDriftedOrFailed",
        "pendingTimeout",
    }
    for key in raw:
        if key not in known:
            raise ValidationError(f"unknown rollout field {key!r}", field=f"{field}.{key}")
    if "haltWhenDrifted" in raw and "haltWhenDriftedOrFailed" in raw:
        raise ValidationError(
            "give haltWhenDriftedOrFailed, or its old name haltWhenDrifted, not both",
            field=f"{field}.haltWhenDrifted",
        )
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not 1 <= len(stages_raw) <= MAX_STAGES:
        raise ValidationError(
            f"stages is a list of 1 to {MAX_STAGES} stages", field=f"{field}.stages"
        )
    stages = tuple(_stage(s, f"{field}.stages[{i}]") for i, s in enumerate(stages_raw))
    advance = _fraction(raw.get("advanceWhenConverged", 0.9), f"{field}.advanceWhenConverged")
    halt_key = "haltWhenDrifted" if "haltWhenDrifted" in raw else "haltWhenDriftedOrFailed"
    halt = _fraction(raw.get(halt_key, 0.1), f"{field}.{halt_key}")
    timeout = raw.get("pendingTimeout")
    if timeout is not None and not (
        _number(timeout) and 0 < timeout <= MAX_PENDING_TIMEOUT  # type: ignore[operator]
    ):
        raise ValidationError(
            "pendingTimeout is a number of seconds above 0", field=f"{field}.pendingTimeout"
        )
    return RolloutPlan(stages, advance, halt, None if timeout is None else float(timeout))


def _stage(raw: object, field: str) -> RolloutStage:
    if not isinstance(raw, dict) or len(raw) != 1 or not set(raw) <= {"percent", "count"}:
        raise ValidationError("a stage is {percent: 0-100} or {count: n}", field=field)
    if "count" in raw:
        count = raw["count"]
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10**9:
            raise ValidationError("count is an integer of at least 1", field=f"{field}.count")
        return RolloutStage(count=count)
    percent = raw["percent"]
    if not _number(percent) or not 0 < percent <= 100:
        raise ValidationError("percent is a number above 0, at most 100", field=f"{field}.percent")
    return RolloutStage(percent=float(percent))


def _fraction(value: object, field: str) -> float:
    if not _number(value) or not 0 <= value <= 1:  # type: ignore[operator]
        raise ValidationError("a share between 0 and 1", field=field)
    return float(value)  # type: ignore[arg-type]


def rollout_order(configuration_key: str, device_keys: Iterable[str]) -> list[str]:
    """Devices in the order stages take them: by a hash of configuration and device, so
    each configuration samples the fleet afresh and a stage is not 'the first ids'."""

    def rank(device: str) -> bytes:
        return hashlib.sha256(f"{configuration_key}\n{device}".encode()).digest()

    return sorted(device_keys, key=rank)


def admitted_through(plan: RolloutPlan, stage: int, targeted: int) -> int:
    """How many of ``targeted`` devices stages ``0..stage`` take together (the last stage:
    all of them).

    >>> plan = parse_rollout({"stages": [{"count": 1}, {"percent": 50}, {"percent": 10}]})
    >>> [admitted_through(plan, s, 10) for s in range(3)]
    [1, 6, 10]
    """
    if stage >= len(plan.stages) - 1:
        return targeted
    total = 0.0
    for s in plan.stages[: stage + 1]:
        total += s.count if s.count is not None else (s.percent or 0) / 100 * targeted
    return min(targeted, math.ceil(total - 1e-9))


@dataclass(frozen=True)
class StageCounts:
    """A stage's devices by the state of this configuration's properties on each (the
    worst of them: failed, drifted, then pending); ``devices`` counts them all, also those
    where another source (a higher configuration, a manual patch) owns every property it
    sets, which have nothing to judge. ``timed_out``: of the ``pending`` ones, those past
    the plan's ``pendingTimeout`` since the stage admitted them."""

    devices: int = 0
    pending: int = 0
    converged: int = 0
    drifted: int = 0
    failed: int = 0
    timed_out: int = 0

    @property
    def judged(self) -> int:
        return self.pending + self.converged + self.drifted + self.failed

    @property
    def bad(self) -> int:
        """Devices that count against the stage: drifted, failed or timed out."""
        return self.drifted + self.failed + self.timed_out

    @property
    def awaited(self) -> int:
        """Devices the stage still waits to converge: all judged but failed or timed-out
        ones (those are judged by the halt threshold alone)."""
        return self.judged - self.failed - self.timed_out


class RolloutDecision(StrEnum):
    WAIT = "wait"
    ADVANCE = "advance"
    HALT = "halt"


def decide(plan: RolloutPlan, counts: StageCounts) -> RolloutDecision:
    """Halt when the share of drifted, failed and timed-out devices passes
    ``haltWhenDriftedOrFailed``; else advance when the converged share of the devices the
    stage still waits for (not failed, not timed out) reaches ``advanceWhenConverged``;
    else wait. Shares are of the stage's devices that have this configuration's properties
    to judge; a stage with none advances (nothing to wait for). So a device that fails or
    times out never keeps a stage waiting: it halts the rollout or it is left behind.
    Without failure acknowledgements and ``pendingTimeout`` this is the rule of drift alone.

    >>> plan = parse_rollout({"stages": [{"count": 1}, {"count": 1}],
    ...                       "advanceWhenConverged": 0.5, "haltWhenDriftedOrFailed": 0.2})
    >>> decide(plan, StageCounts(4, pending=2, converged=2)).value
    'advance'
    >>> decide(plan, StageCounts(4, pending=1, converged=2, drifted=1)).value
    'halt'
    >>> decide(plan, StageCounts(5, pending=1, converged=3, failed=1)).value  # 1 of 5
    'advance'
    >>> decide(plan, StageCounts(4, pending=1, converged=2, failed=1)).value  # 1 of 4
    'halt'

    A stage that waits for every device: the one that never answers, once timed out, is
    left behind when one in ten may fail, and halts the rollout when none may:

    >>> strict = parse_rollout({"stages": [{"count": 10}, {"percent": 100}],
    ...     "advanceWhenConverged": 1.0, "haltWhenDriftedOrFailed": 0.1, "pendingTimeout": 600})
    >>> [decide(strict, StageCounts(10, pending=1, converged=9, timed_out=t)).value
    ...  for t in (0, 1)]
    ['wait', 'advance']
    >>> from dataclasses import replace
    >>> decide(replace(strict, halt_when_drifted_or_failed=0.0),
    ...        StageCounts(10, pending=1, converged=9, timed_out=1)).value
    'halt'
    """
    judged = counts.judged
    if judged == 0:
        return RolloutDecision.ADVANCE
    if counts.bad / judged > plan.halt_when_drifted_or_failed:
        return RolloutDecision.HALT
    awaited = counts.awaited
    if awaited == 0 or counts.converged / awaited >= plan.advance_when_converged:
        return RolloutDecision.ADVANCE
    return RolloutDecision.WAIT


def timed_out(admitted_at: float, now: float, plan: RolloutPlan) -> bool:
    """Whether a device admitted at ``admitted_at`` (epoch seconds) and still pending at
    ``now`` is past the plan's ``pendingTimeout`` (never without one). To the microsecond:
    times go through datetimes, which round epoch floats there.

    >>> plan = parse_rollout({"stages": [{"count": 1}], "pendingTimeout": 600})
    >>> timed_out(1000.0, 1599.0, plan), timed_out(1000.0, 1600.0, plan)
    (False, True)
    """
    return plan.pending_timeout is not None and now >= admitted_at + plan.pending_timeout - 1e-6


WORST_FIRST = (
    ConvergenceState.FAILED,
    ConvergenceState.DRIFTED,
    ConvergenceState.PENDING,
    ConvergenceState.CONVERGED,
)


def worst(states: Iterable[ConvergenceState]) -> ConvergenceState | None:
    """A device's state for a configuration: failed if any property failed, else drifted
    if any drifted, else pending if any is pending, else converged; None when it has none.

    >>> worst([ConvergenceState.DRIFTED, ConvergenceState.FAILED]).value
    'failed'
    """
    found = set(states)
    for state in WORST_FIRST:
        if state in found:
            return state
    return None
