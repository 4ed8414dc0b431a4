"""RFC 9457 problem responses: every error the API returns, mapped once from exceptions."""

from __future__ import annotations

import logging
import re
from typing import Any, get_args

import msgspec
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Schema
from litestar.routes import HTTPRoute

from ..domain import errors
from .auth import PLATFORM, SCHEMES, Access, access_of

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS: list[tuple[type[errors.DomainError], int]] = [
    (errors.ValidationError, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.ProvisioningOperationCancelled, 410),
    (errors.ProvisioningOperationExpired, 410),
    (errors.TooManyRequests, 429),
    (errors.BrokerUnavailable, 503),
]

_HTTP_TYPES = {
    400: "/problems/validation",
    401: "/problems/unauthorized",
    403: "/problems/forbidden",
    404: "/problems/notFound",
    405: "/problems/methodNotAllowed",
    413: "/problems/payloadTooLarge",
    415: "/problems/unsupportedMediaType",
    429: "/problems/tooManyRequests",
}
_JSON_PATH = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")


def problem(
    status: int,
    problem_type: str,
    title: str,
    detail: str | None = None,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": problem_type, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if field:
        body["field"] = field
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def status_of(exc: errors.DomainError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def authentication_scheme(request: Request[Any, Any, Any]) -> str:
    """The ``Authorization`` scheme the route asks for, for a 401's ``WWW-Authenticate``
    (RFC 9110 11.6.1): ``DeviceToken`` on device routes, ``Bearer`` on the others."""
    try:
        access = access_of(request.route_handler)
    except (KeyError, AttributeError, ValueError):  # no route matched: the API's people
        return "Bearer"
    return SCHEMES.get(access, "Bearer")


def domain_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, errors.DomainError)
    status = status_of(exc)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = authentication_scheme(request)
    if isinstance(exc, errors.TooManyRequests):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return problem(status, exc.problem_type, exc.title, exc.detail, exc.field, headers)


def _wire_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name a client sent a parameter under (``messageId``), not the handler's
    (``message_id``)."""
    parameter = request.route_handler.parsed_fn_signature.parameters.get(key)
    kwarg = getattr(parameter, "kwarg_definition", None)
    for alias in ("name", "query", "header", "cookie"):
        if name := getattr(kwarg, alias, None):
            return str(name)
    return key


def _body_fields(request: Request[Any, Any, Any], path: str = "") -> list[str]:
    """The wire names of the fields the route's body Struct(s) take, in declared order;
    ``path`` (``filter``): those of the Struct nested there."""
    parameter = request.route_handler.parsed_fn_signature.parameters.get("data")
    names: list[str] = []
    pending = [] if parameter is None else [parameter.annotation]
    for segment in [p for p in path.split(".") if p]:
        nested = []
        while pending:
            kind = pending.pop(0)
            if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                nested += [f.type for f in msgspec.structs.fields(kind) if f.encode_name == segment]
            else:
                pending += get_args(kind)
        pending = nested
    while pending:
        kind = pending.pop(0)
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            names += [
                f.encode_name for f in msgspec.structs.fields(kind) if f.encode_name not in names
            ]
        else:
            pending += get_args(kind)
    return names


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _unknown_field(request: Request[Any, Any, Any], name: str, path: str = "") -> str:
    """What to tell a client that sent a field the body (or its object at ``path``) does
    not take: its name, the field it probably meant (a snake_case or differently cased
    spelling of a known one) and the fields the body takes."""
    known = _body_fields(request, path)
    detail = f"unknown field `{name}`: this request body has no such field"
    meant = [k for k in known if k.lower() in (name.lower(), _camel(name).lower())]
    if meant:
        detail += f" (did you mean {meant[0]}?)"
    if known:
        detail += f"; it takes {', '.join(known)}"
    return detail


def validation_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Litestar's own input validation (bodies decoded by msgspec, query and path params)."""
    assert isinstance(exc, ValidationException)
    fields: list[str] = []
    details: list[str] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", ""))
        key = item.get("key")
        if key == "data" and message == "'data'":  # Litestar's word for "no body at all"
            message = "a JSON request body is required"
        at = _JSON_PATH.search(message)
        missing = _MISSING.search(message) or _UNKNOWN.search(message)
        where = at.group(1) if at else ""
        if not where and missing and key and key != "data" and item.get("source") == "body":
            where = str(key)  # Litestar moved the object's path (``$.filter``) into the key
        if unknown := _UNKNOWN.search(message):
            message = _unknown_field(request, unknown.group(1), where)
        path = [p for p in (where, missing.group(1) if missing else "") if p]
        if path:
            fields.append(".".join(path))
        elif key == "data" and item.get("source") == "body":
            fields.append("body")  # the body as a whole: missing, or not the right type
        elif key:
            fields.append(_wire_name(request, str(key)))
        details.append(message)
    detail = "; ".join(details) or str(exc.detail)
    field = ",".join(dict.fromkeys(fields)) or None
    if field is None and "body" in detail.lower():
        field = "body"
    return problem(400, "/problems/validation", "Invalid input", detail, field)


def http_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.detail)
    title = exc.detail if isinstance(exc.detail, str) else "Error"
    headers = dict(exc.headers or {})
    field = "body" if status == 400 else None  # e.g. malformed JSON
    return problem(status, _HTTP_TYPES.get(status, "/problems/error"), title, None, field, headers)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """The last resort: a bug. Logged with its traceback, answered without one."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "/problems/internal", "Internal error", "the error was logged")


EXCEPTION_HANDLERS = {
    errors.DomainError: domain_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem: what every error response of the API carries."""

    type: str
    """A stable slug naming the kind of problem, e.g. ``/problems/unauthorized``."""
    title: str
    status: int
    detail: str | None = None
    field: str | None = None
    """The input at fault (a body field, a query parameter, ``Authorization``)."""


