"""The embedded platform: HTTP API and MQTT broker in one background thread's event loop,
SQLite in a temporary or given directory.

Example::

    from iiotsim import Platform

    with Platform() as platform:
        print(platform.http_url, platform.admin_key)
        pt = platform.admin.create_provisioning_token("demo")
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import tempfile
import warnings
import weakref
from pathlib import Path
from types import TracebackType

from iiot_server.clock import Clock
from iiot_server.runner import ServerRunner
from iiot_server.services import Services
from iiot_server.settings import Settings, sqlite_url
from iiot_server.signing_key import signing_key_in
from iiot_server.tls import development_certificates

from .admin import AdminClient

log = logging.getLogger(__name__)

SPOTFLOW_MQTT_PORT = 8883
"""The only MQTT port Spotflow's device SDK connects to (``MqttOptions::new(device_id,
iothub, 8883)``; a port written into ``iotHubHostName`` fails name resolution): see
``docs/protocol.md``, 'Spotflow SDK'."""


def port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind ``host:port`` now (as asyncio does, SO_REUSEADDR: a
    port in TIME_WAIT after a previous platform counts as free, one listened on does not)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class Platform:
    """A running platform for notebooks, tests and hybrid runs (a context manager).

    ``data_dir=None`` keeps the database in a temporary directory removed at
    :meth:`stop`, or when the platform is garbage-collected or the interpreter exits (a
    notebook that keeps its platform live to the end leaves nothing behind when its
    kernel shuts down); a given directory keeps it, so a second
    ``Platform(data_dir=...)`` sees the same data.
    ``clock`` (e.g. :class:`iiotsim.clock.ManualClock`) drives every expiry.
    ``tls=True`` serves HTTPS and MQTT over TLS with a development CA made at first start
    in ``data_dir/tls/`` (reused after; :attr:`ca_cert_path` is what devices trust), unless
    ``settings`` name a certificate and key of the operator's own. With TLS and no
    ``mqtt_port``, MQTT listens on 8883 when it is free on ``host`` (the only port
    Spotflow's SDK uses), else on a free port with a warning saying that SDK will not
    connect. ``mqtt_port=0`` asks for a free port in any case.
    ``broker="mosquitto"`` puts Debian's mosquitto 2 in front of the devices instead of the
    embedded amqtt broker: a child process with its files in ``data_dir/mosquitto/``, managed
    through its dynamic-security plugin (``iiot_server.broker.mosquitto_broker``; the IoT
    Hub dialect is not served there).
    ``workspace="class-01"``: :attr:`admin` acts in that workspace (made at start if it
    does not exist), so a notebook's tokens, operations and devices live there;
    ``admin.in_workspace(...)`` reaches the others (the key is the platform-wide admin's).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        clock: Clock | None = None,
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        mqtt_port: int | None = None,
        database_url: str | None = None,
        admin_key: str | None = None,
        settings: Settings | None = None,
        tls: bool = False,
        broker: str | None = None,
        workspace: str | None = None,
    ) -> None:
        self._temp_dir: str | None = None
        self.workspace = workspace
        if data_dir is None:
            self._temp_dir = tempfile.mkdtemp(prefix="iiotsim-")
            self._remove_temp_dir = weakref.finalize(self, shutil.rmtree, self._temp_dir, True)
            data_dir = self._temp_dir
        self.data_dir = Path(data_dir)
        self.admin_key = admin_key or f"ak_{secrets.token_urlsafe(32)}"
        base = settings or Settings()
        self.settings = Settings(
            **{
                **{f: getattr(base, f) for f in base.__struct_fields__},
                "host": host,
                "port": http_port,
                "mqtt_host": host,
                "mqtt_port": mqtt_port or 0,
                "database_url": database_url or sqlite_url(self.data_dir),
                "admin_key": self.admin_key,
                "mqtt_broker": broker or base.mqtt_broker,
                "mosquitto_dir": base.mosquitto_dir or str(self.data_dir / "mosquitto"),
            }
        )
        self.clock = clock
        self.tls = tls or self.settings.tls
        self._mqtt_port_given = mqtt_port is not None
        self.ca_cert_path: Path | None = None
        """The CA (PEM) a client of this platform trusts when :attr:`tls` is on: the
        development CA, or None when ``settings`` gave the operator's certificate."""
        self._runner: ServerRunner | None = None
        self._admin: AdminClient | None = None

    def start(self) -> Platform:
        """Start the servers; returns once they answer."""
        if self.settings.sas_signing_key is None:  # connection strings outlive a restart
            self.settings.sas_signing_key = signing_key_in(self.data_dir)
        if self.tls and not self.settings.tls:
            files = development_certificates(self.data_dir, (self.settings.host,))
            self.settings.tls_cert_file = str(files.cert)
            self.settings.tls_key_file = str(files.key)
            self.ca_cert_path = files.ca_cert
        if self.tls and not self._mqtt_port_given:
            self.settings.mqtt_port = self._spotflow_mqtt_port()
        self._runner = ServerRunner(self.settings, self.clock).start()
        self._admin = AdminClient(
            self._runner.http_url,
            self.admin_key,
            ca_cert=self.ca_cert_path,
            workspace=self.workspace,
        )
        if self.workspace is not None:
            try:
                if self.workspace not in {w.id for w in self._admin.list_workspaces()}:
                    self._admin.create_workspace(self.workspace)
            except BaseException:  # e.g. an invalid id: nothing left running
                self.stop()
                raise
        return self

    def _spotflow_mqtt_port(self) -> int:
        """8883 if free on the MQTT host, else 0 (a free port) with a warning. Probed just
        before the broker binds: another process taking 8883 in between fails the start."""
        host = self.settings.mqtt_host
        if port_is_free(host, SPOTFLOW_MQTT_PORT):
            return SPOTFLOW_MQTT_PORT
        message = (
            f"port {SPOTFLOW_MQTT_PORT} on {host} is taken: MQTT over TLS listens on a free "
            f"port instead, and the real Spotflow SDK will not connect (it always connects "
            f"to port {SPOTFLOW_MQTT_PORT} of iotHubHostName); iiot_device and other clients "
            "take the port from Platform.mqtt_port"
        )
        log.warning("%s", message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return 0

    def stop(self) -> None:
        """Stop the servers and remove a temporary data directory; idempotent."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self._temp_dir is not None:
            self._remove_temp_dir()
            self._temp_dir = None

    def _require(self) -> ServerRunner:
        if self._runner is None:
            raise RuntimeError("the platform is not running: use `with Platform() as p:`")
        return self._runner

    @property
    def http_url(self) -> str:
        return self._require().http_url

    @property
    def mqtt_host(self) -> str:
        return self.settings.mqtt_host

    @property
    def mqtt_port(self) -> int:
        """The embedded broker's port (the real one once started)."""
        self._require()
        return self.settings.mqtt_port

    @property
    def admin(self) -> AdminClient:
        """The admin client (an admin API key)."""
        self._require()
        assert self._admin is not None
        return self._admin

    @property
    def runner(self) -> ServerRunner:
        return self._require()

    @property
    def services(self) -> Services:
        """The platform's services, for code that runs on the server's loop."""
        services = self._require().services
        assert services is not None
        return services

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
