"""The MQTT side of the platform: amqtt with platform auth, device-scoped ACL, ingest."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from ..domain.errors import SettingsError
from ..services import Services
from .mosquitto_broker import MosquittoBroker
from .plugins import BROKERS
from .server import PlatformBroker

log = logging.getLogger(__name__)

# amqtt and its state machine log every packet at INFO; keep them to warnings.
for _name in ("amqtt", "transitions"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_PLUGINS = (
    "iiot_server.broker.plugins.DeviceAuthPlugin",
    "iiot_server.broker.plugins.DeviceTopicPlugin",
    "iiot_server.broker.plugins.PlatformEventsPlugin",
)


async def start_broker(services: Services, host: str, port: int) -> PlatformBroker:
    """Start the broker on ``host:port`` (0 = a free port) in the running event loop and
    tell registration which port devices should use. Connections the database still
    shows from before are recorded as ended first (a broker starts with none)."""
    stale = await services.devices.record_all_disconnected()
    if stale:
        log.warning(
            "%d devices were still recorded connected (the platform ended without"
            " recording it): recorded disconnected now",
            len(stale),
        )
    if services.settings.mqtt_broker == "mosquitto":
        return await _start_mosquitto(services, host, port)  # type: ignore[return-value]
    name = str(uuid.uuid4())
    listener: dict[str, object] = {"type": "tcp", "bind": f"{host}:{port}", "max_connections": -1}
    settings = services.settings
    if settings.tls:  # MQTT over TLS on this port (an 8883-style listener), same certificate
        listener |= {
            "ssl": True,
            "certfile": settings.tls_cert_file,
            "keyfile": settings.tls_key_file,
        }
    config = {
        "listeners": {"default": listener},
        # a `plugins` key replaces every default plugin: anonymous access included
        "plugins": {path: {"platform": name} for path in _PLUGINS},
        "timeout_disconnect_delay": 2,
    }
    broker = PlatformBroker(config, services)
    BROKERS[name] = broker
    try:
        await broker.start()
    except Exception:
        BROKERS.pop(name, None)
        raise
    broker.iiot_name = name  # type: ignore[attr-defined]
    services.settings.mqtt_host = host
    services.settings.mqtt_port = broker.port
    return broker


async def _start_mosquitto(services: Services, host: str, port: int) -> MosquittoBroker:
    if services.settings.mosquitto_dir is None:
        raise SettingsError("the mosquitto broker needs a directory (Settings.mosquitto_dir)")
    broker = MosquittoBroker(services, Path(services.settings.mosquitto_dir), host, port)
    await broker.start()
    services.settings.mqtt_host = host
    services.settings.mqtt_port = broker.port
    return broker


async def stop_broker(broker: PlatformBroker | MosquittoBroker) -> None:
    if isinstance(broker, MosquittoBroker):
        await broker.shutdown()
        return
    try:
        await broker.shutdown()
    finally:
        BROKERS.pop(getattr(broker, "iiot_name", ""), None)


__all__ = ["MosquittoBroker", "PlatformBroker", "start_broker", "stop_broker"]
