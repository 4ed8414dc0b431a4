"""Twin convergence and staged rollouts (pure): per-property states, rollout plans, stages.

Each top-level desired property of a device is in one state:

- ``pending``: the desired value changed and the device has not reported it back yet;
- ``converged``: the reported value holds the desired one (objects: every desired leaf
  is reported with that value; the device may report more);
- ``drifted``: the device had converged, then reported something else.

A desired change restarts the property at ``pending`` (or ``converged`` at once when the
device already reports that value). A drifted property that is reported right again is
``converged`` again. See ``docs/fleet-configurations.md``.

A staged rollout gives a configuration to its targeted devices in slices: a stage's
``percent`` (of the targeted devices) or ``count`` says how many it adds, in an order fixed
by a hash of the configuration id and the device key (so a stage is a stable, unbiased
sample, not the devices whose ids sort first); the last stage adds every device left. The
next stage starts when the converged share of the current stage's devices reaches
``advanceWhenConverged``; the rollout halts when the drifted share passes
``haltWhenDrifted``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import ValidationError

MAX_STAGES = 100


class ConvergenceState(StrEnum):
    PENDING = "pending"
    CONVERGED = "converged"
    DRIFTED = "drifted"


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


def state_after_desired_change(desired: Any, reported: Any) -> ConvergenceState:
    """A property whose desired value just changed."""
    return ConvergenceState.CONVERGED if satisfies(desired, reported) else ConvergenceState.PENDING


def state_after_report(current: ConvergenceState, desired: Any, reported: Any) -> ConvergenceState:
    """A property's state once the device reported (``reported`` is the property's whole
    reported value after the patch, or None when absent).

    >>> state_after_report(ConvergenceState.CONVERGED, 5, 6)
    <ConvergenceState.DRIFTED: 'drifted'>
    >>> state_after_report(ConvergenceState.PENDING, 5, 6)
    <ConvergenceState.PENDING: 'pending'>
    """
    if satisfies(desired, reported):
        return ConvergenceState.CONVERGED
    if current is ConvergenceState.PENDING:
        return ConvergenceState.PENDING
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
    stages: tuple[RolloutStage, ...]
    advance_when_converged: float = 0.9
    halt_when_drifted: float = 0.1

    def wire(self) -> dict[str, Any]:
        return {
            "stages": [s.wire() for s in self.stages],
            "advanceWhenConverged": self.advance_when_converged,
            "haltWhenDrifted": self.halt_when_drifted,
        }


def parse_rollout(raw: object, *, field: str = "rollout") -> RolloutPlan:
    """Validate a rollout as the API takes it::

        {"stages": [{"count": 1}, {"percent": 50}, {"percent": 50}],
         "advanceWhenConverged": 0.9, "haltWhenDrifted": 0.1}

    ``haltWhenDriftedOrFailed`` is accepted as another name of ``haltWhenDrifted``.

    >>> parse_rollout({"stages": [{"count": 2}, {"percent": 100}]}).stages[0]
    RolloutStage(percent=None, count=2)
    """
    if not isinstance(raw, dict):
        raise ValidationError("a rollout is an object with stages", field=field)
    known = {"stages", "advanceWhenConverged", "haltWhenDrifted", "haltWhenDriftedOrFailed"}
    for key in raw:
        if key not in known:
            raise ValidationError(f"unknown rollout field {key!r}", field=f"{field}.{key}")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not 1 <= len(stages_raw) <= MAX_STAGES:
        raise ValidationError(
            f"stages is a list of 1 to {MAX_STAGES} stages", field=f"{field}.stages"
        )
    stages = tuple(_stage(s, f"{field}.stages[{i}]") for i, s in enumerate(stages_raw))
    advance = _fraction(raw.get("advanceWhenConverged", 0.9), f"{field}.advanceWhenConverged")
    halt_key = "haltWhenDrifted" if "haltWhenDrifted" in raw else "haltWhenDriftedOrFailed"
    halt = _fraction(raw.get(halt_key, 0.1), f"{field}.{halt_key}")
    return RolloutPlan(stages, advance, halt)


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
    worst of them: drifted, then pending); ``overridden``: every property it sets is
    another source's (a higher configuration, a manual patch), so it has nothing to judge."""

    devices: int = 0
    pending: int = 0
    converged: int = 0
    drifted: int = 0

    @property
    def judged(self) -> int:
        return self.pending + self.converged + self.drifted


class RolloutDecision(StrEnum):
    WAIT = "wait"
    ADVANCE = "advance"
    HALT = "halt"


def decide(plan: RolloutPlan, counts: StageCounts) -> RolloutDecision:
    """Halt when the drifted share passes the threshold; advance when the converged share
    reaches its one; else wait. Shares are of the stage's devices that have this
    configuration's properties to judge; a stage with none advances (nothing to wait for).

    >>> plan = parse_rollout({"stages": [{"count": 1}, {"count": 1}],
    ...                       "advanceWhenConverged": 0.5, "haltWhenDrifted": 0.2})
    >>> decide(plan, StageCounts(4, pending=2, converged=2)).value
    'advance'
    >>> decide(plan, StageCounts(4, pending=1, converged=2, drifted=1)).value
    'halt'
    """
    judged = counts.judged
    if judged == 0:
        return RolloutDecision.ADVANCE
    if counts.drifted / judged > plan.halt_when_drifted:
        return RolloutDecision.HALT
    if counts.converged / judged >= plan.advance_when_converged:
        return RolloutDecision.ADVANCE
    return RolloutDecision.WAIT


def worst(states: Iterable[ConvergenceState]) -> ConvergenceState | None:
    """A device's state for a configuration: drifted if any property drifted, else
    pending if any is pending, else converged; None when it has none."""
    found = set(states)
    for state in (ConvergenceState.DRIFTED, ConvergenceState.PENDING, ConvergenceState.CONVERGED):
        if state in found:
            return state
    return None
