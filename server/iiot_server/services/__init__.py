"""Services: the platform's operations, combining the pure domain with storage and time.

Every caller (HTTP controllers, the broker's plugins, an external broker's auth hook)
goes through the one :class:`Services` container, so they all decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from ..clock import Clock
from ..events import PlatformEvents
from ..settings import Settings
from ..store.database import open_database
from .api_keys import ApiKeyService
from .devices import DeviceService
from .provisioning import ProvisioningService
from .registration import RegistrationService


@dataclass
class Services:
    """All services of one platform instance, sharing engine, clock, settings and events."""

    settings: Settings
    clock: Clock
    engine: AsyncEngine
    events: PlatformEvents
    api_keys: ApiKeyService
    registration: RegistrationService
    provisioning: ProvisioningService
    devices: DeviceService

    @classmethod
    async def open(
        cls, settings: Settings, clock: Clock, events: PlatformEvents | None = None
    ) -> Services:
        """Open the database (creating the schema) and build every service."""
        engine = await open_database(settings.database_url)
        events = events or PlatformEvents()
        registration = RegistrationService(engine, clock, settings, events)
        return cls(
            settings=settings,
            clock=clock,
            engine=engine,
            events=events,
            api_keys=ApiKeyService(engine, clock),
            registration=registration,
            provisioning=ProvisioningService(engine, clock, settings, registration),
            devices=DeviceService(engine, clock, registration),
        )

    async def close(self) -> None:
        await self.engine.dispose()
