"""The device's local SQLite database: credentials, the outbox, pending reported
properties and the last desired properties.

One connection, guarded by a lock, in WAL mode with SQLite's exclusive locking mode, so
a second process (or a second client in this one) opening the same file gets
:class:`DatabaseInUse` instead of interleaving writes. Every write commits before it
returns: ``synchronous=NORMAL`` makes a commit survive a crash of the process (the
default), ``synchronous=FULL`` also a power loss (``durability="power"``, at the cost of
an fsync per message).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import DatabaseInUse, OutboxFull

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    message_id TEXT,
    props TEXT,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS reported (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    patch TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    properties TEXT NOT NULL,
    payload BLOB NOT NULL,
    taken INTEGER NOT NULL DEFAULT 0
);
"""
INBOX_IDS_KEPT = 1000
"""Ids of cloud-to-device messages already taken, kept to drop a redelivery (the platform
sends again when a PUBACK was lost): the newest 1,000, far more than the 50 a device may
have waiting."""


class OverflowPolicy(StrEnum):
    """What :meth:`LocalStore.add_message` does when the outbox is full."""

    REFUSE = "refuse"
    """raise :class:`OutboxFull`; nothing stored is ever dropped (the default)"""
    DROP_OLDEST = "drop_oldest"
    """delete the oldest stored messages to make room (counted in ``messages_dropped``)"""


class Durability(StrEnum):
    CRASH = "crash"
    """a returned ``send_message`` survives the process being killed (WAL, synchronous=NORMAL)"""
    POWER = "power"
    """... and a power loss (synchronous=FULL: an fsync per commit)"""


@dataclass(frozen=True)
class OutboxLimits:
    max_messages: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    policy: OverflowPolicy = OverflowPolicy.REFUSE

    def __post_init__(self) -> None:
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {self.max_messages}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {self.max_bytes}")
        object.__setattr__(self, "policy", OverflowPolicy(self.policy))


TOKEN_KEY = "rt"
"""The ``state`` row that holds the Registration Token (:class:`TokenState` as JSON)."""


@dataclass(frozen=True)
class TokenState:
    """The Registration Token the device holds.

    Stored under :data:`TOKEN_KEY` as a JSON object with exactly these four keys, in this
    order: the format every device database has had, so databases written by earlier
    SDK versions read back unchanged (and tools that read the row keep working).

    >>> state = TokenState("rt_x", 7200.0, 1_000.0, "pump-7")
    >>> state.to_json()
    {'token': 'rt_x', 'lifetime': 7200.0, 'obtained_at': 1000.0, 'device_id': 'pump-7'}
    >>> TokenState.from_json(state.to_json()) == state, state.expires_at, state.refresh_at
    (True, 8200.0, 4600.0)
    """

    token: str
    lifetime: float | None
    """seconds from ``obtained_at``; None = never expires"""
    obtained_at: float
    """the device clock's POSIX time when the device received the token"""
    device_id: str

    @property
    def expires_at(self) -> float | None:
        """POSIX time (device clock) the token stops working; None if never."""
        return None if self.lifetime is None else self.obtained_at + self.lifetime

    @property
    def refresh_at(self) -> float | None:
        """POSIX time (device clock) the SDK refreshes it: at half its lifetime."""
        return None if self.lifetime is None else self.obtained_at + self.lifetime / 2

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "lifetime": self.lifetime,
            "obtained_at": self.obtained_at,
            "device_id": self.device_id,
        }

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> TokenState:
        lifetime = stored["lifetime"]
        return cls(
            str(stored["token"]),
            None if lifetime is None else float(lifetime),
            float(stored["obtained_at"]),
            str(stored["device_id"]),
        )


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    stream: str
    message_id: str
    payload: bytes
    props: str | None = None
    """further topic properties (batch, seq, last), URL-encoded"""


