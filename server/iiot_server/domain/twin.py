"""Device twin documents (pure): JSON merge-patch (RFC 7396), versions, catch-up patches.

A twin has three sections: desired (platform → device), reported (device → platform) and
tags (platform only). Each is a JSON object with a version that grows by one per patch.
Keys starting with ``$`` are reserved (``$version`` travels with documents on the wire).
"""

from __future__ import annotations

import json
from typing import Any

from .documents import check_json_depth
from .errors import ValidationError

JSON = dict[str, Any]
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_DEPTH = 10


def validate_patch(patch: object, *, field: str) -> JSON:
    """A merge patch: a JSON object without reserved (``$``) keys, bounded in size and
    depth (objects and arrays both count: ``[[[...]]]`` is as deep as ``{"a":{"a":...}}``)."""
    if not isinstance(patch, dict):
        raise ValidationError("a patch must be a JSON object", field=field)
    check_json_depth(patch, field=field, max_depth=MAX_DEPTH)  # before any recursion
    _check_keys(patch, field)
    if len(json.dumps(patch, separators=(",", ":"))) > MAX_DOCUMENT_BYTES:
        raise ValidationError(f"a patch is at most {MAX_DOCUMENT_BYTES} bytes", field=field)
    return patch


def _check_keys(value: object, path: str) -> None:
    """Property names of the document's objects (arrays are values: not looked into)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key or key.startswith("$"):
                raise ValidationError(
                    f"property names must be non-empty and not start with '$': {key!r}",
                    field=f"{path}.{key}",
                )
            _check_keys(item, f"{path}.{key}")


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7396: ``patch`` applied to ``target`` (a null removes a key). Returns a new dict.

    >>> merge_patch({"a": 1, "b": {"c": 2}}, {"a": None, "b": {"d": 3}})
    {'b': {'c': 2, 'd': 3}}
    """
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = value
    return result


def compose_patches(first: JSON, second: JSON) -> JSON | None:
    """One patch equivalent to applying ``first`` then ``second`` (nulls are kept: they must
    still remove keys from whatever the holder has), or None when no single merge patch
    can say it: removing (or overwriting with a scalar) a key and then setting an object
    there would, as one patch, merge into the holder's old object instead of replacing it.

    >>> compose_patches({"a": 1, "b": None}, {"a": None, "c": {"d": 1}})
    {'a': None, 'b': None, 'c': {'d': 1}}
    >>> compose_patches({"a": None}, {"a": {"x": 1}}) is None
    True
    """
    result = dict(first)
    for key, value in second.items():
        before = result.get(key, _ABSENT)
        if isinstance(value, dict) and isinstance(before, dict):
            combined = compose_patches(before, value)
            if combined is None:
                return None
            result[key] = combined
        elif isinstance(value, dict) and before is not _ABSENT:
            return None
        else:
            result[key] = value
    return result


_ABSENT = object()


def changes_since(history: list[tuple[int, JSON]], version: int, current: int) -> JSON | None:
    """The combined patch taking a holder of ``version`` to ``current``, from a history of
    ``(version_after_patch, patch)``; None if the history no longer reaches back that far."""
    if version > current:
        return None
    needed = [(v, p) for v, p in history if v > version]
    if len(needed) != current - version:
        return None  # pruned (or a gap): the caller sends the full document
    combined: JSON | None = {}
    for _, patch in sorted(needed, key=lambda item: item[0]):
        combined = compose_patches(combined, patch) if combined is not None else None
    return combined  # None: not expressible as one patch; send the full document


def with_version(document: JSON, version: int) -> JSON:
    """The wire form: the document with its ``$version``."""
    return {**document, "$version": version}
