"""Who is calling, decided once for every route: fail closed.

One app-level guard, :func:`authorize`, runs before any handler and before its inputs are
parsed. It reads the route's :class:`Access` from ``opt={"access": ...}`` (set on the
handler, its controller or a router) and defaults to :attr:`Access.ADMIN`: a route that
says nothing needs an admin API key, so a new handler cannot be public by forgetting a
parameter. Public routes (``/health``, the OpenAPI document) opt out explicitly.

People use API keys (``Authorization: Bearer ak_…``); devices use their Provisioning or
Registration Token (``Authorization: DeviceToken pt_…`` / ``rt_…``). The guard leaves
what it authenticated in the connection's scope, and handlers receive it through the
``principal``, ``pt`` and ``rt`` dependencies.

Workspaces: the technician/admin routes are served twice, under ``/api/v1/…`` (workspace
``default``) and ``/api/v1/workspaces/{workspaceId}/…`` (``app.py``). The guard decides the
route's workspace once: an API key of one workspace asking for another's routes (``default``'s
included) gets the same 404 as an unknown workspace, so it learns nothing of which exist; the
``workspaces`` resource itself (``opt={"platform": True}``) needs a platform-wide key (403).
Handlers receive the workspace through the ``workspace`` dependency.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler

from ..domain.errors import Forbidden, NotFound, Unauthorized
from ..domain.workspaces import DEFAULT_WORKSPACE, PLATFORM_WIDE
from ..security import Role
from ..services import Services
from ..services.api_keys import ApiKey
from ..services.provisioning import ProvisioningToken
from ..services.registration import RegistrationToken
from .request_context import enter_audit_context, request_id_of

ACCESS = "access"
"""The ``opt`` key naming a route's :class:`Access`."""

PLATFORM = "platform"
"""The ``opt`` key of routes that only a platform-wide API key may call (workspaces)."""

WORKSPACE_PARAMETER = "workspace_id"
"""The path parameter naming the workspace of a route under ``/api/v1/workspaces/{…}/``."""

_SCOPE_KEY = "iiot_principal"
_WORKSPACE_SCOPE_KEY = "iiot_workspace"


class Access(StrEnum):
    """What a route asks of its caller."""

    PUBLIC = "public"
    """Nothing: health and the OpenAPI document only."""
    PROVISIONING_TOKEN = "provisioningToken"
    """``DeviceToken pt_…``: a device before it has a Registration Token."""
    REGISTRATION_TOKEN = "registrationToken"
    """``DeviceToken rt_…``: a provisioned device."""
    TECHNICIAN = "technician"
    """``Bearer ak_…`` of any role."""
    ADMIN = "admin"
    """``Bearer ak_…`` with the admin role (the default)."""


SCHEMES = {
    Access.PROVISIONING_TOKEN: "DeviceToken",
    Access.REGISTRATION_TOKEN: "DeviceToken",
    Access.TECHNICIAN: "Bearer",
    Access.ADMIN: "Bearer",
}


def access_of(handler: BaseRouteHandler) -> Access:
    """The route's access level; :attr:`Access.ADMIN` unless it says otherwise. Litestar's
    own OPTIONS answers (``Allow`` only, as a CORS preflight needs them) are public."""
    if getattr(handler, "http_methods", None) == {"OPTIONS"}:
        return Access.PUBLIC
    return Access(handler.opt.get(ACCESS, Access.ADMIN))


def takes_reason(handler: BaseRouteHandler) -> bool:
    """Whether a route takes ``?reason=`` (``api/request_context.py``): every technician /
    admin mutation."""
    return access_of(handler) in (Access.TECHNICIAN, Access.ADMIN)


