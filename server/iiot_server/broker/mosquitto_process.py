"""Debian's ``mosquitto`` 2 as a child process of the platform (``broker="mosquitto"``).

The platform writes mosquitto's configuration and its dynamic-security file into
``<data dir>/mosquitto/``, starts it on a loopback (or the given) port and stops it with
itself. Files there:

- ``mosquitto.conf``: one listener (with TLS a plain loopback one for the platform's own
  clients too), ``allow_anonymous false``, the dynamic-security plugin,
  ``persistence true`` (its queue for the platform's own persistent session survives a
  platform restart: see :mod:`iiot_server.broker.mosquitto_broker`), no retained messages;
- ``dynamic-security.json``: the plugin's state (device clients and roles), made at first
  start, kept across restarts;
- ``platform-credentials.json`` (0600): the platform's own MQTT user and its password,
  generated at every start and written into the dynamic-security file before mosquitto
  reads it (PBKDF2-SHA512 as the plugin hashes it);
- ``mosquitto.db``: mosquitto's persistence file; ``mosquitto.log``: its log;
  ``mosquitto.pid``: the running child's process id.

**No orphan.** The child gets ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` in a ``preexec_fn``:
Linux sends it SIGTERM when the thread that started it ends, which is the platform's event
loop thread, so a platform process that dies (even SIGKILL) takes mosquitto with it, and
mosquitto, on SIGTERM, saves its persistence file. The ``preexec_fn`` also exits at once if
the platform died between ``fork`` and ``prctl``.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..domain.errors import BrokerUnavailable

log = logging.getLogger(__name__)

MOSQUITTO = "mosquitto"
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
PLATFORM_USERNAME = "iiotsim:platform"
"""The platform's own MQTT user: a ``:`` is not allowed in a Device ID, so no device can
be named so."""
PLATFORM_ROLE = "iiotsim:platform"
PBKDF2_ITERATIONS = 101  # what mosquitto_ctrl's dynsec init and the plugin write

_PR_SET_PDEATHSIG = 1


def mosquitto_binary() -> str:
    """The mosquitto executable (``$PATH``, then /usr/sbin), or BrokerUnavailable."""
    found = shutil.which(MOSQUITTO) or shutil.which(MOSQUITTO, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerUnavailable("mosquitto is not installed (Debian: apt-get install mosquitto)")
    return found


def dynsec_plugin() -> str:
    """The dynamic-security plugin's shared object, or BrokerUnavailable."""
    for path in DYNSEC_PLUGIN_PATHS:
        if Path(path).is_file():
            return path
    raise BrokerUnavailable(
        "mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) is not installed"
    )


def mosquitto_available() -> str | None:
    """None if mosquitto and its plugin are installed, else why not (for skips)."""
    try:
        mosquitto_binary()
        dynsec_plugin()
    except BrokerUnavailable as exc:
        return str(exc)
    return None


def dynsec_password_hash(password: str, salt: bytes | None = None) -> dict[str, object]:
    """The ``password``/``salt``/``iterations`` fields of a dynamic-security client.

    >>> fields = dynsec_password_hash("secretpw", base64.b64decode("DxiXfgEyzAnhWBKn"))
    >>> fields["password"][:16], fields["iterations"]
    ('jJMf3fMYYh37IM66', 101)
    """
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def _platform_role() -> dict[str, object]:
    acls = [
        ("publishClientSend", "$CONTROL/dynamic-security/#"),
        ("publishClientReceive", "$CONTROL/dynamic-security/#"),
        ("subscribePattern", "$CONTROL/dynamic-security/#"),
        ("publishClientSend", "devices/#"),
        ("publishClientReceive", "devices/#"),
        ("subscribePattern", "devices/#"),
        ("subscribePattern", "$share/+/devices/#"),
        ("subscribePattern", "$SYS/broker/log/#"),
        ("publishClientReceive", "$SYS/broker/log/#"),
        ("unsubscribePattern", "#"),
    ]
    return {
        "rolename": PLATFORM_ROLE,
        "acls": [{"acltype": t, "topic": topic, "allow": True} for t, topic in acls],
    }


@dataclass(frozen=True)
class PlatformCredentials:
    username: str
    password: str


