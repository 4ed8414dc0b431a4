"""Retention: the platform deletes device messages and connection history older than the
operator keeps (``Settings.message_retention``, ``Settings.connection_history_retention``,
seconds; None, the default: kept forever), as IoT Hub keeps device-to-cloud messages for
1-7 days. Without it both tables grow with the fleet for ever: 1,000 devices reconnecting
7.6 times a day add 2.8 million connection rows a year.

A pass runs at start and then every :data:`PRUNE_INTERVAL` seconds of the platform's clock.
It walks each table in ``seq`` order (its primary key: the order rows were stored in, so
the oldest first) in chunks of :data:`CHUNK` rows, one transaction each, and stops at the
first row young enough to keep: no index on the time columns is needed, and a writer
(the ingest) waits at most for one chunk. The audit trail is never pruned (append-only,
``docs/audit.md``); alerts and twins are state, not history.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import Column, Connection, Table, delete, select

from ..clock import Clock
from ..settings import Settings
from ..store.database import Database, to_epoch
from ..store.schema import connection_events, messages

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0
"""Seconds (platform clock) between passes."""
CHUNK = 5000
"""Rows looked at (and at most deleted) per transaction."""


@dataclass(frozen=True)
class Pruned:
    """Rows deleted by one pass."""

    messages: int
    connection_events: int


class RetentionService:
    """Deletes what is older than the settings keep; runs as a task of the app."""

    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings

    @property
    def enabled(self) -> bool:
        s = self._settings
        return s.message_retention is not None or s.connection_history_retention is not None

    async def prune(self) -> Pruned:
        """One pass over both tables (a table without a retention is left alone)."""
        now = to_epoch(self._clock.now())
        s = self._settings
        return Pruned(
            messages=await self._prune(messages, messages.c.received_at, now, s.message_retention),
            connection_events=await self._prune(
                connection_events, connection_events.c.at, now, s.connection_history_retention
            ),
        )

    async def run(self) -> None:
        """Prune now and every :data:`PRUNE_INTERVAL` until cancelled; a failed pass is
        logged and tried again at the next."""
        while True:
            try:
                pruned = await self.prune()
                if pruned.messages or pruned.connection_events:
                    log.info(
                        "retention: deleted %d messages and %d connection events",
                        pruned.messages,
                        pruned.connection_events,
                    )
            except Exception:
                log.exception("retention pass failed")
            await self._clock.sleep(PRUNE_INTERVAL)

    async def _prune(self, table: Table, at: Column[float], now: float, keep: float | None) -> int:
        if keep is None:
            return 0
        cutoff = now - keep
        seq = table.c.seq
        oldest = select(seq, at).order_by(seq).limit(CHUNK)

        def chunk(conn: Connection) -> tuple[int, bool]:
            rows = conn.execute(oldest).all()
            old = [r[0] for r in rows if r[1] < cutoff]
            if old:
                conn.execute(delete(table).where(seq <= old[-1], at < cutoff))
            # more to look at only if the whole chunk was old
            return len(old), len(old) == len(rows) == CHUNK

        deleted = 0
        while True:
            count, more = await self._db.write(chunk)
            deleted += count
            if not more:
                return deleted
            await asyncio.sleep(0)  # let other work in between chunks


__all__ = ["CHUNK", "PRUNE_INTERVAL", "Pruned", "RetentionService"]
