"""Device ID rules: 4–90 characters of ``0-9 a-z A-Z - _ .``, unique per workspace."""

from __future__ import annotations

import re

from .errors import ValidationError

DEVICE_ID_PATTERN = re.compile(r"[0-9A-Za-z_.\-]{4,90}")


def validate_device_id(value: object, *, field: str = "deviceId", what: str = "Device ID") -> str:
    """Return ``value`` if it is a valid Device ID, else raise :class:`ValidationError`
    (naming ``field``, and ``what`` the value is: workspace ids follow the same rules).

    >>> validate_device_id("pump-0001")
    'pump-0001'
    """
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string", field=field)
    if not DEVICE_ID_PATTERN.fullmatch(value):
        raise ValidationError(
            f"{what} {value[:100]!r} must be 4-90 characters of 0-9 a-z A-Z - _ .",
            field=field,
        )
    return value
