"""Secrets: random, prefixed by kind, stored hashed, compared in constant time.

Every secret carries at least 256 bits of entropy, so a fast hash (SHA-256) is the right
tool: there is nothing for a slow password hash to protect against, and authentication
stays cheap enough for thousands of token refreshes a second. Secrets are found by their
hash through a unique index, never compared as plain text: whatever the lookup's timing
reveals is about a SHA-256 digest, which tells an attacker nothing about the secret.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from enum import StrEnum


class SecretKind(StrEnum):
    """Prefixes make a leaked secret recognisable (and scannable) by kind."""

    PROVISIONING_TOKEN = "pt"
    REGISTRATION_TOKEN = "rt"
    MQTT_PASSWORD = "mp"
    API_KEY = "ak"


class Role(StrEnum):
    """What an API key may do: admin everything; technician operations and reading devices."""

    ADMIN = "admin"
    TECHNICIAN = "technician"


def new_secret(kind: SecretKind) -> str:
    """A fresh secret, e.g. ``pt_3q…``: 32 random bytes, URL-safe."""
    return f"{kind.value}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """The stored form of a secret (hex SHA-256)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def has_kind(secret: str, kind: SecretKind) -> bool:
    return secret.startswith(f"{kind.value}_")


def new_id() -> str:
    """A GUID for a stored object."""
    return str(uuid.uuid4())
