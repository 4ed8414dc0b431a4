"""Leak detection (issue 15): the rules of ``domain/leaks.py`` fed with what the broker and
the device API see, their findings stored as alerts, and the automatic response a setting
asks for (``leak_response_<kind>``).

Inputs: :meth:`AlertService.connection_taken_over` (a broker, at a takeover),
:meth:`AlertService.operation_initiated` (``ProvisioningService.init_operation``) and
:meth:`AlertService.token_refused` (``RegistrationService``, a superseded token refused).
The per-device and per-token histories of rules (c) and (d) live in memory: they start
empty when the platform starts. A finding writes to the database only when it raises or
repeats an alert, so a fleet with no incident pays memory work per takeover or init: 44 µs
per init for a PT with 100,000 in its history (``ProvisioningHistory.observe``, measured at
load 10 on the shared 2-core machine), a refused Registration Token one extra read.

A finding that repeats an open alert this process raised or counted before is one prebuilt
UPDATE (:data:`_COUNT_REPEAT`), not a select, an update and a re-read built per call. A
Provisioning Token past its rate limit repeats on every init, as in
``benchmarks/provisioning_flow.py`` (one PT, past the floor of 100 from its 101st init):
server CPU per flow 8.35 → 7.62, 6.29 → 5.31 and 8.61 → 7.11 ms (three pairs run at the
same time, load 6-8; ``--flows 1500 --refreshes 2000 --concurrency 32``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, insert, or_, select, update

from ..clock import Clock
from ..domain.errors import DomainError, NotFound
from ..domain.leaks import (
    AlertKind,
    Finding,
    LeakResponse,
    ProvisioningHistory,
    ProvisioningThresholds,
    SessionSighting,
    Severity,
    TakeoverHistory,
    shared_credential,
    token_replay,
)
from ..domain.workspaces import split_device_key
from ..security import new_id
from ..settings import Settings
from ..store.database import Database, from_epoch, from_epoch_required, to_epoch
from ..store.schema import alerts
from .audit import AuditContext, audit_context, record_audit
from .provisioning import ProvisioningService, ProvisioningToken
from .registration import RegistrationService

log = logging.getLogger(__name__)


_COUNT_REPEAT = (
    update(alerts)
    .where(
        alerts.c.id == bindparam("b_id"),
        alerts.c.acknowledged_at.is_(None),
        alerts.c.last_seen_at >= bindparam("b_since"),
    )
    .values(occurrences=alerts.c.occurrences + 1, last_seen_at=bindparam("b_now"))
    .returning(*alerts.c)
)
"""A repeat counted on a known alert, if it is still open and seen within the repeat window
(the conditions :meth:`AlertService._store` looks for; the subject of an id never changes),
in one statement built once; no row: not a repeat of that alert."""

AlertSubject = tuple[str, str, str | None, str | None]
"""kind, workspace, device key, Provisioning Token id: what a repeat must share."""


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True)
class Alert:
    """A stored alert: a rule's finding, how often it repeated and what was done."""

    id: str
    at: datetime
    workspace_id: str
    kind: AlertKind
    severity: Severity
    device_id: str | None
    """The device key (``domain/workspaces.py``), for device kinds."""
    provisioning_token_id: str | None
    evidence: dict[str, Any]
    response: str | None
    occurrences: int
    last_seen_at: datetime
    acknowledged_at: datetime | None

    @property
    def state(self) -> AlertState:
        return AlertState.OPEN if self.acknowledged_at is None else AlertState.ACKNOWLEDGED


