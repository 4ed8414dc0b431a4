"""The schema goes through Alembic revisions (``iiot_server.store.migrations``), on SQLite
and on PostgreSQL: the head equals ``schema.py``, a database made before migrations (by
``create_all``: revision 0001's tables, no ``alembic_version``) is stamped and upgraded at
platform start with its data served, and two processes starting at once migrate once.

``data/rows_before_migrations.json`` holds the rows of such a database, made by the real
platform over HTTP (a PT, an operation completed and one pending, a registered device, two
messages, a twin with desired properties and tags) on a ManualClock at ``START``, with the
PT's and RT's secrets so the upgraded platform can be driven as the device would."""

from __future__ import annotations

import base64
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from iiot_server.settings import sqlite_url
from iiot_server.store import migrations
from iiot_server.store.schema import metadata
from sqlalchemy import Engine, MetaData, create_engine, inspect
from sqlalchemy.pool import NullPool

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from ..conftest import fresh_database
from .device_calls import refresh, register

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture
def database_url(database: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """An EMPTY PostgreSQL database (the shared fixture's is already migrated), or None."""
    yield from fresh_database(database, request, migrated=False)


ROWS = json.loads((Path(__file__).parent / "data" / "rows_before_migrations.json").read_text())


def engine_for(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool)


def url_or_sqlite(database_url: str | None, data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    return database_url or sqlite_url(data_dir)


def payload_bytes(payload: str, encoding: str) -> bytes:
    return base64.b64decode(payload) if encoding == "base64" else payload.encode()


def schema_differences(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def make_database_before_migrations(url: str) -> None:
    """The tables ``create_all`` made before migrations (revision 0001's DDL, without the
    version table), holding the checked-in rows."""
    engine = engine_for(url)
    with engine.connect() as conn:
        command.upgrade(migrations.alembic_config(conn), migrations.FIRST_REVISION)
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.commit()
    tables = MetaData()
    tables.reflect(engine)
    with engine.begin() as conn:
        for name, rows in ROWS["tables"].items():
            decoded = [
                {
                    k: base64.b64decode(v["base64"]) if isinstance(v, dict) and "base64" in v else v
                    for k, v in row.items()
                }
                for row in rows
            ]
            conn.execute(tables.tables[name].insert(), decoded)
    engine.dispose()


def test_the_head_revision_is_schema_py(database_url: str | None, tmp_path: Path) -> None:
    """A ``schema.py`` change without its revision fails here."""
    engine = engine_for(url_or_sqlite(database_url, tmp_path / "data"))
    assert migrations.upgrade(engine) == "none"
    assert schema_differences(engine) == []
    assert migrations.upgrade(engine) == migrations.head_revision()  # nothing left to do
    engine.dispose()


def test_a_database_made_before_migrations_is_upgraded_and_served(
    database_url: str | None, tmp_path: Path, clock: ManualClock
) -> None:
    url = url_or_sqlite(database_url, tmp_path / "data")
    make_database_before_migrations(url)
    engine = engine_for(url)
    assert "ix_operations_token" not in {
        i["name"] for i in inspect(engine).get_indexes("provisioning_operations")
    }

    secrets = ROWS["secrets"]
    pt, rt = secrets["provisioning_token"], secrets["registration_token"]
    with (
        Platform(data_dir=tmp_path / "data", clock=clock, database_url=url) as platform,
        httpx.Client(base_url=platform.http_url, timeout=30) as http,
    ):
        admin = platform.admin
        assert [d.device_id for d in admin.list_devices()] == ["pump-0001"]
        assert register(http, rt).status_code == 200
        renewed = refresh(http, pt, rt)
        assert renewed.status_code == 201, renewed.text
        assert register(http, renewed.json()["registrationToken"]).status_code == 200
        stored = admin.list_device_messages("pump-0001", stream="telemetry")
        assert [(m.message_id, payload_bytes(m.payload, m.encoding)) for m in stored] == [
            ("m0", b"\x00\x01binary"),
            ("m1", b'{"t": 21.5}'),
        ]
        twin = admin.get_twin("pump-0001")
        assert twin.desired.properties == {"rate": 5}
        assert twin.tags.properties == {"site": "north"}
        pending = admin.list_operations(state="pending")
        assert [o.id for o in pending] == [secrets["pending_operation"]]

    with engine.connect() as conn:
        assert migrations.current_revision(conn) == migrations.head_revision()
    assert "ix_operations_token" in {
        i["name"] for i in inspect(engine).get_indexes("provisioning_operations")
    }
    assert schema_differences(engine) == []
    engine.dispose()


def _upgrade_in_child(url: str, start: Any, results: Any) -> None:
    start.wait(30)
    engine = engine_for(url)
    try:
        results.put(migrations.upgrade(engine))
    except Exception as exc:  # reported to the test, which fails on it
        results.put(f"failed: {exc!r}")
    finally:
        engine.dispose()


def test_two_processes_starting_at_once_migrate_once(
    database_url: str | None, tmp_path: Path
) -> None:
    """Two processes upgrading one new database together: one runs the revisions, the
    other waits for the lock and finds the schema current. Without the lock they both ran
    them: 'table alembic_version already exists' on SQLite, a duplicate key in pg_type on
    PostgreSQL."""
    url = url_or_sqlite(database_url, tmp_path / "data")
    processes = multiprocessing.get_context("fork")
    start = processes.Barrier(2)
    results = processes.Queue()
    children = [
        processes.Process(target=_upgrade_in_child, args=(url, start, results)) for _ in range(2)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
    assert sorted(outcomes) == sorted(["none", migrations.head_revision()])
