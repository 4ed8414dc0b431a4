from datetime import UTC, datetime

import pytest
from iiot_server.domain.errors import ValidationError
from iiot_server.domain.fleet import (
    FleetConfiguration,
    configured_layer,
    is_applied,
    layer_change,
    matches,
    parse_condition,
    validate_desired,
)
from iiot_server.domain.twin import merge_patch

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = {"site": "plant-7", "line": 3, "zone": {"name": "north"}}
REPORTED = {"fw": "1.1", "temperature": 5.0}


def config(cid: str, cond: dict, desired: dict, priority: int = 0) -> FleetConfiguration:
    return FleetConfiguration(cid, parse_condition(cond), cond, desired, priority, NOW, NOW)


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"eq": {"path": "tags.site", "value": "plant-7"}}, True),
        ({"eq": {"path": "tags.site", "value": "plant-8"}}, False),
        ({"eq": {"path": "tags.zone.name", "value": "north"}}, True),
        ({"in": {"path": "reported.fw", "values": ["1.0", "1.1"]}}, True),
        ({"in": {"path": "reported.fw", "values": ["2.0"]}}, False),
        ({"exists": "tags.line"}, True),
        ({"exists": "reported.line"}, False),
        ({"and": [{"exists": "tags.line"}, {"eq": {"path": "reported.fw", "value": "1.1"}}]}, True),
        ({"and": [{"exists": "tags.line"}, {"eq": {"path": "reported.fw", "value": "9"}}]}, False),
        ({"or": [{"exists": "tags.nope"}, {"eq": {"path": "tags.line", "value": 3}}]}, True),
        ({"not": {"exists": "tags.nope"}}, True),
        ({"and": []}, True),
        ({"or": []}, False),
    ],
)
def test_conditions(cond: dict, expected: bool) -> None:
    assert matches(parse_condition(cond), TAGS, REPORTED) is expected


@pytest.mark.parametrize(
    ("cond", "field"),
    [
        ({}, "targetCondition"),
        ({"eq": 1}, "targetCondition.eq"),
        ({"eq": {"path": "site", "value": 1}}, "targetCondition.eq.path"),
        ({"eq": {"path": "desired.x", "value": 1}}, "targetCondition.eq.path"),
        ({"in": {"path": "tags.x", "values": "a"}}, "targetCondition.in.values"),
        ({"and": [{"exists": "tags.a"}, {"bogus": 1}]}, "targetCondition.and[1]"),
        ({"exists": "tags..a"}, "targetCondition.exists"),
    ],
)
def test_bad_conditions_name_the_field(cond: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_condition(cond)
    assert err.value.field == field


def test_higher_priority_wins_per_key() -> None:
    low = config("base-config", {"and": []}, {"interval": 60, "mode": {"eco": True, "fan": 1}}, 1)
    high = config(
        "plant7-override",
        {"eq": {"path": "tags.site", "value": "plant-7"}},
        {"interval": 10, "mode": {"fan": 3}},
        5,
    )
    other = config(
        "plant8-only", {"eq": {"path": "tags.site", "value": "plant-8"}}, {"interval": 1}, 9
    )
    assert configured_layer([high, low, other], TAGS, REPORTED) == {
        "interval": 10,
        "mode": {"eco": True, "fan": 3},
    }


def test_equal_priorities_break_ties_by_id() -> None:
    a = config("aaaa", {"and": []}, {"x": "a"}, 1)
    b = config("bbbb", {"and": []}, {"x": "b"}, 1)
    assert configured_layer([a, b], {}, {}) == {"x": "a"}
    assert configured_layer([b, a], {}, {}) == {"x": "a"}


def test_layer_change_sets_and_removes_only_what_the_layer_owns() -> None:
    desired = {"interval": 60, "manual": True, "mode": {"eco": True, "fan": 1}}
    previous = {"interval": 60, "mode": {"eco": True, "fan": 1}}
    layer = {"interval": 10, "mode": {"fan": 1}}
    patch = layer_change(previous, layer, desired)
    assert patch == {"interval": 10, "mode": {"eco": None}}
    assert merge_patch(desired, patch) == {"interval": 10, "manual": True, "mode": {"fan": 1}}
    assert layer_change(layer, layer, merge_patch(desired, patch)) == {}


def test_applied_counts_only_keys_a_configuration_wins() -> None:
    low = config("base-config", {"and": []}, {"interval": 60, "eco": True}, 1)
    high = config("fast-config", {"and": []}, {"interval": 10}, 5)
    reported = {"interval": 10, "eco": True}
    assert is_applied(high, [low, high], reported)
    assert is_applied(low, [low, high], reported)  # interval is high's, eco matches
    assert not is_applied(low, [low, high], {"interval": 10})


def test_desired_values_must_not_be_null() -> None:
    with pytest.raises(ValidationError) as err:
        validate_desired({"a": {"b": None}})
    assert err.value.field == "desiredProperties"
