"""Verification codes after RFC 8628 §6.1, and the rate limit on looking them up.

8 characters from a base-20 alphabet without vowels (no accidental words) and without
easily confused characters, shown as ``XXXX-XXXX`` and matched case-insensitively,
ignoring dashes and spaces. 20**8 ≈ 2.6e10 codes: with lookups rate-limited, guessing an
open operation's code is impractical.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime

from .errors import TooManyRequests, ValidationError

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
CODE_LENGTH = 8


def new_verification_code() -> str:
    """A fresh random code in display form, e.g. ``'WDJB-MJHT'``."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return format_verification_code(raw)


def format_verification_code(normalized: str) -> str:
    """``'WDJBMJHT'`` → ``'WDJB-MJHT'``."""
    return f"{normalized[:4]}-{normalized[4:]}"


def normalize_verification_code(value: str, *, field: str = "verificationCode") -> str:
    """Canonical form of what a person typed: upper case, no dashes or spaces.

    >>> normalize_verification_code("wdjb-mjht")
    'WDJBMJHT'
    """
    normalized = "".join(ch for ch in value.upper() if ch not in "- ")
    if len(normalized) != CODE_LENGTH or any(ch not in ALPHABET for ch in normalized):
        raise ValidationError(
            f"verification code must be {CODE_LENGTH} characters of {ALPHABET} "
            "(dashes and case ignored)",
            field=field,
        )
    return normalized


@dataclass
class _Bucket:
    tokens: float
    updated: datetime


@dataclass
class RateLimiter:
    """Token bucket per key, fed with times from the injected clock (no I/O).

    ``capacity`` lookups at once, refilled at ``rate`` per second.
    """

    capacity: float = 20.0
    rate: float = 1.0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def check(self, key: str, now: datetime) -> None:
        """Take one token for ``key`` or raise :class:`TooManyRequests`."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:  # bound memory: forget idle keys
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        elapsed = max(0.0, (now - bucket.updated).total_seconds())
        bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise TooManyRequests(
                "too many verification code lookups; slow down",
                retry_after=(1.0 - bucket.tokens) / self.rate,
                field="verificationCode",
            )
        bucket.tokens -= 1.0
