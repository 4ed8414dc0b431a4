"""The database: SQLAlchemy 2 Core, SQLite (WAL) by default, any SQLAlchemy URL in its place
(e.g. ``postgresql+psycopg://…``).

A unit of work is one transaction, run whole by :meth:`Database.write` / :meth:`read`.

- SQLite: on the event loop's own thread, on one kept connection. A transaction here is a
  few statements against a local file with no fsync per commit (WAL, synchronous=NORMAL),
  tens to hundreds of microseconds; handing it to a thread costs more than that (a hop
  measured 80-110 µs, plus GIL ping-pong), so inline work is faster: token refreshes
  ~1,000/s with one database thread, ~1,600/s inline (``benchmarks/provisioning_flow.py``).
  Listings that may read many rows use :meth:`scan`, which runs on a database thread
  with its own connection (WAL readers never block the writer), so they never stall the
  loop.
- Other databases: every unit of work on a pool of database threads (a network round trip
  must not block the loop).

Why not an async driver per statement: aiosqlite pays a thread hop per statement (a
``SELECT 1`` through SQLAlchemy + aiosqlite measured 352 µs against 0.9 µs for sqlite3).

The schema is versioned: :meth:`Database.open` runs the Alembic revisions of
``store.migrations`` up to the head (one transaction under a lock, so two processes
starting on one database do not both migrate), and a database made before migrations
(by ``metadata.create_all``) is recognised, stamped at revision 0001 and upgraded. A schema
change is a new revision beside the ``schema.py`` edit (see ``store.migrations``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from . import migrations

P = ParamSpec("P")
T = TypeVar("T")

# Async driver names people may pass out of habit, and the sync driver that replaces them.
_SYNC_DRIVER = {"aiosqlite": "pysqlite", "asyncpg": "psycopg", "aiomysql": "pymysql"}


def to_epoch(value: datetime) -> float:
    return value.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def from_epoch_required(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def sync_url(url: str) -> URL:
    """``url`` with an async driver name replaced by its sync counterpart."""
    parsed = make_url(url)
    driver = parsed.get_driver_name()
    if driver in _SYNC_DRIVER:
        parsed = parsed.set(drivername=f"{parsed.get_backend_name()}+{_SYNC_DRIVER[driver]}")
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL sync is durable against process crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """An engine plus the thread(s) its units of work run on.

    >>> import asyncio
    >>> db = Database.open("sqlite:///:memory:")
    >>> asyncio.run(db.read(lambda conn: conn.exec_driver_sql("select 41 + 1").scalar()))
    42
    >>> db.close()
    """

    def __init__(self, engine: Engine, threads: int, *, inline: bool = False) -> None:
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="iiot-db")
        self._inline = inline
        self._kept: Connection | None = None  # the loop thread's connection (inline mode)

    @classmethod
    def open(cls, url: str) -> Database:
        """Create the engine for ``url`` and bring its schema to the newest revision."""
        parsed = sync_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            # An in-memory database lives and dies with its one connection: every unit of
            # work shares it (StaticPool), so a scan sees what the loop wrote.
            engine = create_engine(
                parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            threads = 1
        elif parsed.get_backend_name() == "sqlite":
            assert parsed.database is not None
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Units of work inline on the loop (one writer, serialised by the loop itself);
            # one thread for scans.
            engine = create_engine(
                parsed,
                pool_size=2,  # the loop's kept connection and the scan thread's
                max_overflow=0,
                connect_args={"check_same_thread": False},
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            threads = 1
        else:
            engine = create_engine(parsed, pool_size=8, max_overflow=4, pool_pre_ping=True)
            threads = 8
        migrations.upgrade(engine)
        return cls(engine, threads, inline=threads == 1)

    async def write(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``work(conn, ...)`` in one transaction."""
        if self._inline:
            return self._in_transaction(work, *args, **kwargs)
        return await self._offload(self._in_transaction, work, *args, **kwargs)

    async def read(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run short read-only ``work(conn, ...)``."""
        if self._inline:
            return self._on_connection(work, *args, **kwargs)
        return await self._offload(self._on_connection, work, *args, **kwargs)

    async def scan(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run read-only ``work(conn, ...)`` that may read many rows, on a database thread."""
        return await self._offload(self._on_pooled_connection, work, *args, **kwargs)

    async def _offload(self, runner: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        # in the caller's context, so the work sees its context variables (the request's
        # audit actor, ``services/audit.py``), as ``asyncio.to_thread`` would
        context = contextvars.copy_context()
        return await loop.run_in_executor(
            self._executor, functools.partial(context.run, runner, *args, **kwargs)
        )

    def _connection(self) -> Connection:
        if self._kept is None or self._kept.closed or self._kept.invalidated:
            self._kept = self.engine.connect()
        return self._kept

    def _in_transaction(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self._inline:
            with self.engine.begin() as conn:
                return work(conn, *args, **kwargs)
        conn = self._connection()
        with conn.begin():
            return work(conn, *args, **kwargs)

    def _on_connection(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self._inline:
            return self._on_pooled_connection(work, *args, **kwargs)
        conn = self._connection()
        try:
            return work(conn, *args, **kwargs)
        finally:
            conn.rollback()

    def _on_pooled_connection(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.engine.connect() as conn:
            try:
                return work(conn, *args, **kwargs)
            finally:
                conn.rollback()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._kept is not None:
            self._kept.close()
            self._kept = None
        self.engine.dispose()