class AlertService:
    """Run the leak rules, store their alerts, respond as the settings say."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        registration: RegistrationService,
        provisioning: ProvisioningService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._registration = registration
        self._provisioning = provisioning
        self._takeovers: dict[str, TakeoverHistory] = {}
        self._inits: dict[str, ProvisioningHistory] = {}
        self._raising = asyncio.Lock()  # one open alert per kind and subject
        self._known: dict[AlertSubject, str] = {}
        """The alert each subject's last finding was stored on (a hint: a repeat checks it)."""
        s = settings
        self.provisioning_thresholds = ProvisioningThresholds(
            window=s.leak_provisioning_window,
            history=s.leak_provisioning_history,
            floor=s.leak_provisioning_floor,
            factor=s.leak_provisioning_factor,
        )

    # inputs ---------------------------------------------------------------------------

    async def connection_taken_over(
        self, device_id: str, previous: SessionSighting, newcomer: SessionSighting
    ) -> list[Alert]:
        """A CONNECT pushed out the live session of ``device_id`` (its key): rules (a), (d)."""
        now = self._clock.now()
        if newcomer.at is None:
            newcomer = dataclasses.replace(newcomer, at=now)
        findings = []
        if (found := shared_credential(device_id, previous, newcomer)) is not None:
            findings.append(found)
        history = self._takeovers.setdefault(device_id, TakeoverHistory())
        flapping = history.observe(
            device_id,
            now,
            threshold=self._settings.leak_flapping_takeovers,
            window=self._settings.leak_flapping_window,
        )
        if flapping is not None:
            flapping.evidence["lastNewcomer"] = {
                "address": newcomer.address,
                "registrationTokenId": newcomer.registration_token_id,
            }
            findings.append(flapping)
        return [await self.raise_finding(f, split_device_key(device_id)[0]) for f in findings]

    async def operation_initiated(
        self, token: ProvisioningToken, device_id: str | None
    ) -> list[Alert]:
        """A Provisioning Token opened an operation (``device_id`` bare, None if not given):
        rule (c)."""
        history = self._inits.setdefault(token.id, ProvisioningHistory())
        findings = history.observe(
            token.id, device_id, self._clock.now(), self.provisioning_thresholds
        )
        return [await self.raise_finding(f, token.workspace_id) for f in findings]

    async def token_refused(self, secret: str, use: str) -> Alert | None:
        """A Registration Token was refused as superseded or revoked: rule (b) if a refresh
        had replaced it while its device lives on."""
        presented = await self._registration.describe_presented(secret)
        if presented is None:
            return None
        finding = token_replay(presented, self._clock.now(), use=use)
        if finding is None:
            return None
        return await self.raise_finding(finding, split_device_key(presented.device_id)[0])

    # alerts ---------------------------------------------------------------------------

    async def raise_finding(self, finding: Finding, workspace_id: str) -> Alert:
        """Store a finding: a new alert, or a repeat counted on the open one of its kind
        and subject seen within ``leak_alert_repeat_window``. A new alert gets its kind's
        automatic response, recorded on it."""
        subject = (
            finding.kind.value,
            workspace_id,
            finding.device_id,
            finding.provisioning_token_id,
        )
        # the platform acts here, whoever's request showed the incident: audit as system
        context = audit_context.set(AuditContext())
        try:
            async with self._raising:
                known = self._known.get(subject)
                if known is not None:
                    repeated = await self._db.write(self._count_repeat, known)
                    if repeated is not None:
                        return repeated
                alert, new = await self._db.write(self._store, finding, workspace_id)
                self._known[subject] = alert.id
                if not new:
                    return alert
                response = self._response(finding.kind)
                if response is LeakResponse.NONE:
                    return alert
                done = await self._respond(alert, response)
                return await self._db.write(self._record_response, alert.id, done)
        finally:
            audit_context.reset(context)

    def _count_repeat(self, conn: Connection, alert_id: str) -> Alert | None:
        now = to_epoch(self._clock.now())
        row = conn.execute(
            _COUNT_REPEAT,
            {
                "b_id": alert_id,
                "b_now": now,
                "b_since": now - self._settings.leak_alert_repeat_window,
            },
        ).first()
        return None if row is None else _alert(row._mapping)

    def _store(self, conn: Connection, finding: Finding, workspace_id: str) -> tuple[Alert, bool]:
        now = to_epoch(self._clock.now())
        c = alerts.c
        open_one = conn.execute(
            select(alerts)
            .where(
                c.kind == finding.kind.value,
                c.workspace_id == workspace_id,
                _same(c.device_id, finding.device_id),
                _same(c.provisioning_token_id, finding.provisioning_token_id),
                c.acknowledged_at.is_(None),
                c.last_seen_at >= now - self._settings.leak_alert_repeat_window,
            )
            .order_by(c.at.desc())
            .limit(1)
        ).first()
        if open_one is not None:
            alert_id = open_one._mapping[c.id]
            conn.execute(
                update(alerts)
                .where(c.id == alert_id)
                .values(occurrences=c.occurrences + 1, last_seen_at=now)
            )
            return _get(conn, alert_id), False
        alert_id = new_id()
        conn.execute(
            insert(alerts).values(
                id=alert_id,
                at=now,
                workspace_id=workspace_id,
                kind=finding.kind.value,
                severity=finding.severity.value,
                device_id=finding.device_id,
                provisioning_token_id=finding.provisioning_token_id,
                evidence=json.dumps(finding.evidence, sort_keys=True),
                response=None,
                occurrences=1,
                last_seen_at=now,
            )
        )
        record_audit(
            conn,
            action="alert.raised",
            target_kind="alert",
            target_id=alert_id,
            workspace_id=workspace_id,
            after={
                "kind": finding.kind.value,
                "severity": finding.severity.value,
                "deviceId": finding.device_id,
                "provisioningTokenId": finding.provisioning_token_id,
            },
            detail=finding.evidence,
        )
        log.warning(
            "leak alert %s (%s) on %s: %s",
            finding.kind.value,
            finding.severity.value,
            finding.device_id or finding.provisioning_token_id,
            finding.evidence,
        )
        return _get(conn, alert_id), True

    def _response(self, kind: AlertKind) -> LeakResponse:
        return LeakResponse(getattr(self._settings, f"leak_response_{kind.value}"))

    async def _respond(self, alert: Alert, response: LeakResponse) -> str:
        """Apply the response; what was done, as recorded on the alert."""
        try:
            if response is LeakResponse.REVOKE_DEVICE and alert.device_id is not None:
                revoked = await self._registration.revoke_device(alert.device_id)
                return f"revoke_device: {revoked} token(s) revoked"
            if response is LeakResponse.REVOKE_TOKEN and alert.provisioning_token_id is not None:
                await self._provisioning.revoke_token(
                    alert.provisioning_token_id, alert.workspace_id
                )
                return "revoke_token: provisioning token revoked"
            if response is LeakResponse.PAUSE_TOKEN and alert.provisioning_token_id is not None:
                await self._provisioning.pause_token(
                    alert.provisioning_token_id,
                    alert.workspace_id,
                    reason=f"leak alert {alert.kind.value} {alert.id}",
                )
                return "pause_token: provisioning token paused"
        except DomainError as exc:  # e.g. the device was deleted meanwhile
            return f"{response.value} failed: {exc}"[:200]
        return f"{response.value}: no subject"

    @staticmethod
    def _record_response(conn: Connection, alert_id: str, response: str) -> Alert:
        conn.execute(update(alerts).where(alerts.c.id == alert_id).values(response=response))
        alert = _get(conn, alert_id)
        record_audit(
            conn,
            action="alert.auto_response",
            target_kind="alert",
            target_id=alert_id,
            workspace_id=alert.workspace_id,
            after={"response": response},
            detail={
                "deviceId": alert.device_id,
                "provisioningTokenId": alert.provisioning_token_id,
            },
        )
        return alert

    async def list(
        self,
        workspace_id: str,
        *,
        kind: AlertKind | None = None,
        severity: Severity | None = None,
        device_id: str | None = None,
        since: datetime | None = None,
        state: AlertState | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """The workspace's alerts, newest first; ``device_id`` is a device key; page with
        ``after`` (the last alert id seen)."""
        c = alerts.c
        query = select(alerts).where(c.workspace_id == workspace_id)
        if kind is not None:
            query = query.where(c.kind == kind.value)
        if severity is not None:
            query = query.where(c.severity == severity.value)
        if device_id is not None:
            query = query.where(c.device_id == device_id)
        if since is not None:
            query = query.where(c.at >= to_epoch(since))
        if state is AlertState.OPEN:
            query = query.where(c.acknowledged_at.is_(None))
        elif state is AlertState.ACKNOWLEDGED:
            query = query.where(c.acknowledged_at.is_not(None))
        query = query.order_by(c.at.desc(), c.id.desc()).limit(limit)

        def rows(conn: Connection) -> list[Alert]:
            paged = query
            if after is not None:
                last = conn.execute(
                    select(c.at).where(c.id == after, c.workspace_id == workspace_id)
                ).first()
                if last is None:
                    raise NotFound(f"no alert {after!r}", field="after")
                at = last._mapping[c.at]
                paged = query.where(or_(c.at < at, and_(c.at == at, c.id < after)))
            return [_alert(r._mapping) for r in conn.execute(paged)]

        return await self._db.scan(rows)

    async def get(self, alert_id: str, workspace_id: str) -> Alert:
        def find(conn: Connection) -> Alert:
            alert = _get(conn, alert_id)
            if alert.workspace_id != workspace_id:
                raise NotFound(f"no alert {alert_id!r}", field="alertId")
            return alert

        return await self._db.read(find)

    async def acknowledge(self, alert_id: str, workspace_id: str) -> Alert:
        """Mark an alert seen (idempotent: the first acknowledgement's time stays). A later
        repeat of its kind and subject raises a new alert."""
        now = to_epoch(self._clock.now())

        def ack(conn: Connection) -> Alert:
            alert = _get(conn, alert_id)
            if alert.workspace_id != workspace_id:
                raise NotFound(f"no alert {alert_id!r}", field="alertId")
            c = alerts.c
            conn.execute(
                update(alerts)
                .where(c.id == alert_id, c.acknowledged_at.is_(None))
                .values(acknowledged_at=now)
            )
            acknowledged = _get(conn, alert_id)
            if alert.acknowledged_at is None:
                record_audit(
                    conn,
                    action="alert.acknowledged",
                    target_kind="alert",
                    target_id=alert_id,
                    workspace_id=workspace_id,
                    before={"state": alert.state.value},
                    after={"state": acknowledged.state.value},
                )
            return acknowledged

        return await self._db.write(ack)


def _same(column: Any, value: str | None) -> Any:
    return column.is_(None) if value is None else column == value


def _get(conn: Connection, alert_id: str) -> Alert:
    row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFound(f"no alert {alert_id!r}", field="alertId")
    return _alert(row._mapping)


def _alert(m: RowMapping) -> Alert:
    c = alerts.c
    return Alert(
        id=m[c.id],
        at=from_epoch_required(m[c.at]),
        workspace_id=m[c.workspace_id],
        kind=AlertKind(m[c.kind]),
        severity=Severity(m[c.severity]),
        device_id=m[c.device_id],
        provisioning_token_id=m[c.provisioning_token_id],
        evidence=json.loads(m[c.evidence]),
        response=m[c.response],
        occurrences=int(m[c.occurrences]),
        last_seen_at=from_epoch_required(m[c.last_seen_at]),
        acknowledged_at=from_epoch(m[c.acknowledged_at]),
    )


__all__ = ["Alert", "AlertService", "AlertState"]