def prepare_dynsec_file(path: Path, password: str) -> None:
    """Create the dynamic-security file, or set the platform user's password (and role) in
    an existing one. Devices get nothing by default: sending, subscribing and receiving
    are denied unless a role allows them."""
    state: dict[str, Any]
    if path.exists():
        state = json.loads(path.read_text())
    else:
        state = {"clients": [], "groups": [], "roles": []}
    clients = [c for c in state.get("clients", []) if c.get("username") != PLATFORM_USERNAME]
    clients.append(
        {
            "username": PLATFORM_USERNAME,
            "textname": "the iiotsim platform (ingest, twin, device management)",
            **dynsec_password_hash(password),
            "roles": [{"rolename": PLATFORM_ROLE}],
        }
    )
    roles = [r for r in state.get("roles", []) if r.get("rolename") != PLATFORM_ROLE]
    roles.append(_platform_role())
    state["clients"] = clients
    state["roles"] = roles
    state["defaultACLAccess"] = {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    _write_private(path, json.dumps(state, indent=1))


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _die_with_parent(parent_pid: int) -> None:  # pragma: no cover - runs in the child
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the platform died before prctl: never run orphaned
        os._exit(1)


class MosquittoProcess:
    """A mosquitto child on ``host:port`` (0: a free port) with its files in ``directory``.

    ``tls_cert``/``tls_key`` make the listener MQTT over TLS (the platform's certificate).
    """

    def __init__(
        self,
        directory: Path,
        host: str,
        port: int,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        max_packet_size: int | None = None,
    ) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.internal_port = port
        """Where the platform's own clients connect: the device port, or with TLS a plain
        loopback listener beside it."""
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.max_packet_size = max_packet_size
        self.credentials = PlatformCredentials(PLATFORM_USERNAME, secrets.token_urlsafe(32))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dynsec_file(self) -> Path:
        return self.directory / "dynamic-security.json"

    @property
    def config_file(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "mosquitto.log"

    def config(self) -> str:
        lines = [
            "# written by the iiotsim platform at every start: edits are lost",
            "per_listener_settings false",
            "allow_anonymous false",
            # as the platform's own user: started by root, mosquitto would switch to the
            # 'mosquitto' user, which cannot read the platform's 0700 directory
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"plugin {dynsec_plugin()}",
            f"plugin_opt_config_file {self.dynsec_file}",
            # the platform's persistent session keeps what devices sent while the platform
            # is away; saved at exit (SIGTERM) and every 10 s against a crash of mosquitto
            "persistence true",
            f"persistence_location {self.directory}/",
            "autosave_interval 10",
            # nothing is dropped from the platform's queue, however long it is away
            "max_queued_messages 0",
            "max_inflight_messages 1000",
            # no device topic is retained (as on the embedded broker)
            "retain_available false",
            f"log_dest file {self.log_file}",
            # connections as the platform records them (MosquittoBroker.connection_log)
            "log_dest topic",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            f"listener {self.port} {self.host}",
        ]
        if self.max_packet_size is not None:
            lines.insert(3, f"max_packet_size {self.max_packet_size}")
        if self.tls_cert is not None and self.tls_key is not None:
            lines += [f"certfile {self.tls_cert}", f"keyfile {self.tls_key}"]
            # the platform's own connections: plain MQTT on loopback only
            lines.append(f"listener {self.internal_port} 127.0.0.1")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> MosquittoProcess:
        """Write the files and start mosquitto; returns once its port accepts connections.
        Call it from the thread whose end should stop mosquitto (the platform's loop)."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listening():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout} s")

    async def restart(self) -> None:
        """Start mosquitto again after it exited, on the same ports and files (its devices
        are in the dynamic-security file, the platform's queue in its persistence file);
        returns once it listens (bound it with ``asyncio.timeout``). Call it in the
        platform's loop: its thread is the one whose end stops mosquitto."""
        self.spawn()
        try:
            while not self.listening():
                await asyncio.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def spawn(self) -> None:
        """Write the files and start the mosquitto process (not waiting for its port)."""
        binary = mosquitto_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if self.port == 0:
            self.port = free_port(self.host)
        if self.tls_cert is None:
            self.internal_port = self.port
        elif self.internal_port in (0, self.port):  # chosen once: a restart keeps it
            self.internal_port = free_port("127.0.0.1")
        prepare_dynsec_file(self.dynsec_file, self.credentials.password)
        _write_private(
            self.directory / "platform-credentials.json",
            json.dumps(
                {"username": self.credentials.username, "password": self.credentials.password}
            ),
        )
        _write_private(self.config_file, self.config())
        parent = os.getpid()
        stderr = self._stderr()
        try:
            self.process = subprocess.Popen(
                [binary, "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=lambda: _die_with_parent(parent),  # see the module's doc
                close_fds=True,
            )
        finally:
            os.close(stderr)
        (self.directory / "mosquitto.pid").write_text(f"{self.process.pid}\n")

    def listening(self) -> bool:
        """Whether mosquitto accepts connections on its port; RuntimeError if it exited."""
        if self.process is None:
            raise RuntimeError("mosquitto is not running")
        if self.process.poll() is not None:
            err = (self.directory / "mosquitto.stderr").read_text(errors="replace")
            raise RuntimeError(
                f"mosquitto exited with {self.process.returncode}: {err.strip()} "
                f"(log: {self.log_file})"
            )
        try:
            with socket.create_connection((self.host, self.port), 0.2):
                pass
        except OSError:
            return False
        log.info("mosquitto (pid %d) on %s:%d", self.process.pid, self.host, self.port)
        return True

    def save(self) -> None:
        """Have mosquitto write its persistence file now (SIGUSR1), not at its next
        ``autosave_interval``: once the platform's ingest session has subscribed, a
        mosquitto killed and started again knows the session and queues for it what
        devices send before it reconnects. Saved only every 10 s, a kill within them lost
        the session's subscriptions, and with them every message a device sent (and had
        acknowledged) before the ingest subscribed again."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), then SIGKILL after ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("mosquitto did not stop within %s s: killed", timeout)
            process.kill()
            process.wait()

    def _stderr(self) -> int:
        """mosquitto's stderr (start-up errors, before its log file opens), as a file: a pipe
        nobody reads could fill and block it."""
        path = self.directory / "mosquitto.stderr"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    @property
    def internal_host(self) -> str:
        return self.host if self.internal_port == self.port else "127.0.0.1"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid
