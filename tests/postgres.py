"""A throw-away PostgreSQL cluster for the tests (and ``benchmarks/provisioning_flow.py``).

:class:`ThrowawayCluster` runs Debian's PostgreSQL binaries (``/usr/lib/postgresql/<n>/bin``,
or ``pg_ctl`` on PATH): ``initdb`` into a temp directory, ``pg_ctl start`` on a free
loopback port with its unix socket in that directory and trust authentication, one
``CREATE DATABASE`` per test, ``pg_ctl stop`` and removal at the end. PostgreSQL refuses to
run as root, so as root (CI) every command runs as the ``postgres`` user through
``runuser``; otherwise as the current user. Nothing of the system's own PostgreSQL service
is used or started.

For speed the test cluster runs with ``fsync=off`` (``durable=False``): its data dies with
it anyway. Measured here: initdb + start 0.7 s, ``CREATE DATABASE`` 0.04 s, the
migrations to head 0.08 s.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

USER = "postgres"  # the cluster's superuser role (initdb -U), whoever runs it


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL's binaries, else the directory of ``pg_ctl`` on PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def unavailable_reason() -> str | None:
    """Why no cluster can be started here (None: it can)."""
    if postgres_bin_dir() is None:
        return (
            "PostgreSQL binaries not found (no /usr/lib/postgresql/*/bin, no pg_ctl on PATH): "
            "apt-get install postgresql (.ci/run does)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayCluster:
    """A PostgreSQL cluster in a temp directory, for as long as the ``with`` block.

    >>> from tests.postgres import ThrowawayCluster, unavailable_reason
    >>> if unavailable_reason() is None:  # doctest: +SKIP
    ...     with ThrowawayCluster() as cluster:
    ...         url = cluster.create_database("demo")
    """

    def __init__(self, *, durable: bool = False) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        bin_dir = postgres_bin_dir()
        assert bin_dir is not None
        self.bin_dir = bin_dir
        self.durable = durable
        self.port = 0
        self.directory = Path(tempfile.mkdtemp(prefix="iiot-postgres-"))
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)

    def _run(self, *command: str) -> None:
        argv = [str(self.bin_dir / command[0]), *command[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def start(self) -> ThrowawayCluster:
        if self._as_postgres:
            info = pwd.getpwnam("postgres")
            os.chown(self.directory, info.pw_uid, info.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        settings = [
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
            "-c max_connections=200",
        ]
        if not self.durable:
            settings += ["-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off"]
        for attempt in range(3):  # a free port may be taken before the server binds it
            self.port = _free_port()
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.directory / "server.log"),
                    "-o",
                    " ".join([f"-p {self.port}", *settings]),
                    "-w",
                    "start",
                )
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of ``database`` over TCP on loopback."""
        return f"postgresql+{driver}://{USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True
        )

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create a fresh database, empty or a copy of database ``template`` (which no one
        may be connected to); returns its SQLAlchemy URL."""
        name = name or f"test_{next(self._names)}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"{copy}')  # type: ignore[arg-type]
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (closing any connection left to it)."""
        name = url.rsplit("/", 1)[1]
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.data_dir.exists():
            # not running (a failed start): remove its files all the same
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ThrowawayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
