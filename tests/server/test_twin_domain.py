import pytest
from iiot_server.domain.errors import ValidationError
from iiot_server.domain.twin import changes_since, compose_patches, merge_patch, validate_patch

# RFC 7396 appendix A test vectors (object-rooted ones)
RFC_7396 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({"a": "foo"}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC_7396)
def test_merge_patch_rfc_vectors(target: dict, patch: dict, expected: dict) -> None:
    assert merge_patch(target, patch) == expected


DOCS = [{}, {"a": 1}, {"a": {"x": 1, "y": 2}, "b": [1]}, {"a": "s", "c": {"d": {"e": 1}}}]
PATCHES = [
    {"a": None},
    {"a": {"x": None, "z": 3}},
    {"b": 2, "c": None},
    {"a": 5},
    {"c": {"d": {"f": 2}}},
]


@pytest.mark.parametrize("doc", DOCS)
def test_composed_patch_equals_sequential_application(doc: dict) -> None:
    for first in PATCHES:
        for second in PATCHES:
            sequential = merge_patch(merge_patch(doc, first), second)
            composed = compose_patches(first, second)
            if composed is None:  # not expressible: the caller falls back to the full document
                assert isinstance(second.get(next(iter(second))), dict) or any(
                    isinstance(v, dict) and k in first for k, v in second.items()
                )
                continue
            assert merge_patch(doc, composed) == sequential


def test_changes_since_and_pruned_history() -> None:
    history = [(1, {"a": 1}), (2, {"b": 2}), (3, {"a": None})]
    assert changes_since(history, 1, 3) == {"b": 2, "a": None}
    assert changes_since(history, 3, 3) == {}
    assert changes_since(history[1:], 0, 3) is None  # version 1 was pruned
    assert changes_since(history, 4, 3) is None
    assert changes_since([(1, {"a": None}), (2, {"a": {"x": 1}})], 0, 2) is None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ([], "desired"),
        ({"$version": 1}, "desired.$version"),
        ({"": 1}, "desired."),
        ({"a": {"$x": 1}}, "desired.a.$x"),
    ],
)
def test_bad_patches_name_the_field(patch: object, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_patch(patch, field="desired")
    assert err.value.field == field


def test_depth_limit() -> None:
    deep: dict = {}
    node = deep
    for _ in range(12):
        node["k"] = {}
        node = node["k"]
    with pytest.raises(ValidationError, match="nest"):
        validate_patch(deep, field="desired")
