"""Device messages: stored once per message id, listed per device and stream."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Insert, RowMapping, select
from sqlalchemy.dialects import postgresql, sqlite

from ..clock import Clock
from ..domain.errors import ValidationError
from ..domain.topics import validate_message_id, validate_stream
from ..store.database import Database, from_epoch_required, to_epoch
from ..store.schema import messages

MAX_DECOMPRESSED = 64 * 1024 * 1024  # a zlib bomb is refused, not inflated
_COLUMNS = ("device_id", "stream", "message_id", "payload", "received_at")


@dataclass(frozen=True)
class IncomingMessage:
    """A message as a device sent it (payload already decompressed)."""

    device_id: str
    stream: str
    payload: bytes
    message_id: str | None
    received_at: datetime


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    device_id: str
    stream: str
    message_id: str | None
    payload: bytes
    received_at: datetime


def decompress(payload: bytes, encoding: str | None) -> bytes:
    """The payload as stored: zlib-compressed payloads are inflated (bounded)."""
    if encoding is None:
        return payload
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, MAX_DECOMPRESSED)
    except zlib.error as exc:
        raise ValidationError(f"payload is not valid zlib data: {exc}", field="ce") from None
    if inflater.unconsumed_tail:
        raise ValidationError("decompressed payload too large", field="ce")
    return data


class MessageService:
    """Store and list device messages."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        dialect = db.engine.dialect.name
        self._insert: Insert
        if dialect == "postgresql":
            # SQLAlchemy adds RETURNING seq there, and psycopg's rowcount is then -1 (every
            # message counted a duplicate): ask for the row, none comes back for a duplicate.
            self._insert = (
                postgresql.insert(messages).on_conflict_do_nothing().returning(messages.c.seq)
            )
        else:
            self._insert = sqlite.insert(messages).on_conflict_do_nothing()
        # SQLite: the whole batch in one executemany of the driver's own statement; its
        # rowcount is the sum over the rows, so duplicates still count as not new. 4.7 µs of
        # CPU a message instead of 20 µs with one SQLAlchemy execute each (batches of 500).
        self._sqlite_many: str | None = None
        if dialect == "sqlite":
            compiled = self._insert.compile(dialect=db.engine.dialect, column_keys=_COLUMNS)
            if tuple(compiled.positiontup or ()) != _COLUMNS:
                raise RuntimeError(f"unexpected parameter order {compiled.positiontup}")
            self._sqlite_many = str(compiled)

    async def store_many(self, batch: list[IncomingMessage]) -> int:
        """Store a batch in one transaction; returns how many were new (duplicates by
        ``(device, stream, message id)`` are skipped)."""
        if not batch:
            return 0
        if self._sqlite_many is not None:
            statement = self._sqlite_many

            def insert_many(conn: Connection) -> int:
                rows = [
                    (m.device_id, m.stream, m.message_id, m.payload, to_epoch(m.received_at))
                    for m in batch
                ]
                return max(0, conn.exec_driver_sql(statement, rows).rowcount)

            return await self._db.write(insert_many)

        def insert(conn: Connection) -> int:
            # PostgreSQL: one executemany; SQLAlchemy sends it as multi-row INSERTs
            # ("insertmanyvalues", up to 1,000 rows a statement) and RETURNING gives a row
            # per message stored, none for a duplicate. It was one statement per message.
            result = conn.execute(
                self._insert,
                [
                    {
                        "device_id": m.device_id,
                        "stream": m.stream,
                        "message_id": m.message_id,
                        "payload": m.payload,
                        "received_at": to_epoch(m.received_at),
                    }
                    for m in batch
                ],
            )
            return len(result.all()) if result.returns_rows else max(0, result.rowcount)

        return await self._db.write(insert)

    async def store(
        self, device_id: str, stream: str, payload: bytes, message_id: str | None
    ) -> bool:
        """Store one message; False if it was already stored (same message id)."""
        validate_stream(stream)
        if message_id is not None:
            validate_message_id(message_id)
        message = IncomingMessage(device_id, stream, payload, message_id, self._clock.now())
        return await self.store_many([message]) == 1

    async def list(
        self, device_id: str, *, stream: str | None = None, after: int = 0, limit: int = 100
    ) -> list[StoredMessage]:
        """Messages of a device, oldest first; page with ``after`` (the last ``seq`` seen)."""
        c = messages.c
        query = select(messages).where(c.device_id == device_id, c.seq > after)
        if stream is not None:
            query = query.where(c.stream == validate_stream(stream))
        query = query.order_by(c.seq).limit(limit)

        def rows(conn: Connection) -> list[StoredMessage]:
            return [_message(r._mapping) for r in conn.execute(query)]

        return await self._db.scan(rows)


def _message(m: RowMapping) -> StoredMessage:
    c = messages.c
    return StoredMessage(
        seq=m[c.seq],
        device_id=m[c.device_id],
        stream=m[c.stream],
        message_id=m[c.message_id],
        payload=bytes(m[c.payload]),
        received_at=from_epoch_required(m[c.received_at]),
    )


__all__ = ["IncomingMessage", "MessageService", "StoredMessage", "decompress"]
