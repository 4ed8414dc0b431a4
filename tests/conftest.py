"""Shared fixtures: a real embedded platform on free loopback ports, driven by a
ManualClock so tests move through token lifetimes without sleeping."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from iiot_server.settings import sqlite_url
from iiot_server.store import migrations
from sqlalchemy import create_engine

from iiotsim.clock import ManualClock
from iiotsim.platform import SPOTFLOW_MQTT_PORT, Platform, port_is_free

from .integration.mqtt import Device
from .postgres import ThrowawayCluster, unavailable_reason

START = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def pytest_configure(config: pytest.Config) -> None:
    # ``pytestmark = pytest.mark.both_databases`` in a module (or on a test): each of its
    # tests that uses ``platform`` or ``database_url`` runs as ``[sqlite]`` and ``[postgresql]``.
    # Left on SQLite: the device SDK's tests (the device side; the power-loss test kills a
    # platform process on its SQLite file), widgets and hybrid runs (UI, simulator), the
    # rest of tests/security; TLS, the real Spotflow SDK and the serve commands start their
    # own Platform or process (transport, command line). With IIOT_TEST_DATABASES=both
    # (2026-11-26) those taking the fixture passed on PostgreSQL but one: the SDK's first
    # boot on mosquitto, whose PUBACK precedes the platform's (slower) commit.
    config.addinivalue_line(
        "markers", "both_databases: run the test's platform on SQLite and on PostgreSQL"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # IIOT_TEST_DATABASES=both: every platform test on both (unmarked ones too), to try one
    if "database" in metafunc.fixturenames and (
        metafunc.definition.get_closest_marker("both_databases")
        or os.environ.get("IIOT_TEST_DATABASES") == "both"
    ):
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[ThrowawayCluster]:
    """One throw-away PostgreSQL cluster for the session (``tests/postgres.py``), started
    by the first test that needs it."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with ThrowawayCluster() as cluster:
        yield cluster


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql`` (both for tests marked ``both_databases``)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the head revision, made once per test process: ``platform`` starts
    on a copy, so each test does not run every migration again (0.12-0.2 s of CPU each,
    against 2-3 ms to find the head already there). Migrations themselves are tested from
    an empty database and from older ones in ``tests/server/test_migrations.py``."""
    path = tmp_path_factory.mktemp("template") / "iiot.db"
    engine = create_engine(sqlite_url(path.parent))
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    return path


@pytest.fixture(scope="session")
def migrated_postgres(postgres_cluster: ThrowawayCluster) -> str:
    """A PostgreSQL database at the head revision that test databases are copied from
    (``CREATE DATABASE … TEMPLATE``), for the same reason as ``migrated_sqlite``."""
    url = postgres_cluster.create_database("template_head")
    engine = create_engine(url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    return "template_head"


def fresh_database(
    database: str, request: pytest.FixtureRequest, *, migrated: bool
) -> Iterator[str | None]:
    """A fresh PostgreSQL database's URL (at the head revision when ``migrated``, else
    empty), dropped after the test; or None: SQLite in the platform's data dir."""
    if database == "sqlite":
        yield None
        return
    cluster: ThrowawayCluster = request.getfixturevalue("postgres_cluster")
    template = request.getfixturevalue("migrated_postgres") if migrated else None
    url = cluster.create_database(template=template)
    yield url
    cluster.drop_database(url)


@pytest.fixture
def database_url(database: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A fresh PostgreSQL database's URL, already at the head revision (tests of the
    migrations themselves override this with an empty one), or None: SQLite."""
    yield from fresh_database(database, request, migrated=True)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def mqtt_broker() -> str:
    """The device-facing broker of ``platform``: tests run on both with
    ``@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)`` (``tests/integration/brokers.py``)."""
    return "amqtt"


@pytest.fixture
def platform(
    clock: ManualClock,
    tmp_path: Path,
    mqtt_broker: str,
    database_url: str | None,
    request: pytest.FixtureRequest,
) -> Iterator[Platform]:
    """A running platform (HTTP API) with SQLite under ``tmp_path/data``, or on a fresh
    PostgreSQL database (``database_url``); either starts at the head revision."""
    if database_url is None:
        (tmp_path / "data").mkdir()
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), tmp_path / "data" / "iiot.db")
    with Platform(
        data_dir=tmp_path / "data", clock=clock, broker=mqtt_broker, database_url=database_url
    ) as running:
        yield running


@pytest.fixture
def http(platform: Platform) -> Iterator[httpx.Client]:
    """A plain HTTP client for the device-facing API (no credentials)."""
    with httpx.Client(base_url=platform.http_url, timeout=30) as client:
        yield client


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    """MQTT connections a test opens (append them); all closed at the end."""
    opened: list[Device] = []
    yield opened
    for device in opened:
        device.close()


@pytest.fixture
def spotflow_port() -> Iterator[int]:
    """Port 8883 on 127.0.0.1 (the only one Spotflow's SDK connects to) for this test alone:
    a file lock serialises the tests that need it across pytest-xdist workers, then the
    port must be free within 30 s (a previous holder's listener may still be closing);
    skipped with the reason if another process keeps it. Every other TLS test asks for a
    free port (``mqtt_port=0``)."""
    lock_path = Path(tempfile.gettempdir()) / "iiotsim-tests-port-8883.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # bounded by the test's timeout
        deadline = time.monotonic() + 30
        while not port_is_free("127.0.0.1", SPOTFLOW_MQTT_PORT):
            if time.monotonic() > deadline:
                pytest.skip("port 8883 on 127.0.0.1 is held by another process")
            time.sleep(0.1)
        yield SPOTFLOW_MQTT_PORT