class LocalStore:
    """The device's durable state. Thread-safe."""

    def __init__(
        self,
        path: str | Path,
        *,
        limits: OutboxLimits | None = None,
        durability: Durability | str = Durability.CRASH,
    ) -> None:
        self.path = Path(path)
        self.limits = limits or OutboxLimits()
        self.durability = Durability(durability)
        self._lock = threading.Lock()
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=0
        )
        try:
            self._conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._conn.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if self.durability is Durability.POWER else "NORMAL"
            self._conn.execute(f"PRAGMA synchronous={sync}")
            self._conn.execute("PRAGMA cache_size=-256")  # KiB: idle clients stay small
            self._conn.execute("BEGIN EXCLUSIVE")  # take the lock now, and keep it
            self._conn.executescript(SCHEMA)  # commits
        except sqlite3.OperationalError as exc:
            self._conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise DatabaseInUse(
                    f"{path} is in use by another process or client; a device database "
                    "has one owner at a time"
                ) from exc
            raise
        self.instance = self.get("instance") or self._new_instance()
        count, size = self._conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox"
        ).fetchone()
        self._count, self._bytes = int(count), int(size)
        self._reported = int(self._conn.execute("SELECT count(*) FROM reported").fetchone()[0])
        self.messages_dropped = 0

    def _new_instance(self) -> str:
        instance = secrets.token_hex(6)
        self.set("instance", instance)
        return instance

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # key/value state --------------------------------------------------------------

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def registration_token(self) -> TokenState | None:
        """The stored Registration Token, None if the device holds none."""
        stored = self.get(TOKEN_KEY)
        return None if stored is None else TokenState.from_json(stored)

    def set(self, key: str, value: Any) -> None:
        self.set_many({key: value})

    def set_many(self, values: dict[str, Any], *, delete: Sequence[str] = ()) -> None:
        """Set (None deletes) and delete keys in one transaction."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                for key, value in values.items():
                    if value is None:
                        self._conn.execute("DELETE FROM state WHERE key = ?", (key,))
                    else:
                        self._conn.execute(
                            "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                            (key, json.dumps(value)),
                        )
                for key in delete:
                    self._conn.execute("DELETE FROM state WHERE key = ?", (key,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # outbox -----------------------------------------------------------------------

    @property
    def pending_messages(self) -> int:
        return self._count

    def add_message(
        self, stream: str, payload: bytes, message_id: str | None, props: str | None = None
    ) -> int:
        """Store a message durably (committed on return); its sequence number."""
        size = len(payload)
        if size > self.limits.max_bytes:
            raise OutboxFull(
                f"a {size}-byte message exceeds the outbox's whole capacity "
                f"({self.limits.max_bytes} bytes)"
            )
        with self._lock:
            if (
                self._count + 1 > self.limits.max_messages
                or self._bytes + size > self.limits.max_bytes
            ):
                if self.limits.policy is OverflowPolicy.REFUSE:
                    raise OutboxFull(
                        f"outbox full ({self._count} messages, {self._bytes} bytes; limits "
                        f"{self.limits.max_messages} messages, {self.limits.max_bytes} bytes)"
                    )
                self._drop_oldest(size)
            cur = self._conn.execute(
                "INSERT INTO outbox (stream, message_id, props, payload) VALUES (?, ?, ?, ?)",
                (stream, message_id, props, payload),
            )
            self._count += 1
            self._bytes += size
            return int(cur.lastrowid or 0)

    def _drop_oldest(self, room: int) -> None:
        self._conn.execute("BEGIN")
        try:
            while self._count and (
                self._count + 1 > self.limits.max_messages
                or self._bytes + room > self.limits.max_bytes
            ):
                row = self._conn.execute(
                    "SELECT seq, length(payload) FROM outbox ORDER BY seq LIMIT 1"
                ).fetchone()
                self._conn.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
                self._count -= 1
                self._bytes -= int(row[1])
                self.messages_dropped += 1
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def next_messages(self, after: int, limit: int) -> list[StoredMessage]:
        """Stored messages with ``seq > after``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, stream, message_id, payload, props FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        # a message without an id of its own gets one that never repeats in this database
        # (AUTOINCREMENT never reuses a seq), so redelivery is stored once by the platform
        return [
            StoredMessage(seq, stream, mid or f"{self.instance}.{seq}", bytes(payload), props)
            for seq, stream, mid, payload, props in rows
        ]

    def delete_messages(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                removed = 0
                freed = 0
                for seq in seqs:
                    row = self._conn.execute(
                        "DELETE FROM outbox WHERE seq = ? RETURNING length(payload)", (seq,)
                    ).fetchone()
                    if row is not None:
                        removed += 1
                        freed += int(row[0])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._count -= removed
            self._bytes -= freed

    # reported properties ------------------------------------------------------------

    def add_reported(self, patch: dict[str, Any]) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO reported (patch) VALUES (?)",
                (json.dumps(patch, separators=(",", ":")),),
            )
            self._reported += 1
            return int(cur.lastrowid or 0)

    def next_reported(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, patch FROM reported WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [(int(seq), patch.encode()) for seq, patch in rows]

    def delete_reported(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                removed = sum(
                    self._conn.execute("DELETE FROM reported WHERE seq = ?", (s,)).rowcount
                    for s in seqs
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._reported -= removed

    @property
    def pending_reported(self) -> int:
        return self._reported

    # cloud-to-device inbox ----------------------------------------------------------

    def add_inbox(self, message_id: str, properties: dict[str, str], payload: bytes) -> bool:
        """Keep a cloud-to-device message until the application takes it; False for a
        message id already kept or taken (a redelivery)."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO inbox (message_id, properties, payload) VALUES (?, ?, ?)",
                (message_id, json.dumps(properties, separators=(",", ":")), payload),
            )
            return cur.rowcount == 1

    def take_inbox(self) -> tuple[str, dict[str, str], bytes] | None:
        """The oldest message not yet taken, marked taken (old taken ids pruned), or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT seq, message_id, properties, payload FROM inbox WHERE taken = 0"
                " ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            seq, message_id, properties, payload = row
            self._conn.execute("BEGIN")
            try:
                self._conn.execute(
                    "UPDATE inbox SET taken = 1, payload = x'' WHERE seq = ?", (seq,)
                )
                self._conn.execute(
                    "DELETE FROM inbox WHERE taken = 1 AND seq <= ?", (seq - INBOX_IDS_KEPT,)
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return str(message_id), json.loads(properties), bytes(payload)

    @property
    def pending_inbox(self) -> int:
        with self._lock:
            return int(
                self._conn.execute("SELECT count(*) FROM inbox WHERE taken = 0").fetchone()[0]
            )
