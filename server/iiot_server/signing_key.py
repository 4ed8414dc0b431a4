"""The platform's SAS signing key: the one secret the IoT Hub dialect's per-device keys are
derived from (``iiot_server.domain.sas``), kept outside the database.

``IIOT_SAS_SIGNING_KEY`` (Settings.sas_signing_key) gives it; otherwise ``serve`` and
``Platform`` keep it in ``<data dir>/sas-signing.key`` (made at first start, 0600), so
connection strings outlive a restart; a platform with neither makes one per process (its
devices register again after a restart, as Spotflow's SDK does on a refused CONNECT).
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from .domain.errors import SettingsError

KEY_FILE = "sas-signing.key"
KEY_BYTES = 32


def new_signing_key() -> str:
    """A fresh key, Base64url (32 random bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def decode_signing_key(text: str) -> bytes:
    """The key's bytes; refuses one too short to be a key (fewer than 32 bytes).

    >>> len(decode_signing_key(new_signing_key()))
    32
    """
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError:
        raw = b""
    if len(raw) < KEY_BYTES:
        raise SettingsError(
            "IIOT_SAS_SIGNING_KEY (sas_signing_key) must be Base64url of at least 32 random "
            "bytes, e.g. python -c 'import secrets,base64;"
            "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())'"
        )
    return raw


def signing_key_in(data_dir: Path) -> str:
    """The key kept in ``data_dir``, made (0600) on first call."""
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = new_signing_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key
