"""The Litestar application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from litestar import Litestar, Router, get
from litestar.di import NamedDependency, Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, Reference, SecurityScheme
from litestar.routes import HTTPRoute

from .api.admin import CONTROLLERS as ADMIN_CONTROLLERS
from .api.auth import (
    ACCESS,
    DEPENDENCIES,
    WORKSPACE_PARAMETER,
    Access,
    authorize,
    takes_reason,
)
from .api.device_api import DeviceProvisioningController, DeviceRegistrationController
from .api.models import Health
from .api.problems import (
    EXCEPTION_HANDLERS,
    document_alternative_media,
    document_closed_bodies,
    document_optional_bodies,
    document_problems,
)
from .api.request_context import document_reason, echo_request_id
from .api.requests import PlatformRequest
from .api.schema_ui import SCHEMA_PATH, asset_routes, render_plugins
from .api.workspaces import WorkspacesController
from .broker import start_broker, stop_broker
from .clock import Clock, SystemClock
from .services import Services
from .settings import Settings

Hook = Callable[[Services], Awaitable[None]]


PUBLIC = {ACCESS: Access.PUBLIC}

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "apiKey": SecurityScheme(
        type="http",
        scheme="bearer",
        description="An API key (`ak_…`) of a technician or an admin.",
    ),
    "deviceToken": SecurityScheme(
        type="apiKey",
        name="Authorization",
        security_scheme_in="header",
        description="`DeviceToken pt_…` (Provisioning Token) or `DeviceToken rt_…` "
        "(Registration Token), as each device route says.",
    ),
}


@get("/health", tags=["health"], opt=PUBLIC)
async def health(services: NamedDependency[Services]) -> Health:
    """200 when the platform is ready."""
    return Health(time=services.clock.now())


def create_app(
    settings: Settings,
    clock: Clock | None = None,
    *,
    on_ready: list[Hook] | None = None,
    on_shutdown: list[Hook] | None = None,
    on_admin_key: Callable[[str], None] | None = None,
) -> Litestar:
    """Build the platform's HTTP application.

    ``on_ready`` hooks run once the services are open (the broker starts there, in the
    same event loop); ``on_shutdown`` hooks run before they close. ``on_admin_key`` is
    called with a newly created bootstrap admin key (to print it once).
    """
    clock = clock or SystemClock()
    holder: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await Services.open(settings, clock)
        holder["services"] = services
        app.state.services = services  # for the guard, which runs before dependencies
        document_alternative_media(app)  # the OpenAPI document, complete before serving
        document_closed_bodies(app)
        document_optional_bodies(app)
        document_reason(app, takes_reason)
        try:
            created = await services.api_keys.ensure_bootstrap_admin(settings.admin_key)
            if created is not None and on_admin_key is not None:
                on_admin_key(created)
            broker = None
            if settings.mqtt_enabled:
                broker = await start_broker(services, settings.mqtt_host, settings.mqtt_port)
            services.broker = broker
            retention: asyncio.Task[None] | None = None
            try:
                # rollouts whose devices timed out while the platform was down, judged and
                # their timers armed once the broker can push what an advance changes
                await services.fleet.start_rollout_timers()
                if services.retention.enabled:
                    retention = asyncio.create_task(services.retention.run(), name="iiot-retention")
                for hook in on_ready or []:
                    await hook(services)
                yield
            finally:
                if retention is not None:
                    retention.cancel()
                    await asyncio.gather(retention, return_exceptions=True)
                for hook in on_shutdown or []:
                    await hook(services)
                if broker is not None:
                    await stop_broker(broker)
        finally:
            await services.close()

    def provide_services() -> Services:
        return holder["services"]

    # Every route passes the one guard; a route's Access defaults to admin (fail closed).
    app = Litestar(
        route_handlers=[
            health,
            DeviceProvisioningController,
            DeviceRegistrationController,
            WorkspacesController,
            # the technician/admin API twice: /api/v1/… acts on workspace default,
            # /api/v1/workspaces/{id}/… on that workspace (the guard checks which)
            Router("/api/v1", route_handlers=ADMIN_CONTROLLERS),
            Router(
                f"/api/v1/workspaces/{{{WORKSPACE_PARAMETER}:str}}",
                route_handlers=ADMIN_CONTROLLERS,
            ),
        ],
        guards=[authorize],
        dependencies={"services": Provide(provide_services, sync_to_thread=False), **DEPENDENCIES},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_send=[echo_request_id],  # X-Request-Id on every response
        request_class=PlatformRequest,  # JSON bodies bounded (depth, UTF-8): 400, never 500
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="iiotsim platform",
            version="0.1.0",
            description="Zero-touch IIoT device provisioning: tokens, operations, devices.",
            components=Components(security_schemes=SECURITY_SCHEMES),
            # Swagger UI with its scripts served here, not from a CDN (works offline)
            render_plugins=render_plugins(),
            openapi_router=Router(
                SCHEMA_PATH, route_handlers=asset_routes(), include_in_schema=False, opt=PUBLIC
            ),
        ),
        debug=False,
        # Litestar's default logging config starts a queue-listener thread per app that
        # outlives it; the platform logs through the standard library's own handlers.
        logging_config=None,
    )
    document_problems(app)
    _answer_options_with_every_method(app)
    return app


def _answer_options_with_every_method(app: Litestar) -> None:
    """Litestar 2.x builds a path's OPTIONS answer when the path's first handler is
    registered, so ``Allow`` names only that handler's method when several share the path
    (litestar#4169, fixed in 3.0): rebuild each OPTIONS answer from the finished route."""
    for route in app.routes:
        if isinstance(route, HTTPRoute) and "OPTIONS" in route.route_handler_map:
            handler, _ = route.route_handler_map["OPTIONS"]
            if handler.http_methods == {"OPTIONS"} and not handler.include_in_schema:
                handler._fn = route.create_options_handler(route.path)._fn


__all__ = ["create_app"]
