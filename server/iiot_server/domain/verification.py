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
CODE_PATTERN = f"^[- ]*([{ALPHABET}{ALPHABET.lower()}][- ]*){{{CODE_LENGTH}}}$"
"""What :func:`normalize_verification_code` accepts, as a regular expression (for the
OpenAPI document)."""


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

    ``capacity`` requests at once, refilled at ``rate`` per second. Used for code
    look-ups and for the device API (``services.limits``). At most ``max_keys`` buckets
    are kept: past that, buckets that have refilled (idle keys) are forgotten, which
    changes no decision; only if none has, all are (lenient, never stricter).

    >>> from datetime import UTC, datetime, timedelta
    >>> limiter, t = RateLimiter(capacity=2, rate=0.5), datetime(2026, 1, 1, tzinfo=UTC)
    >>> limiter.check("k", t); limiter.check("k", t)
    >>> try:
    ...     limiter.check("k", t)
    ... except TooManyRequests as refused:
    ...     print(refused.retry_after)
    2.0
    >>> limiter.check("k", t + timedelta(seconds=2))
    """

    capacity: float = 20.0
    rate: float = 1.0
    max_keys: int = 10_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def check(
        self,
        key: str,
        now: datetime,
        *,
        what: str = "verification code lookups",
        field: str | None = "verificationCode",
    ) -> None:
        """Take one token for ``key`` or raise :class:`TooManyRequests` (its
        ``retry_after`` is when the next token is there) naming ``what`` and ``field``."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        elapsed = max(0.0, (now - bucket.updated).total_seconds())
        bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise TooManyRequests(
                f"too many {what}; slow down",
                retry_after=(1.0 - bucket.tokens) / self.rate,
                field=field,
            )
        bucket.tokens -= 1.0

    def _forget_idle(self, now: datetime) -> None:
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + max(0.0, (now - b.updated).total_seconds()) * self.rate >= self.capacity
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # bound memory
            self._buckets.clear()