def _credential(connection: ASGIConnection[Any, Any, Any, Any], scheme: str) -> str:
    header = connection.headers.get("authorization")
    if not header:
        raise Unauthorized(f"send 'Authorization: {scheme} <secret>'", field="Authorization")
    given, _, value = header.partition(" ")
    if given.lower() != scheme.lower() or not value.strip():
        raise Unauthorized(f"expected 'Authorization: {scheme} <secret>'", field="Authorization")
    return value.strip()


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The app's one guard: authenticate the caller as the route's :class:`Access` asks."""
    access = access_of(handler)
    if access is Access.PUBLIC:
        return
    request_id_of(connection.scope)  # decided before a 401, so it names the request too
    secret = _credential(connection, SCHEMES[access])
    services: Services = connection.app.state.services
    principal: ApiKey | ProvisioningToken | RegistrationToken
    if access is Access.PROVISIONING_TOKEN:
        principal = await services.provisioning.authenticate(secret)
        enter_audit_context(connection, f"provisioning_token:{principal.id}")
    elif access is Access.REGISTRATION_TOKEN:
        principal = await services.registration.authenticate(secret)
        enter_audit_context(connection, f"device:{principal.device_id}")
    else:
        required = Role.ADMIN if access is Access.ADMIN else None
        key = await services.api_keys.authenticate(secret, required=required)
        if handler.opt.get(PLATFORM):
            if key.workspace_id != PLATFORM_WIDE:
                raise Forbidden("this needs a platform-wide API key, not a workspace's")
        else:
            workspace = connection.path_params.get(WORKSPACE_PARAMETER, DEFAULT_WORKSPACE)
            if not key.may_act_in(workspace):  # the same answer as an unknown workspace
                raise NotFound(f"no workspace {workspace!r}", field="workspaceId")
            await services.workspaces.require(workspace)
            connection.scope[_WORKSPACE_SCOPE_KEY] = workspace  # type: ignore[literal-required]
        principal = key
        enter_audit_context(connection, f"api_key:{key.id}", key.role.value)
    connection.scope[_SCOPE_KEY] = principal  # type: ignore[literal-required]


def _principal(request: Request[Any, Any, Any], kind: type[Any]) -> Any:
    principal = request.scope.get(_SCOPE_KEY)  # type: ignore[misc]
    if not isinstance(principal, kind):  # a route whose Access does not give this kind
        raise Unauthorized(f"this route does not authenticate a {kind.__name__}")
    return principal


# The providers take ``services`` although they do not use it: Litestar resolves a batch of
# independent dependencies in an anyio task group, which cost 7 % of a provisioning flow
# (py-spy, benchmarks/provisioning_flow.py); depending on ``services`` puts each in a
# batch of its own, resolved inline.


def provide_api_key(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> ApiKey:
    """The API key :func:`authorize` accepted (technician and admin routes)."""
    key: ApiKey = _principal(request, ApiKey)
    return key


def provide_provisioning_token(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> ProvisioningToken:
    """The Provisioning Token :func:`authorize` accepted."""
    token: ProvisioningToken = _principal(request, ProvisioningToken)
    return token


def provide_registration_token(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> RegistrationToken:
    """The Registration Token :func:`authorize` accepted."""
    token: RegistrationToken = _principal(request, RegistrationToken)
    return token


def provide_workspace(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> str:
    """The workspace the route acts in, as :func:`authorize` decided and checked it."""
    workspace: str = request.scope.get(_WORKSPACE_SCOPE_KEY, DEFAULT_WORKSPACE)  # type: ignore[misc,assignment]
    return workspace


def registration_token_secret(request: Request[Any, Any, Any]) -> str:
    """The RT secret itself (registration binds the MQTT credential to it)."""
    return _credential(request, "DeviceToken")


DEPENDENCIES = {
    "principal": Provide(provide_api_key, sync_to_thread=False),
    "pt": Provide(provide_provisioning_token, sync_to_thread=False),
    "rt": Provide(provide_registration_token, sync_to_thread=False),
    "workspace": Provide(provide_workspace, sync_to_thread=False),
}
"""App-level dependencies giving handlers what the guard authenticated."""
