"""Services: the platform's operations, combining the pure domain with storage and time.

Every caller (HTTP controllers, the broker's plugins, an external broker's auth hook)
goes through the one :class:`Services` container, so they all decide alike.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..clock import Clock
from ..events import PlatformEvents
from ..settings import Settings
from ..store.database import Database
from .alerts import AlertService
from .api_keys import ApiKeyService
from .audit import use_clock
from .cloud_to_device import CloudToDeviceService
from .devices import DeviceService
from .fleet import FleetService
from .limits import DeviceApiLimits
from .messages import MessageService
from .provisioning import ProvisioningService
from .registration import RegistrationService
from .retention import RetentionService
from .twin import TwinService
from .workspaces import WorkspaceService


@dataclass
class Services:
    """All services of one platform instance, sharing engine, clock, settings and events."""

    settings: Settings
    clock: Clock
    db: Database
    events: PlatformEvents
    api_keys: ApiKeyService
    registration: RegistrationService
    provisioning: ProvisioningService
    devices: DeviceService
    messages: MessageService
    twins: TwinService
    fleet: FleetService
    cloud_to_device: CloudToDeviceService
    workspaces: WorkspaceService
    alerts: AlertService
    """Leak detection: rules fed by the broker and the device API (``services/alerts.py``)."""
    retention: RetentionService
    """Deletes messages and connection history past their retention (off by default)."""
    broker: Any = None
    """The embedded MQTT broker (``iiot_server.broker.PlatformBroker``) once started."""

    @classmethod
    async def open(
        cls, settings: Settings, clock: Clock, events: PlatformEvents | None = None
    ) -> Services:
        """Open the database (creating the schema) and build every service."""
        loop = asyncio.get_running_loop()
        db = await loop.run_in_executor(None, Database.open, settings.database_url)
        use_clock(db.engine, clock)  # audit rows on the platform's clock
        events = events or PlatformEvents()
        limits = DeviceApiLimits(settings, clock)
        registration = RegistrationService(db, clock, settings, events, limits)
        twins = TwinService(db, clock, events)
        provisioning = ProvisioningService(db, clock, settings, registration, limits)
        alerts = AlertService(db, clock, settings, registration, provisioning)
        registration.on_token_refused = alerts.token_refused
        provisioning.on_operation_initiated = alerts.operation_initiated
        return cls(
            settings=settings,
            clock=clock,
            db=db,
            events=events,
            api_keys=ApiKeyService(db, clock),
            registration=registration,
            provisioning=provisioning,
            devices=DeviceService(db, clock, registration),
            messages=MessageService(db, clock),
            twins=twins,
            fleet=FleetService(db, clock, twins),
            cloud_to_device=CloudToDeviceService(db, clock, events),
            workspaces=WorkspaceService(db, clock),
            alerts=alerts,
            retention=RetentionService(db, clock, settings),
        )

    async def delete_workspace(self, workspace_id: str) -> None:
        """Delete an empty workspace (:meth:`WorkspaceService.delete`) and forget its
        tokens and keys, which it revoked, from the services' caches."""
        await self.workspaces.delete(workspace_id)
        self.provisioning.forget_workspace(workspace_id)
        self.api_keys.forget_workspace(workspace_id)

    async def close(self) -> None:
        self.fleet.stop_rollout_timers()
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)
