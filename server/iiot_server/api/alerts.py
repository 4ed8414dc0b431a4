"""Leak detection's alerts (``services/alerts.py``) for technicians and admins: listed with
filters, newest first, and acknowledged. Served under ``/api/v1`` and
``/api/v1/workspaces/{workspaceId}`` like every controller of ``api/admin.py``; a workspace's
key sees only its workspace's alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from ..domain.device_id import DEVICE_ID_PATTERN
from ..domain.errors import ValidationError
from ..domain.leaks import AlertKind, Severity
from ..domain.workspaces import bare_device_id, device_key
from ..services import Services
from ..services.alerts import Alert, AlertState
from .auth import ACCESS, Access
from .models import Wire


class AlertOut(Wire):
    """A leak-detection alert: what a rule saw (``evidence``), how often (``occurrences``
    up to ``lastSeenAt``), what the platform did by itself (``response``, null: nothing)."""

    id: str
    at: datetime
    workspace_id: str
    kind: AlertKind
    severity: Severity
    state: AlertState
    device_id: str | None
    provisioning_token_id: str | None
    evidence: dict[str, Any]
    response: str | None
    occurrences: int
    last_seen_at: datetime
    acknowledged_at: datetime | None

    @classmethod
    def of(cls, a: Alert) -> AlertOut:
        return cls(
            id=a.id,
            at=a.at,
            workspace_id=a.workspace_id,
            kind=a.kind,
            severity=a.severity,
            state=a.state,
            device_id=None if a.device_id is None else bare_device_id(a.device_id),
            provisioning_token_id=a.provisioning_token_id,
            evidence=a.evidence,
            response=a.response,
            occurrences=a.occurrences,
            last_seen_at=a.last_seen_at,
            acknowledged_at=a.acknowledged_at,
        )


DATE_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
"""An RFC 3339 date-time with its offset: a query parameter typed ``datetime`` took ``0.5``
(seconds since the epoch) too, which the OpenAPI document does not promise (schemathesis
ST201)."""


def _date_time(text: str, *, field: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:  # the pattern passed: e.g. month 13
        raise ValidationError(f"{field}: not a date-time ({exc})", field=field) from None


DeviceIdQuery = Annotated[
    str | None,
    QueryParameter(name="deviceId", pattern=f"^{DEVICE_ID_PATTERN.pattern}$"),
]


class AlertsController(Controller):
    """Alerts of the workspace (technician)."""

    path = "/alerts"
    tags = ["alerts"]
    opt = {ACCESS: Access.TECHNICIAN}
    security = [{"apiKey": []}]

    @get("/")
    async def list_alerts(
        self,
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        kind: FromQuery[AlertKind | None] = None,
        severity: FromQuery[Severity | None] = None,
        device_id: DeviceIdQuery = None,
        since: Annotated[
            str | None,
            QueryParameter(
                pattern=DATE_TIME_PATTERN,
                description="RFC 3339 date-time with its offset, e.g. 2026-01-01T08:00:00Z",
            ),
        ] = None,
        alert_state: Annotated[AlertState | None, QueryParameter(name="state")] = None,
        after: Annotated[str | None, QueryParameter(max_length=36)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[AlertOut]:
        """Alerts, newest first; filter by ``kind``, ``severity``, ``deviceId``, ``since``
        (raised at or after) and ``state`` (``open`` / ``acknowledged``); page with
        ``after`` (the last alert id seen)."""
        listed = await services.alerts.list(
            workspace,
            kind=kind,
            severity=severity,
            device_id=None if device_id is None else device_key(workspace, device_id),
            since=None if since is None else _date_time(since, field="since"),
            state=alert_state,
            after=after,
            limit=limit,
        )
        return [AlertOut.of(a) for a in listed]

    @get("/{alert_id:str}")
    async def get_alert(
        self,
        alert_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> AlertOut:
        return AlertOut.of(await services.alerts.get(alert_id, workspace))

    @post("/{alert_id:str}/acknowledge", status_code=200)
    async def acknowledge(
        self,
        alert_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> AlertOut:
        """Mark the alert seen (its first acknowledgement's time stays); a later repeat of
        its kind and subject raises a new alert."""
        return AlertOut.of(await services.alerts.acknowledge(alert_id, workspace))


__all__ = ["AlertOut", "AlertsController"]
