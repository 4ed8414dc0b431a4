"""Bounds on JSON documents from clients (pure): one depth check, objects and arrays alike.

JSON decoders (msgspec, the standard library) recurse once per nesting level and raise
``RecursionError`` near Python's limit of 1000 frames (measured: a body nested 980 deep
crashed the init handler with a 500), and so does any recursive code of ours that walks a
document. Every document a client sends is therefore checked here, without recursion,
before anything recursive sees it; the decoders' own failures (too deep, invalid UTF-8)
become :class:`ValidationError` naming the field.

>>> check_json_depth({"a": [[1]]}, field="d", max_depth=4)
>>> check_json_depth({"a": [[[1]]]}, field="d", max_depth=4)
Traceback (most recent call last):
...
iiot_server.domain.errors.ValidationError: documents nest at most 4 levels (field: d.a[0][0][0])
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ValidationError

MAX_JSON_DEPTH = 32
"""Nesting levels (objects and arrays; the document itself is level 1, a scalar inside
counts too) any request body may have: far beyond what a real document needs, far below
the ~1000 where decoders and recursive code fail. The twin is tighter (``twin.MAX_DEPTH``)."""

_PATH_SEGMENTS = 12  # a field path in an error is cut here: enough to find the spot


def check_json_depth(value: object, *, field: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise :class:`ValidationError` (naming the path) if ``value`` nests deeper than
    ``max_depth`` levels. Iterative: safe on any depth a decoder produced."""
    stack: list[tuple[object, str, int]] = [(value, field, 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > max_depth:
            raise ValidationError(f"documents nest at most {max_depth} levels", field=path)
        if isinstance(node, dict):
            stack.extend((item, _join(path, str(key)), depth + 1) for key, item in node.items())
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node))


def decode_json_document(raw: bytes | str, *, field: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``raw`` decoded as JSON and checked by :func:`check_json_depth`; every failure
    (not JSON, invalid UTF-8, too deep for the decoder) is a :class:`ValidationError`."""
    try:
        value = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise invalid_utf8(raw, exc, field=field) from None
    except RecursionError:
        raise too_deep(raw, max_depth, field=field) from None
    except ValueError as exc:
        raise ValidationError(f"not JSON: {exc}", field=field) from None
    check_json_depth(value, field=field, max_depth=max_depth)
    return value


def invalid_utf8(raw: bytes | str, exc: UnicodeDecodeError, *, field: str = "") -> ValidationError:
    """The error for a body with invalid UTF-8, naming the member that holds it."""
    position = exc.start
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as whole:  # the offset in the body, not in one string
            position = whole.start
    path = json_path_at(raw, stop=position)
    return ValidationError(
        f"invalid UTF-8 at byte {position} of the JSON body", field=_join(field, path) or "body"
    )


def too_deep(raw: bytes | str, max_depth: int, *, field: str = "") -> ValidationError:
    """The error for a body too deep for the decoder, naming where it gets too deep."""
    path = json_path_at(raw, deeper_than=max_depth)
    return ValidationError(
        f"documents nest at most {max_depth} levels", field=_join(field, path) or "body"
    )


def json_path_at(
    raw: bytes | str, *, stop: int | None = None, deeper_than: int | None = None
) -> str:
    """The member path (``a.b[2].c``) in raw, possibly broken, JSON text at byte ``stop``
    or where nesting first exceeds ``deeper_than`` levels. A plain scan (no decoding, no
    recursion), used only to name the field of a body the decoder refused."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    frames: list[list[Any]] = []  # [kind, key or index]; kind is "{" or "["
    expect_key = False
    i, end = 0, len(data) if stop is None else min(stop, len(data))
    while i < end:
        c = data[i]
        if c == 0x22:  # a string: a key when an object expects one
            j = i + 1
            while j < len(data) and data[j] != 0x22:
                j += 2 if data[j] == 0x5C else 1
            if j >= end:
                break  # ``stop`` is inside this string
            if expect_key and frames:
                frames[-1][1] = data[i + 1 : j].decode("utf-8", "replace")
                expect_key = False
            i = j + 1
            continue
        if c in (0x7B, 0x5B):  # { [
            frames.append(["{", None] if c == 0x7B else ["[", 0])
            expect_key = c == 0x7B
            if deeper_than is not None and len(frames) > deeper_than:
                break
        elif c in (0x7D, 0x5D):  # } ]
            if frames:
                frames.pop()
            expect_key = False
        elif c == 0x2C and frames:  # ,
            if frames[-1][0] == "[":
                frames[-1][1] += 1
            else:
                expect_key = True
        i += 1
    path = ""
    for kind, label in frames[:_PATH_SEGMENTS]:
        if kind == "[":
            path += f"[{label}]"
        elif label is not None:
            path = _join(path, label)
    return path


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key
