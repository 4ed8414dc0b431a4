"""Alembic's environment script: runs the revisions on the connection the platform hands
over (``config.attributes["connection"]``, already in its transaction and lock), or on
``sqlalchemy.url`` when alembic's own command line runs it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from iiot_server.store.schema import metadata


def _run_on(connection: Connection) -> None:
    # Batch mode: SQLite cannot ALTER most things, alembic copies the table instead; on
    # PostgreSQL batch operations are plain ALTERs.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database: set sqlalchemy.url (alembic -x is not read)")
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        _run_on(connection)
        connection.commit()


# Only when alembic runs this file (it installs ``context.config``), not when it is merely
# imported (pytest's --doctest-modules imports every module of the package).
if hasattr(context, "config"):
    run_migrations()
