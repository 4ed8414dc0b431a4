"""Workspaces: isolated tenants of one platform, and the one key a device is stored under.

A Device ID is unique per workspace, so storage, the broker's live sessions, the ACL and
MQTT topics all use the *device key*: the bare Device ID in workspace ``default`` (so data
from before workspaces keeps its keys) and ``<workspace>:<device>`` in any other. A Device
ID never contains ``:`` (``device_id.DEVICE_ID_PATTERN``), so the key splits back
unambiguously, and it is the same ``<workspace>:<device>`` form the IoT Hub dialect's client
id has: a device's MQTT client id and topics are its key, and the broker's rule "client id
equals the topic's device id" keeps workspaces apart without a rule of its own.
"""

from __future__ import annotations

from .device_id import validate_device_id
from .errors import ValidationError

DEFAULT_WORKSPACE = "default"
"""The workspace every route outside ``/api/v1/workspaces/{id}/…`` acts on."""

SEPARATOR = ":"

PLATFORM_WIDE = "*"
"""The workspace of an API key that acts in every workspace and on ``/api/v1/workspaces``:
the bootstrap admin's, keys made before workspaces and keys made under ``/api/v1/api-keys``."""


def validate_workspace_id(value: object, *, field: str = "id") -> str:
    """Return ``value`` if it is a valid workspace id (a Device ID's character rules: 4-90
    of ``0-9 a-z A-Z - _ .``), else raise :class:`ValidationError` naming ``field``.

    >>> validate_workspace_id("class-2026")
    'class-2026'
    >>> validate_workspace_id("a:b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    iiot_server.domain.errors.ValidationError: workspace id 'a:b' must be ... (field: id)
    """
    return validate_device_id(value, field=field, what="workspace id")


def device_key(workspace_id: str, device_id: str, *, field: str = "deviceId") -> str:
    """The key a device is stored, connected and addressed under. A ``device_id`` holding
    the separator is refused (:class:`ValidationError` naming ``field``): in ``default``
    ``site-a:pump-0001`` would otherwise be another workspace's device.

    >>> device_key("default", "pump-0001")
    'pump-0001'
    >>> device_key("site-a", "pump-0001")
    'site-a:pump-0001'
    >>> device_key("default", "site-a:pump-0001")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    iiot_server.domain.errors.ValidationError: Device ID 'site-a:pump-0001' cannot hold ':' ...
    """
    if SEPARATOR in device_id:
        raise ValidationError(f"Device ID {device_id[:100]!r} cannot hold ':'", field=field)
    if workspace_id == DEFAULT_WORKSPACE:
        return device_id
    return f"{workspace_id}{SEPARATOR}{device_id}"


def split_device_key(key: str) -> tuple[str, str]:
    """``(workspace_id, device_id)`` of a device key (the inverse of :func:`device_key`).

    >>> split_device_key("pump-0001")
    ('default', 'pump-0001')
    >>> split_device_key("site-a:pump-0001")
    ('site-a', 'pump-0001')
    >>> split_device_key(device_key("default", "x1234"))
    ('default', 'x1234')
    """
    workspace_id, separator, device_id = key.partition(SEPARATOR)
    if not separator:
        return DEFAULT_WORKSPACE, key
    return workspace_id, device_id


def bare_device_id(key: str) -> str:
    """The Device ID a key names, without its workspace.

    >>> bare_device_id("site-a:pump-0001")
    'pump-0001'
    """
    return split_device_key(key)[1]


def named_device(key: str) -> str:
    """A device key as an error message names it: the Device ID, and its workspace outside
    ``default``.

    >>> named_device("pump-0001"), named_device("site-a:pump-0001")
    ("'pump-0001'", "'pump-0001' in workspace 'site-a'")
    """
    workspace_id, device_id = split_device_key(key)
    if workspace_id == DEFAULT_WORKSPACE:
        return repr(device_id)
    return f"{device_id!r} in workspace {workspace_id!r}"


def key_prefix(workspace_id: str) -> str | None:
    """The prefix every device key of a workspace starts with; None for ``default``, whose
    keys are exactly those without a separator.

    >>> key_prefix("site-a"), key_prefix("default")
    ('site-a:', None)
    """
    return None if workspace_id == DEFAULT_WORKSPACE else f"{workspace_id}{SEPARATOR}"
