"""amqtt plugins that ask the platform: authentication, device-scoped ACL, and the
events that feed ingest and connection state.

amqtt loads plugins by dotted class path from the broker config, each with its own
``Config`` dataclass; ``platform`` names the :class:`PlatformBroker` they serve.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import IncomingApplicationMessage, Session

from ..domain import sas
from ..domain.errors import ValidationError
from ..domain.topics import (
    TopicAction,
    TopicKind,
    device_may,
    device_publication,
    hub_may_subscribe,
)
from ..domain.workspaces import device_key

if TYPE_CHECKING:
    from .server import PlatformBroker

log = logging.getLogger(__name__)

BROKERS: dict[str, PlatformBroker] = {}
"""The running platform brokers by name, for the plugins amqtt instantiates."""


@dataclass
class PlatformConfig:
    platform: str = "default"


def _broker(plugin: BasePlugin[Any]) -> PlatformBroker:
    return BROKERS[plugin.config.platform]


class DeviceAuthPlugin(BaseAuthPlugin):
    """A CONNECT is accepted only with a device's current MQTT credentials (client id =
    username = Device ID, password from registration). Anonymous connections are refused."""

    Config = PlatformConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)

    async def authenticate(self, *, session: Session) -> bool | None:
        broker = _broker(self)
        hub = is_hub_connect(session)
        # the device key: a hub client id ``<workspace>:<device>`` is ``<device>`` in default
        device_id = hub_device_key(session.client_id or "") if hub else session.client_id
        # before the token is read: a revoke from here on is caught once the session is
        # recorded (PlatformBroker.session_connected)
        session.iiot_auth_epoch = broker.registration_epoch(device_id or "")  # type: ignore[attr-defined]
        if hub:
            session.iiot_hub_client_id = session.client_id  # type: ignore[attr-defined]
        identity = await broker.check_credentials(session)
        session.iiot_identity = identity  # type: ignore[attr-defined]
        if identity is not None and hub:
            broker.adopt_hub_identity(session, identity.device_id)
        return identity is not None


def hub_device_key(client_id: str) -> str:
    """The device key (``domain/workspaces.py``) of an IoT Hub dialect client id.

    >>> hub_device_key("default:pump-0001"), hub_device_key("site-a:pump-0001")
    ('pump-0001', 'site-a:pump-0001')
    >>> hub_device_key("a:b:c")  # no device's key: left as given, refused at the SAS check
    'a:b:c'
    """
    workspace_id, _, device_id = client_id.partition(":")
    try:
        return device_key(workspace_id, device_id)
    except ValidationError:  # ``a:b:c``: no device's; authenticate_sas refuses it
        return client_id


def is_hub_connect(session: Session) -> bool:
    """Whether a CONNECT speaks the IoT Hub dialect: a SAS as its password and a
    ``<workspace>:<device>`` client id (a Device ID has no ``:``)."""
    return bool(
        session.password
        and session.password.startswith(sas.PREFIX)
        and ":" in (session.client_id or "")
    )


class DeviceTopicPlugin(BaseTopicPlugin):
    """A device publishes, subscribes and receives only under ``devices/{its id}/``."""

    Config = PlatformConfig

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        if session is None or topic is None or action is None or not session.client_id:
            return False
        hub_client_id: str | None = getattr(session, "iiot_hub_client_id", None)
        if (
            hub_client_id is not None
            and action is Action.SUBSCRIBE
            and hub_may_subscribe(hub_client_id, topic)
        ):
            return True
        return device_may(session.client_id, TopicAction(action.value), topic)


class PlatformEventsPlugin(BasePlugin[BaseContext]):
    """Connection state, session control and message ingest."""

    Config = PlatformConfig

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        broker = _broker(self)
        broker.session_connected(client_session)
        await broker.services.devices.record_connection(client_id, connected=True)

    async def on_broker_client_disconnected(
        self, *, client_id: str, client_session: Session
    ) -> None:
        broker = _broker(self)
        if broker.session_disconnected(client_session):
            await broker.services.devices.record_connection(client_id, connected=False)

    async def on_broker_message_received(
        self, *, client_id: str, message: IncomingApplicationMessage | None
    ) -> None:
        # A telemetry message's sender may wait for it to be stored (see the broker's
        # handler): whatever happens here, that wait ends.
        stored: asyncio.Future[None] | None = getattr(message, "iiot_stored", None)
        try:
            accepted = self._receive(client_id, message, stored)
        except BaseException as exc:
            if stored is not None and not stored.done():
                stored.set_exception(exc)
            raise
        if not accepted and stored is not None and not stored.done():
            stored.set_result(None)  # refused for good: acknowledge, never retried

    def _receive(
        self,
        client_id: str,
        message: IncomingApplicationMessage | None,
        stored: asyncio.Future[None] | None,
    ) -> bool:
        # amqtt fires the hook before its own topic check: apply the ACL here too. No
        # await before offer(), so messages reach the ingest queue in arrival order.
        # (A device's telemetry is mostly taken before this hook: IngestingHandler.)
        parsed = (
            None
            if message is None or not message.topic
            else device_publication(client_id, message.topic)
        )
        if message is None or parsed is None:
            return False
        broker = _broker(self)
        if parsed.kind in (TopicKind.TWIN_GET, TopicKind.TWIN_REPORTED):
            broker.twin_request(client_id, parsed.kind, bytes(message.data), stored)
            return True
        if parsed.kind is not TopicKind.TELEMETRY:
            return False
        return broker.ingest.offer(client_id, parsed, bytes(message.data), stored=stored)
