"""Storing device messages in batches, in-process, on SQLite and PostgreSQL.

The ingest (both brokers) stores what arrives in batches through
``MessageService.store_many``: one transaction, duplicates (same device, stream and
message id) skipped and not counted. This times that call alone, without MQTT, for 40
batches of 500 messages of 64 bytes, twice (the second pass on a warm table), and prints
messages per second and the CPU of this process per message. PostgreSQL: a throw-away
cluster (``tests/postgres.py``, fsync off) on the same machine.

    .venv/bin/python benchmarks/message_store.py

Measured 2026-11-27 07:55 (session 15; another helper's benchmark ran, load 7-10):
PostgreSQL 17,725 and 19,593 messages/s (38.7 and 36.2 µs of CPU a message) with one
``executemany`` (SQLAlchemy's multi-row "insertmanyvalues" with RETURNING); the same
batches one statement per message, as before: 4,398 and 4,406 messages/s (141.6 and
138.5 µs). SQLite (unchanged, one executemany of the driver's statement): 117,402 and
116,458 messages/s, 8.1 and 8.0 µs.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from iiot_server.clock import SystemClock
from iiot_server.services.messages import IncomingMessage, MessageService
from iiot_server.store.database import Database

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.postgres import ThrowawayCluster, unavailable_reason

BATCHES, SIZE = 40, 500
AT = datetime(2026, 1, 1, tzinfo=UTC)


async def run(label: str, url: str) -> None:
    db = Database.open(url)
    service = MessageService(db, SystemClock())
    n = 0
    try:
        for attempt in (1, 2):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(BATCHES):
                batch = [
                    IncomingMessage("default:bench", "s", b"x" * 64, f"m{n + i}", AT)
                    for i in range(SIZE)
                ]
                n += SIZE
                assert await service.store_many(batch) == SIZE
            count = BATCHES * SIZE
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{label:<10} pass {attempt}: {count / wall:9,.0f} messages/s"
                f"  {1e6 * cpu / count:6.1f} µs CPU a message"
            )
    finally:
        db.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run("SQLite", f"sqlite:///{tmp}/messages.db"))
    reason = unavailable_reason()
    if reason is not None:
        print(f"PostgreSQL skipped: {reason}")
        return
    with ThrowawayCluster() as cluster:
        asyncio.run(run("PostgreSQL", cluster.create_database("bench")))


if __name__ == "__main__":
    main()
