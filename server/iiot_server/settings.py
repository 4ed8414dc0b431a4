"""Server configuration: one typed object, from arguments or the environment."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from .domain.errors import SettingsError
from .domain.leaks import AlertKind, LeakResponse, allowed_responses
from .domain.operations import DEFAULT_OPERATION_LIFETIME
from .domain.tokens import DEFAULT_REFRESH_GRACE_PERIOD
from .signing_key import decode_signing_key

DEFAULT_DATA_DIR = Path("iiot-data")
MQTT_BROKERS = ("amqtt", "mosquitto")


def sqlite_url(directory: Path) -> str:
    """The database URL of the embedded SQLite file in ``directory``."""
    return f"sqlite:///{(directory / 'iiot.db').as_posix()}"


class Settings(msgspec.Struct, kw_only=True):
    """Everything the platform needs to know to run.

    >>> Settings(database_url="sqlite:///:memory:").port
    8000
    """

    database_url: str = sqlite_url(DEFAULT_DATA_DIR)
    host: str = "127.0.0.1"
    port: int = 8000
    admin_key: str | None = None
    """Bootstrap admin API key; None: generate one at first start (printed once)."""
    mqtt_enabled: bool = True
    """Run the embedded MQTT broker beside the HTTP API."""
    mqtt_broker: str = "amqtt"
    """The device-facing broker: ``amqtt`` (embedded, in-process) or ``mosquitto`` (Debian's
    mosquitto 2 as a child process managed through its dynamic-security plugin, files in
    ``mosquitto_dir``; ``broker/mosquitto_broker.py``)."""
    mosquitto_dir: str | None = None
    """Directory of mosquitto's configuration, dynamic-security state and persistence
    (``<data dir>/mosquitto`` from ``Platform`` and ``serve``); required for mosquitto."""
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    """Port of the embedded broker (0 = a free port); registration reports the real one."""
    tls_cert_file: str | None = None
    """PEM certificate (chain) both listeners serve; with ``tls_key_file`` it turns TLS on:
    HTTPS and MQTT over TLS on the same ports. ``iiotsim serve --tls`` fills both with a
    development CA's certificate when the operator gives none (``iiot_server.tls``)."""
    tls_key_file: str | None = None
    """PEM private key of ``tls_cert_file``."""
    tls_handshake_timeout: float = 10.0
    """Seconds (real time) a connection to a TLS listener has to finish its handshake; the
    CONNECT and header deadlines only start after it. asyncio's default is 60 s: a silent
    socket held both ports for 60 s, uncounted by the MQTT connection limit (measured).
    10 s leaves a TLS 1.2 handshake (2 round trips) room on a 2 s-RTT cellular link."""
    sas_signing_key: str | None = None
    """Base64url secret (32+ bytes) the per-device keys of Spotflow's SAS connection
    strings are derived from (``iiot_server.signing_key``); None: one per process."""
    max_mqtt_message_size: int = 256 * 1024
    mqtt_max_packet_size: int | None = None
    """Largest MQTT packet (bytes, headers included) the broker reads; a bigger announced
    length closes the connection before its body is read. None: ``max_mqtt_message_size``
    plus 4 KiB for the topic and headers. Without it one device made the broker buffer a
    64 MB PUBLISH (issue 10)."""
    mqtt_max_connect_size: int = 16 * 1024
    """Largest CONNECT (bytes): it arrives before authentication, so it bounds what a
    stranger makes the broker buffer per connection. Holds the ids, the password and a
    small Will (an "offline" status); a bigger one closes the connection."""
    mqtt_connect_timeout: float = 5.0
    """Seconds (real time: it guards sockets, not simulated time) a new MQTT connection has
    to send its CONNECT before it is closed, so silent sockets cannot pile up."""
    mqtt_max_connections: int | None = None
    """Open MQTT connections (authenticated or not) beyond which a new one is closed at
    once. None: three quarters of the process's open-file limit, keeping descriptors for
    the HTTP API and the database: stuck sockets took ``/health`` down under
    ``ulimit -n 256`` (issue 10)."""
    operation_lifetime: float = DEFAULT_OPERATION_LIFETIME
    refresh_grace_period: float = DEFAULT_REFRESH_GRACE_PERIOD
    poll_interval: float = 2.0
    """Seconds a device should wait between completion polls."""
    code_lookups_per_second: float = 1.0
    code_lookup_burst: float = 20.0
    http_keep_alive_timeout: float = 10.0
    """Seconds (real time: they guard sockets) an HTTP connection may sit idle after a
    response before the server closes it. Devices poll every ``poll_interval`` (2 s) and
    so reuse their connection; a silent one should not hold a socket. Longer than httpx's
    own 5 s (the SDK's, the admin client's): a client must drop an idle connection before
    the server does, or a request sent as the server closes is reset (at 5 s both, a
    1,000-device hybrid start lost approvals that way: ``ReadError: connection reset``)."""
    http_header_timeout: float = 10.0
    """Seconds a connection has, from opening (or from its first byte after a response),
    to finish a request's headers. uvicorn has none (its keep-alive timer is cancelled by
    any byte and never armed on a fresh connection): 400 idle or header-trickling
    connections stayed open indefinitely (issue 10)."""
    http_body_timeout: float = 60.0
    """Seconds from a request's headers to the end of its body: room for the largest
    upload over a slow cellular link (256 KiB at 5 KB/s is ~50 s), not for a stalled one."""
    max_open_operations_per_device_id: int = 3
    """Open (pending or approved) operations one Device ID may have; one more is a 429.
    A device needs one (a rebooted device resumes it); 3 leaves room for a device that
    re-inits on reboot. One PT opened 1,401 for one Device ID in 10 s (issue 10)."""
    max_open_operations_per_provisioning_token: int = 10_000
    """Open operations one Provisioning Token may have: a PT shared by a whole factory run
    (10,000, the largest bulk run) may all be waiting for technicians after a power cut.
    Operations expire (``operation_lifetime``), so this also caps how fast a leaked PT
    creates them: 10,000 per 15 minutes."""
    device_requests_per_second: float = 1.0
    device_request_burst: float = 20.0
    """Token bucket per device key: a device's Registration Token calls (register, upload)
    by its Device ID, and a Provisioning Token's calls by what they act on (the operation
    polled, the Device ID initiated or refreshed), so devices sharing a PT do not share a
    bucket. A device polls every ``poll_interval`` (0.5/s); a boot is a handful of calls."""
    provisioning_token_requests_per_second: float = 5_000.0
    provisioning_token_request_burst: float = 20_000.0
    """Token bucket per Provisioning Token, all its calls together: sized for a PT shared
    by 10,000 devices booting at once (one request each, then a poll every 2 s: 5,000/s);
    per-device PTs are held by the per-device bucket long before this one."""
    leak_response_shared_credential: LeakResponse = LeakResponse.NONE
    """Automatic response to a ``shared_credential`` alert (``domain/leaks.py``): ``none``
    or ``revoke_device``; env ``IIOT_LEAK_RESPONSE_SHARED_CREDENTIAL``, and so for each kind."""
    leak_response_token_replay: LeakResponse = LeakResponse.NONE
    """``none`` or ``revoke_device``."""
    leak_response_connection_flapping: LeakResponse = LeakResponse.NONE
    """``none`` or ``revoke_device``."""
    leak_response_provisioning_rate: LeakResponse = LeakResponse.NONE
    """``none``, ``revoke_token`` (the Provisioning Token, irreversibly) or ``pause_token``
    (it opens no new operation until an administrator resumes it)."""
    leak_response_provisioning_device_ids: LeakResponse = LeakResponse.NONE
    """``none``, ``revoke_token`` or ``pause_token``."""
    leak_alert_repeat_window: float = 3600.0
    """Seconds an open alert absorbs repeats of its kind and subject (counted on it, not new
    rows); a repeat later than this after the last one raises a new alert."""
    leak_flapping_takeovers: int = 3
    """Takeovers of one Device ID within ``leak_flapping_window`` that raise
    ``connection_flapping``: a device reconnecting over its own half-open connection makes
    one now and then; two holders with automatic reconnect make one every back-off."""
    leak_flapping_window: float = 60.0
    leak_provisioning_window: float = 600.0
    """Rule (c): inits of one Provisioning Token within this many seconds are compared with
    ``max(leak_provisioning_floor, leak_provisioning_factor x its average per window over
    the last leak_provisioning_history seconds)``."""
    leak_provisioning_history: float = 7 * 86400.0
    leak_provisioning_floor: int = 100
    """A new PT may always open this many per window: a factory line booting 500 devices an
    hour opens ~83 per 10 minutes."""
    leak_provisioning_factor: float = 5.0

    message_retention: float | None = None
    """Seconds a device message is kept after it was received; None: for ever. Pruned at
    start and hourly on the platform's clock (``services/retention.py``). Env
    ``IIOT_MESSAGE_RETENTION``, ``--message-retention-days``."""
    connection_history_retention: float | None = None
    """Seconds devices' connects and disconnects (``/devices/{id}/connections``) are kept;
    None: for ever. Env ``IIOT_CONNECTION_HISTORY_RETENTION``,
    ``--connection-history-retention-days``."""

    @property
    def tls(self) -> bool:
        """Whether the listeners speak TLS."""
        return self.tls_cert_file is not None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError(
                "tls_cert_file and tls_key_file (--tls-cert, --tls-key) go together"
            )
        if self.mqtt_broker not in MQTT_BROKERS:
            raise SettingsError(f"mqtt_broker (--broker) must be one of {', '.join(MQTT_BROKERS)}")
        if self.sas_signing_key is not None:
            decode_signing_key(self.sas_signing_key)  # refused here, not at first register
        for kind in AlertKind:
            response = getattr(self, f"leak_response_{kind.value}")
            if response not in allowed_responses(kind):
                choices = ", ".join(r.value for r in allowed_responses(kind))
                raise SettingsError(f"leak_response_{kind.value} must be one of {choices}")
        for name in ("message_retention", "connection_history_retention"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # NaN too
                flag = "--" + name.replace("_", "-") + "-days"
                raise SettingsError(
                    f"{name} ({flag}, IIOT_{name.upper()}) must be above 0, or unset to keep all"
                )
        # A key without the prefix would be stored, then refused on every request
        # ("expected an API key (ak_…)"): refuse it here, where the operator sees why.
        if self.admin_key is not None and not self.admin_key.startswith("ak_"):
            raise SettingsError(
                "IIOT_ADMIN_KEY (admin_key) must be an API key starting with 'ak_', "
                "e.g. ak_<random>; unset it to have one generated"
            )

    @classmethod
    def from_environment(cls, **overrides: object) -> Settings:
        """Settings with ``IIOT_ADMIN_KEY`` and ``IIOT_DATABASE_URL`` read from the environment."""
        values: dict[str, object] = {}
        if key := os.environ.get("IIOT_ADMIN_KEY"):
            values["admin_key"] = key
        if url := os.environ.get("IIOT_DATABASE_URL"):
            values["database_url"] = url
        if key := os.environ.get("IIOT_SAS_SIGNING_KEY"):
            values["sas_signing_key"] = key
        for name in ("message_retention", "connection_history_retention"):
            if seconds := os.environ.get(f"IIOT_{name.upper()}"):
                values[name] = _seconds(f"IIOT_{name.upper()}", seconds)
        for kind in AlertKind:
            if response := os.environ.get(f"IIOT_LEAK_RESPONSE_{kind.value.upper()}"):
                values[f"leak_response_{kind.value}"] = response
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(values, cls)
        except msgspec.ValidationError as exc:  # __post_init__'s SettingsError, wrapped
            raise SettingsError(str(exc).removesuffix(" - at `$`")) from None


def _seconds(variable: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{variable} must be a number of seconds, not {text!r}") from None
