"""RFC 9457 problem responses: every error the API returns, mapped once from exceptions."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from ..domain import errors

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS: list[tuple[type[errors.DomainError], int]] = [
    (errors.ValidationError, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.RegistrationTokenExpired, 403),
    (errors.RegistrationTokenRevoked, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.ProvisioningOperationCancelled, 410),
    (errors.ProvisioningOperationExpired, 410),
    (errors.TooManyRequests, 429),
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


def domain_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, errors.DomainError)
    status = status_of(exc)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, errors.TooManyRequests):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return problem(status, exc.problem_type, exc.title, exc.detail, exc.field, headers)


def validation_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Litestar's own input validation (bodies decoded by msgspec, query and path params)."""
    assert isinstance(exc, ValidationException)
    fields: list[str] = []
    details: list[str] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", ""))
        key = item.get("key")
        at = _JSON_PATH.search(message)
        missing = _MISSING.search(message)
        path = [p for p in (at.group(1) if at else "", missing.group(1) if missing else "") if p]
        if path:
            fields.append(".".join(path))
        elif key and key != "data":
            fields.append(str(key))
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
