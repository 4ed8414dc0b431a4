"""Fleet configurations (pure): target conditions, priority merge, applied metrics.

A configuration sets desired properties on every device its target condition matches.
Conditions are JSON over ``tags.<path>`` and ``reported.<path>``::

    {"eq": {"path": "tags.site", "value": "plant-7"}}
    {"in": {"path": "reported.fw", "values": ["1.0", "1.1"]}}
    {"exists": "tags.line"}
    {"and": [c1, c2, ...]}   {"or": [c1, ...]}   {"not": c}

``{"and": []}`` matches every device. When configurations overlap on a key, the higher
priority wins (ties: the smaller id). See ``docs/fleet-configurations.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .convergence import RolloutPlan, RolloutState
from .device_id import DEVICE_ID_PATTERN
from .documents import check_json_depth
from .errors import ValidationError
from .twin import JSON, merge_patch, validate_patch

_ROOTS = ("tags", "reported")
_MISSING = object()


@dataclass(frozen=True)
class Condition:
    """A parsed condition: ``op`` with its operands (``path``, ``value(s)``, children)."""

    op: str
    path: tuple[str, ...] = ()
    value: Any = None
    values: tuple[Any, ...] = ()
    children: tuple[Condition, ...] = ()


def parse_condition(raw: object, *, field: str = "targetCondition") -> Condition:
    """Validate and parse a condition; errors name the offending field path. Its depth is
    checked first: parsing (and matching) recurse once per level."""
    check_json_depth(raw, field=field)
    return _parse(raw, field)


def _parse(raw: object, field: str) -> Condition:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValidationError(
            "a condition is an object with exactly one of eq, in, exists, and, or, not",
            field=field,
        )
    ((op, operand),) = raw.items()
    here = f"{field}.{op}"
    if op in ("and", "or"):
        if not isinstance(operand, list):
            raise ValidationError(f"{op} takes a list of conditions", field=here)
        children = tuple(_parse(c, f"{here}[{i}]") for i, c in enumerate(operand))
        return Condition(op, children=children)
    if op == "not":
        return Condition(op, children=(_parse(operand, here),))
    if op == "exists":
        return Condition(op, path=_path(operand, here))
    if op == "eq":
        if not isinstance(operand, dict) or set(operand) != {"path", "value"}:
            raise ValidationError("eq takes {path, value}", field=here)
        return Condition(op, path=_path(operand["path"], f"{here}.path"), value=operand["value"])
    if op == "in":
        if not isinstance(operand, dict) or set(operand) != {"path", "values"}:
            raise ValidationError("in takes {path, values}", field=here)
        if not isinstance(operand["values"], list):
            raise ValidationError("values must be a list", field=f"{here}.values")
        path = _path(operand["path"], f"{here}.path")
        return Condition(op, path=path, values=tuple(operand["values"]))
    raise ValidationError(f"unknown condition {op!r}", field=field)


def _path(raw: object, field: str) -> tuple[str, ...]:
    if not isinstance(raw, str):
        raise ValidationError("a path is a string like 'tags.site'", field=field)
    parts = tuple(raw.split("."))
    if len(parts) < 2 or parts[0] not in _ROOTS or not all(parts):
        raise ValidationError(
            "a path starts with 'tags.' or 'reported.' and has no empty parts", field=field
        )
    return parts


def _lookup(document: JSON, path: tuple[str, ...]) -> Any:
    node: Any = document
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def matches(condition: Condition, tags: JSON, reported: JSON) -> bool:
    """Whether a device with these tags and reported properties is targeted."""
    if condition.op == "and":
        return all(matches(c, tags, reported) for c in condition.children)
    if condition.op == "or":
        return any(matches(c, tags, reported) for c in condition.children)
    if condition.op == "not":
        return not matches(condition.children[0], tags, reported)
    root = tags if condition.path[0] == "tags" else reported
    found = _lookup(root, condition.path[1:])
    if condition.op == "exists":
        return found is not _MISSING
    if found is _MISSING:
        return False
    if condition.op == "eq":
        return bool(found == condition.value)
    return found in condition.values


@dataclass(frozen=True)
class RolloutStatus:
    """Where a staged rollout stands: its ``state``, the current ``stage`` (0-based), and
    why it halted (``reason``)."""

    plan: RolloutPlan
    state: RolloutState
    stage: int
    reason: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class FleetConfiguration:
    id: str
    target_condition: Condition
    raw_condition: JSON
    desired_properties: JSON
    priority: int
    created_at: datetime
    updated_at: datetime
    rollout: RolloutStatus | None = None

    @property
    def reaches_every_target(self) -> bool:
        """Without a rollout, or once it completed, every targeted device gets it; else
        only the devices its stages admitted."""
        return self.rollout is None or self.rollout.state is RolloutState.COMPLETED


def validate_configuration_id(value: object) -> str:
    if not isinstance(value, str) or not DEVICE_ID_PATTERN.fullmatch(value):
        raise ValidationError("id must be 4-90 characters of 0-9 a-z A-Z - _ .", field="id")
    return value


def validate_desired(raw: object) -> JSON:
    patch = validate_patch(raw, field="desiredProperties")
    if _has_null(patch):
        raise ValidationError(
            "a configuration sets values; remove keys by changing or deleting it",
            field="desiredProperties",
        )
    return patch


def _has_null(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, dict) and any(_has_null(v) for v in value.values())


def by_priority(configs: Iterable[FleetConfiguration]) -> list[FleetConfiguration]:
    """Lowest priority first, so applying in order lets the highest win."""
    return sorted(configs, key=lambda c: (c.priority, _reverse_id(c.id)))


def _reverse_id(value: str) -> tuple[int, ...]:
    # ties: the smaller id wins, so it must come later in the application order
    return tuple(-ord(ch) for ch in value)


def configured_layer(configs: Iterable[FleetConfiguration], tags: JSON, reported: JSON) -> JSON:
    """The desired properties all matching configurations give a device."""
    return configured_layer_with_sources(configs, tags, reported).layer


@dataclass(frozen=True)
class ConfiguredLayer:
    """A device's configured layer and, per top-level key, the configuration that won it
    (``(id, priority)``: the highest-priority matching configuration setting that key)."""

    layer: JSON
    sources: dict[str, tuple[str, int]]


def configured_layer_with_sources(
    configs: Iterable[FleetConfiguration], tags: JSON, reported: JSON
) -> ConfiguredLayer:
    """:func:`configured_layer` with the winner of each top-level key.

    >>> from datetime import UTC, datetime
    >>> def config(cid, desired, priority):
    ...     t = datetime(2026, 1, 1, tzinfo=UTC)
    ...     return FleetConfiguration(cid, parse_condition({"and": []}), {"and": []},
    ...                               desired, priority, t, t)
    >>> configured_layer_with_sources(
    ...     [config("base", {"a": 1, "b": 1}, 0), config("fast", {"a": 2}, 5)], {}, {}
    ... ).sources
    {'a': ('fast', 5), 'b': ('base', 0)}
    """
    layer: JSON = {}
    sources: dict[str, tuple[str, int]] = {}
    for config in by_priority(c for c in configs if matches(c.target_condition, tags, reported)):
        layer = merge_patch(layer, config.desired_properties)
        for key in config.desired_properties:
            sources[key] = (config.id, config.priority)
    return ConfiguredLayer(layer, dict(sorted(sources.items())))


def layer_change(previous: JSON, layer: JSON, desired: JSON) -> JSON:
    """The desired patch moving a device from the ``previous`` configured layer to ``layer``:
    keys only the previous layer set are removed, the layer's values are set where the
    desired document differs. Empty when nothing changes."""
    patch: JSON = {}
    for key, old in previous.items():
        if key not in layer and key in desired:
            patch[key] = None
        elif isinstance(old, dict) and isinstance(layer.get(key), dict):
            current = desired.get(key)
            inner = layer_change(old, layer[key], current if isinstance(current, dict) else {})
            if inner:
                patch[key] = inner
    for key, value in layer.items():
        current = desired.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(current, dict):
            inner = layer_change(previous.get(key) or {}, value, current)
            if inner:
                patch[key] = {**patch.get(key, {}), **inner}
        elif current != value:
            patch[key] = value
    return patch


def _leaves(document: JSON, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in document.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def is_applied(
    config: FleetConfiguration, winners: Iterable[FleetConfiguration], reported: JSON
) -> bool:
    """Whether the device reported back every value this configuration wins on (keys a
    higher-priority matching configuration overrides are not this one's to check)."""
    order = by_priority(winners)
    above = order[order.index(config) + 1 :] if config in order else []
    taken = {path for other in above for path in _leaves(other.desired_properties)}
    for path, value in _leaves(config.desired_properties).items():
        if any(path[: len(t)] == t or t[: len(path)] == path for t in taken):
            continue
        if _lookup(reported, path) != value:
            return False
    return True
