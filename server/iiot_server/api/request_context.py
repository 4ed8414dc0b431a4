"""Per request: its id (``X-Request-Id``), and who acts and why for the audit trail.

- Request id: the caller's ``X-Request-Id`` if sane (1-64 of ``A-Z a-z 0-9 . _ -``), else
  one made here; echoed as ``X-Request-Id`` on every response (a ``before_send`` hook, so
  errors, 404s and the OpenAPI document carry it too), and recorded with each audit event,
  so a client's log line and the audit row it caused can be joined.
- Actor and reason: the guard (``api/auth.py``) calls :func:`enter_audit_context` once it
  knows the caller; ``record_audit`` (``services/audit.py``) reads them. Every technician /
  admin mutation takes an optional ``?reason=`` (at most 500 characters, else 400 naming
  ``reason``), read here once rather than by each handler, and documented by
  :func:`document_reason`.

Cheap on purpose (the provisioning flow is measured): a header scan of the few request
headers, a 16-hex-digit id only when none is given, the query string parsed only when it
mentions ``reason``.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any

from litestar.connection import ASGIConnection
from litestar.openapi.spec import OpenAPIType, Parameter, Schema
from litestar.routes import HTTPRoute

from ..services.audit import MAX_REASON, AuditContext, audit_context, validated_reason

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Message, Scope

REQUEST_ID_HEADER = "X-Request-Id"
_HEADER_KEY = b"x-request-id"
_SCOPE_KEY = "iiot_request_id"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")
MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""The methods that change state: the ones taking ``?reason=``."""


def request_id_of(scope: Scope) -> str:
    """The request's id: the caller's ``X-Request-Id`` if sane, else a new random one;
    decided once per request (kept in the scope)."""
    known: str | None = scope.get(_SCOPE_KEY)  # type: ignore[assignment]
    if known is not None:
        return known
    request_id = None
    for name, value in scope.get("headers", ()):
        if name == _HEADER_KEY:
            given = value.decode("latin-1")
            if _SANE.fullmatch(given):
                request_id = given
            break
    if request_id is None:
        request_id = secrets.token_hex(8)
    scope[_SCOPE_KEY] = request_id  # type: ignore[literal-required]
    return request_id


async def echo_request_id(message: Message, scope: Scope) -> None:
    """``before_send`` hook: every HTTP response carries the request's ``X-Request-Id``."""
    if message["type"] == "http.response.start":
        header = (_HEADER_KEY, request_id_of(scope).encode())
        message["headers"] = [*message.get("headers", ()), header]


def enter_audit_context(
    connection: ASGIConnection[Any, Any, Any, Any], actor: str, actor_role: str | None = None
) -> None:
    """Set :data:`audit_context` for the rest of this request: ``actor``, its role, the
    request id and, on a technician/admin mutation, ``?reason=`` (400 naming ``reason``
    past 500 characters)."""
    reason = None
    scope = connection.scope
    if (
        actor_role is not None
        and b"reason" in scope.get("query_string", b"")
        and scope.get("method") in MUTATIONS
    ):
        reason = validated_reason(connection.query_params.get("reason"))
    audit_context.set(
        AuditContext(
            actor=actor,
            actor_role=actor_role,
            request_id=request_id_of(connection.scope),
            reason=reason,
        )
    )


REASON_PARAMETER = Parameter(
    name="reason",
    param_in="query",  # type: ignore[arg-type]
    required=False,
    description="Why (at most 500 characters): recorded with this change in the audit "
    "trail (`GET /api/v1/audit`).",
    schema=Schema(type=OpenAPIType.STRING, max_length=MAX_REASON),
)


def document_reason(app: Litestar, mutating: Any) -> None:
    """Add the optional ``reason`` query parameter to every mutation ``mutating(handler)``
    says takes one, in the app's OpenAPI document (the guard reads it, not the handler's
    signature, so Litestar cannot see it). Called at start-up, once the document is built."""
    openapi = app.openapi_schema
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not mutating(handler):
                continue
            for method in handler.http_methods & MUTATIONS:
                operation = getattr((openapi.paths or {})[route.path_format or "/"], method.lower())
                if operation is None:
                    continue
                parameters = list(operation.parameters or [])
                if not any(getattr(p, "name", None) == "reason" for p in parameters):
                    operation.parameters = [*parameters, REASON_PARAMETER]