PROBLEMS = "problems"
"""The ``opt`` key of a route's further problem statuses (e.g. ``(409, 410)``)."""

ALSO_ANSWERS = "alsoAnswers"
"""The ``opt`` key of further media types a route's success answer can take, e.g.
``{201: ("text/csv", "...")}``: Litestar documents one per status."""

_DESCRIPTIONS = {
    400: "Invalid input: the problem's `field` names it.",
    401: "Missing, unknown, expired or revoked credential.",
    403: "A valid credential that may not do this.",
    404: "No such resource.",
    409: "The resource's state does not allow this.",
    410: "The Provisioning Operation was cancelled or has expired.",
    413: "The body is too large.",
    429: "Too many requests: wait for `Retry-After` seconds.",
}


def problem_statuses(handler: HTTPRouteHandler) -> list[int]:
    """The problem statuses a route can answer, from what it takes and who may call it,
    plus what it declares in ``opt={"problems": (...)}``."""
    access = access_of(handler)
    if access is Access.PUBLIC:
        return sorted(handler.opt.get(PROBLEMS, ()))
    statuses = {400, 401, *handler.opt.get(PROBLEMS, ())}
    if access in (Access.TECHNICIAN, Access.ADMIN):
        statuses.add(403)  # a technician on an admin route
        if not handler.opt.get(PLATFORM):
            statuses.add(404)  # the workspace: unknown, or another than the key's
    if access in (Access.PROVISIONING_TOKEN, Access.REGISTRATION_TOKEN):
        statuses.add(429)  # the device API's rate and open-operation limits
    if handler.parsed_fn_signature.parameters.keys() & {"data"} or "{" in "".join(handler.paths):
        statuses.add(404)
    return sorted(statuses)


def document_problems(app: Litestar) -> None:
    """Publish every route's problem responses (``application/problem+json``) in the
    OpenAPI document, replacing Litestar's generic 400 schema, which is not what the API
    sends. The document is built lazily, on first request, from these handlers."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            responses: dict[int, ResponseSpec] = {
                status: ResponseSpec(
                    data_container=Problem,
                    media_type=PROBLEM_JSON,
                    description=_DESCRIPTIONS.get(status, "A problem."),
                    generate_examples=False,
                )
                for status in problem_statuses(handler)
            }
            handler.responses = {**responses, **(handler.responses or {})}


def document_alternative_media(app: Litestar) -> None:
    """Add the media types routes declare in ``opt={"alsoAnswers": ...}`` to their
    success responses in the app's OpenAPI document (Litestar documents one media type
    per status). Builds the document (about 65 ms), so the app calls it at start-up."""
    openapi = app.openapi_schema  # built once and cached by Litestar; amended in place
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for status, (media_type, description) in handler.opt.get(ALSO_ANSWERS, {}).items():
                for method in handler.http_methods:
                    operation = getattr(
                        (openapi.paths or {})[route.path_format or "/"], method.lower()
                    )
                    response = operation.responses[str(status)]
                    if media_type in (response.content or {}):
                        continue
                    response.content = {
                        **(response.content or {}),
                        media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                    }
                    response.description = f"{response.description} {description}".strip()


def document_closed_bodies(app: Litestar) -> None:
    """Mark request bodies ``additionalProperties: false`` in the app's OpenAPI document:
    the API refuses fields it does not know (:class:`~.models.WireRequest`), and Litestar
    does not carry msgspec's ``forbid_unknown_fields`` into the document, which then
    promised that any extra field is accepted. Called at start-up, after
    :func:`document_alternative_media` built the document."""
    from .models import WireRequest

    schemas = (app.openapi_schema.components.schemas or {}) if app.openapi_schema.components else {}
    pending: list[type[WireRequest]] = [WireRequest]
    while pending:
        kind = pending.pop()
        pending += kind.__subclasses__()
        schema = schemas.get(kind.__name__)
        if isinstance(schema, Schema):
            schema.additional_properties = False


def document_optional_bodies(app: Litestar) -> None:
    """Mark a request body optional in the app's OpenAPI document where the handler's
    ``data`` has a default (an approval without overrides sends none): Litestar documents
    every body as required, and a fuzzer then reads the 200 for a body-less approval as a
    schema-violating request accepted. Called at start-up, once the document is built."""
    openapi = app.openapi_schema
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is None or not data.has_default:
                continue
            for method in handler.http_methods:
                operation = getattr((openapi.paths or {})[route.path_format or "/"], method.lower())
                if operation is not None and operation.request_body is not None:
                    operation.request_body.required = False  # type: ignore[union-attr]
