"""The schema's history as Alembic revisions, run by the platform itself at start.

:func:`upgrade` brings any database to the newest revision: ``Database.open`` calls it, so
no ``alembic.ini`` and no separate step is needed. A fresh database runs every revision
(``versions/``: 0001 is the schema ``create_all`` made before migrations, then one file per
change); a database made by that older code (the platform's tables, no ``alembic_version``)
is recognised and stamped at 0001, then upgraded.

Two platform processes starting on one database at once: the check and the upgrade run in
one transaction that first takes a lock, so the second waits and then finds the schema
current. PostgreSQL: ``pg_advisory_xact_lock`` (DDL is transactional there, so a failed
upgrade leaves nothing half done). SQLite: ``BEGIN IMMEDIATE``, the file's write lock.

**Changing the schema**: edit ``store/schema.py``, then write the revision, e.g. let
Alembic compare a scratch database at the current head with ``schema.py``::

    .venv/bin/python -m iiot_server.store.migrations revision -m "what changes"

It writes ``versions/<next number>_<slug>.py``; read it (autogenerate misses renames and
server defaults), run ``ruff format`` and ``ruff check --fix`` on it and commit it with
the ``schema.py`` change.
``tests/server/test_migrations.py`` fails while ``schema.py`` and the revisions differ.
The same module shows ``history``, and ``current URL`` / ``upgrade URL`` for a database.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).parent
"""This package's directory: ``env.py``, ``script.py.mako`` and ``versions/``."""

FIRST_REVISION = "0001"
"""The schema as ``create_all`` made it before migrations (commit 593ff46)."""

# Alembic's ``context`` and ``op`` are module globals: one migration at a time per process
# (two platforms started at once on two threads would otherwise mix their contexts).
_ALEMBIC_IN_USE = threading.Lock()
_PLATFORM_TABLE = "provisioning_tokens"  # present in every database the platform made
_POSTGRESQL_LOCK_KEY = 0x110751  # pg_advisory_xact_lock key: "iiotsim" schema changes


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic configuration for this package's revisions, run on ``connection`` (in
    the caller's transaction) or on ``url``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The revisions (read once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision, the one ``schema.py`` describes.

    >>> head_revision() >= "0002"
    True
    """
    head = script_directory().get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None: none recorded)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the database to the head revision; returns the revision it was at before
    (``"none"`` for a new database, ``"0001 (stamped)"`` for one made by ``create_all``).

    >>> from sqlalchemy import create_engine
    >>> engine = create_engine("sqlite://")
    >>> upgrade(engine), upgrade(engine) == head_revision()
    ('none', True)
    """
    head = head_revision()
    with _ALEMBIC_IN_USE, engine.connect() as connection:
        _lock(connection)
        before = current_revision(connection)
        was = before or "none"
        config = alembic_config(connection)
        if before is None and inspect(connection).has_table(_PLATFORM_TABLE):
            command.stamp(config, FIRST_REVISION)
            before, was = FIRST_REVISION, f"{FIRST_REVISION} (stamped)"
        if before != head:
            log.info("database schema: upgrading from %s to %s", was, head)
            command.upgrade(config, "head")
        connection.commit()
    return was


def _lock(connection: Connection) -> None:
    """Begin the transaction holding the schema lock (released at its end)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_POSTGRESQL_LOCK_KEY})")
    elif dialect == "sqlite":
        # pysqlite begins no transaction before DDL by itself: take the write lock now.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
