"""Who is calling: API keys (``Bearer``) for people, PT/RT (``DeviceToken``) for devices."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from ..domain.errors import Unauthorized
from ..security import Role
from ..services import Services
from ..services.api_keys import ApiKey
from ..services.provisioning import ProvisioningToken


def _credential(request: Request[Any, Any, Any], scheme: str) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized(f"send 'Authorization: {scheme} <secret>'", field="Authorization")
    given, _, value = header.partition(" ")
    if given.lower() != scheme.lower() or not value.strip():
        raise Unauthorized(f"expected 'Authorization: {scheme} <secret>'", field="Authorization")
    return value.strip()


async def provide_technician(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> ApiKey:
    """Any live API key (technicians and admins)."""
    return await services.api_keys.authenticate(_credential(request, "Bearer"))


async def provide_admin(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> ApiKey:
    return await services.api_keys.authenticate(_credential(request, "Bearer"), required=Role.ADMIN)


async def provide_provisioning_token(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> ProvisioningToken:
    return await services.provisioning.authenticate(_credential(request, "DeviceToken"))


def registration_token_secret(request: Request[Any, Any, Any]) -> str:
    return _credential(request, "DeviceToken")
