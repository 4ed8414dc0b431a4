"""Device twins: desired, reported and tags, versioned, patched by JSON merge-patch."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..clock import Clock
from ..domain.convergence import (
    ConvergenceState,
    state_after_desired_change,
    state_after_report,
)
from ..domain.documents import decode_json_document
from ..domain.errors import DomainError, NotFound, ValidationError
from ..domain.fleet import ConfiguredLayer, layer_change
from ..domain.twin import JSON, changes_since, merge_patch, validate_patch, with_version
from ..domain.workspaces import named_device, split_device_key
from ..events import PlatformEvents
from ..store import statements
from ..store.database import Database, from_epoch, from_epoch_required, to_epoch
from ..store.schema import desired_patches, devices, twin_property_states, twins
from .audit import record_audit

log = logging.getLogger(__name__)

DESIRED_HISTORY = 100
"""Desired patches kept per device for catch-up; older holders get the full document."""


class Section(StrEnum):
    DESIRED = "desired"
    REPORTED = "reported"
    TAGS = "tags"


@dataclass(frozen=True)
class TwinSection:
    properties: JSON
    version: int
    updated_at: datetime | None


@dataclass(frozen=True)
class PropertySource:
    """Who set a desired property: ``manual`` (a desired patch over the admin API) or
    ``configuration`` (the fleet configuration ``configuration_id`` at ``priority``)."""

    kind: str
    configuration_id: str | None = None
    priority: int | None = None


MANUAL = PropertySource("manual")


@dataclass(frozen=True)
class PropertyConvergence:
    """One top-level desired property: its state, since when, the desired change it is
    about (version and time) and who made that change."""

    state: ConvergenceState
    since: datetime
    changed_at: datetime
    desired_version: int
    source: PropertySource
    converged_at: datetime | None
    drifted_at: datetime | None
    seconds_since_change: float
    seconds_in_state: float


@dataclass(frozen=True)
class Twin:
    device_id: str
    desired: TwinSection
    reported: TwinSection
    tags: TwinSection
    convergence: dict[str, PropertyConvergence] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredCatchUp:
    """What a device holding some desired version needs: a patch, or the full document."""

    version: int
    patch: JSON | None = None
    full: JSON | None = None


class TwinService:
    """Read and patch twins; desired changes are published as ``desired_changed`` events
    ``(device_id, patch_with_version)`` for the broker to push to the device."""

    def __init__(self, db: Database, clock: Clock, events: PlatformEvents) -> None:
        self._db = db
        self._clock = clock
        self._events = events
        # One FIFO lock per device with a patch in flight: patches reach the database in
        # the order they were called. SQLite's inline writes keep that order by themselves;
        # on a thread pool (PostgreSQL) two reported patches sent back to back were merged
        # in the opposite order (tests/device/test_sdk.py::test_twin_both_ways).
        self._in_call_order: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.after_change: Callable[[str], Awaitable[None]] | None = None
        """Called after tags or reported properties change (fleet re-evaluation)."""

    async def get(self, device_id: str, *, convergence: bool = True) -> Twin:
        """The twin; ``convergence=False``: without its properties' states (a read less)."""

        def read(conn: Connection) -> Twin:
            m = _row(conn, device_id, create=False)
            return self._twin(conn, device_id, m, convergence=convergence)

        return await self._db.read(read)

    def _twin(
        self, conn: Connection, device_id: str, m: dict[str, Any], *, convergence: bool = True
    ) -> Twin:
        now = to_epoch(self._clock.now())
        return Twin(
            device_id,
            _section(m, "desired"),
            _section(m, "reported"),
            _section(m, "tags"),
            property_states(conn, device_id, now) if convergence and m["desired_version"] else {},
        )

    async def patch(
        self, device_id: str, section: Section, patch: object, *, convergence: bool = True
    ) -> Twin:
        """Merge ``patch`` into one section; its version grows by one. The answer has the
        convergence states unless ``convergence=False`` (a device's own report: nobody
        reads them there)."""
        validated = validate_patch(patch, field=section.value)
        t = to_epoch(self._clock.now())

        def write(conn: Connection) -> Twin:
            row = _row(conn, device_id, create=True)
            document = merge_patch(row[section.value], validated)
            version = row[f"{section.value}_version"] + 1
            conn.execute(
                update(twins)
                .where(twins.c.device_id == device_id)
                .values(
                    {
                        section.value: document,
                        f"{section.value}_version": version,
                        f"{section.value}_updated_at": t,
                    }
                )
            )
            if section is Section.DESIRED:
                record_desired_change(
                    conn,
                    device_id,
                    document,
                    row["reported"],
                    touched=validated.keys(),
                    version=version,
                    at=t,
                    source_of=lambda _: MANUAL,
                )
                conn.execute(
                    insert(desired_patches).values(
                        device_id=device_id, version=version, patch=validated, created_at=t
                    )
                )
                conn.execute(
                    delete(desired_patches).where(
                        desired_patches.c.device_id == device_id,
                        desired_patches.c.version <= version - DESIRED_HISTORY,
                    )
                )
            elif section is Section.REPORTED:
                record_report(conn, device_id, row["desired"], document, at=t)
            if section is not Section.REPORTED:  # the platform's changes, not the device's
                workspace_id, bare = split_device_key(device_id)
                record_audit(
                    conn,
                    action=f"twin.{section.value}_patched",
                    target_kind="device",
                    target_id=bare,
                    workspace_id=workspace_id,
                    before=row[section.value],
                    after=document,
                    detail={"patch": validated, "version": version},
                )
            # read back by get() below after a fleet re-evaluation: not twice (the read
            # cost 19 % of a reported patch, profiled with 5 desired properties)
            return self._twin(
                conn, device_id, _row(conn, device_id, create=False), convergence=final
            )

        final = convergence and (section is Section.DESIRED or self.after_change is None)
        order = self._in_call_order.get(device_id)
        if order is None:
            order = self._in_call_order[device_id] = asyncio.Lock()
        async with order:
            twin = await self._db.write(write)
        if section is not Section.DESIRED and self.after_change is not None:
            await self.after_change(device_id)  # fleet targeting may have changed
            twin = await self.get(device_id, convergence=convergence)
        if section is Section.DESIRED:
            self._events.publish(
                "desired_changed", device_id, with_version(validated, twin.desired.version)
            )
        return twin

    async def apply_layers(
        self,
        layer_for: Callable[[str, JSON, JSON], ConfiguredLayer],
        device_id: str | None = None,
    ) -> int:
        """Re-evaluate the configured layer of one device (or all) in one transaction:
        ``layer_for(device_key, tags, reported)`` gives the new layer and which
        configuration set each key, the difference to the previous one becomes an ordinary
        desired patch (versioned, pushed to the device, its properties' sources and
        convergence recorded). Returns how many devices changed."""
        t = to_epoch(self._clock.now())

        def write(conn: Connection) -> list[tuple[str, JSON]]:
            # in key order: two re-evaluations lock the twins in the same order (no deadlock)
            query = select(devices.c.device_id).order_by(devices.c.device_id)
            if device_id is not None:
                query = query.where(devices.c.device_id == device_id)
            changed = []
            for (did,) in conn.execute(query).all():
                row = _row(conn, did, create=True)
                configured = layer_for(did, row["tags"], row["reported"])
                layer = configured.layer
                patch = layer_change(row["configured"] or {}, layer, row["desired"])
                values: dict[str, Any] = {"configured": layer}
                if patch:
                    version = row["desired_version"] + 1
                    desired = merge_patch(row["desired"], patch)
                    values.update(desired=desired, desired_version=version, desired_updated_at=t)

                    def source_of(
                        key: str, sources: ConfiguredLayer = configured
                    ) -> PropertySource:
                        winner = sources.sources.get(key)
                        if winner is None:  # removed: no row is kept for it
                            return MANUAL
                        return PropertySource("configuration", winner[0], winner[1])

                    record_desired_change(
                        conn,
                        did,
                        desired,
                        row["reported"],
                        touched=patch.keys(),
                        version=version,
                        at=t,
                        source_of=source_of,
                    )
                    conn.execute(
                        insert(desired_patches).values(
                            device_id=did, version=version, patch=patch, created_at=t
                        )
                    )
                    changed.append((did, with_version(patch, version)))
                if patch or layer != row["configured"]:
                    conn.execute(update(twins).where(twins.c.device_id == did).values(values))
                record_sources(conn, did, values.get("desired", row["desired"]), configured)
            return changed

        changed = await self._db.write(write)
        for did, patch in changed:
            self._events.publish("desired_changed", did, patch)
        return len(changed)

    async def all_documents(
        self, where: ColumnElement[bool] | None = None
    ) -> list[tuple[str, JSON, JSON]]:
        """``(device_id, tags, reported)`` of every device (``where`` it holds), for fleet
        metrics."""
        query = select(devices.c.device_id, twins.c.tags, twins.c.reported).outerjoin(
            twins, twins.c.device_id == devices.c.device_id
        )
        if where is not None:
            query = query.where(where)

        def read(conn: Connection) -> list[tuple[str, JSON, JSON]]:
            rows = conn.execute(query)
            return [(r.device_id, dict(r.tags or {}), dict(r.reported or {})) for r in rows]

        return await self._db.read(read)

    async def desired_documents(
        self, where: ColumnElement[bool] | None = None
    ) -> list[tuple[str, JSON, JSON, JSON, JSON]]:
        """``(device_id, tags, reported, desired, configured)`` of every device (``where``
        it holds), for a fleet configuration's dry run."""
        query = select(
            devices.c.device_id, twins.c.tags, twins.c.reported, twins.c.desired, twins.c.configured
        ).outerjoin(twins, twins.c.device_id == devices.c.device_id)
        if where is not None:
            query = query.where(where)
        query = query.order_by(devices.c.device_id)

        def read(conn: Connection) -> list[tuple[str, JSON, JSON, JSON, JSON]]:
            return [
                (
                    r.device_id,
                    dict(r.tags or {}),
                    dict(r.reported or {}),
                    dict(r.desired or {}),
                    dict(r.configured or {}),
                )
                for r in conn.execute(query)
            ]

        return await self._db.scan(read)

    async def device_request(
        self, device_id: str, reported: bool, payload: bytes
    ) -> dict[str, Any] | None:
        """A device's ``twin/reported`` patch (applied; None) or ``twin/get`` (the answer for
        ``twin/res``: reported, and desired as a catch-up patch since the version the
        device holds or in full), as both brokers serve them. A refused request (bad or
        too deep JSON, a refused patch, a bad ``since``) is answered ``{"error": {"detail",
        "field"}}``; anything else (the database) raises, so the request is not
        acknowledged and the device sends it again."""
        try:  # bounded decode: a too-deep document is a refused patch, never a RecursionError
            section = "reported" if reported else "request"
            body = decode_json_document(payload or b"{}", field=section)
            if reported:
                await self.patch(device_id, Section.REPORTED, body, convergence=False)
                return None
            since = body.get("since") if isinstance(body, dict) else None
            if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
                raise ValidationError("since must be an integer version", field="since")
            catch_up = await self.desired_since(device_id, since)
            twin = await self.get(device_id)
            answer: dict[str, Any] = {
                "reported": with_version(twin.reported.properties, twin.reported.version)
            }
            if catch_up.patch is not None:
                answer["desired"] = with_version(catch_up.patch, catch_up.version)
                answer["since"] = since
            else:
                answer["desired"] = with_version(catch_up.full or {}, catch_up.version)
            return answer
        except (ValueError, DomainError) as exc:  # bad JSON or a refused patch: tell the device
            log.info("twin request from %s refused: %s", device_id, exc)
            return {"error": {"detail": str(exc), "field": getattr(exc, "field", None)}}

    async def desired_since(self, device_id: str, version: int | None) -> DesiredCatchUp:
        """Offline catch-up: the combined patch since ``version``, or the full document when
        none was given, the history no longer reaches back, or no single patch can say it."""

        def read(conn: Connection) -> DesiredCatchUp:
            row = _row(conn, device_id, create=False)
            current = int(row["desired_version"])
            if version is not None:
                history = [
                    (r.version, r.patch)
                    for r in conn.execute(
                        select(desired_patches.c.version, desired_patches.c.patch).where(
                            desired_patches.c.device_id == device_id,
                            desired_patches.c.version > version,
                        )
                    )
                ]
                patch = changes_since(history, version, current)
                if patch is not None:
                    return DesiredCatchUp(current, patch=patch)
            return DesiredCatchUp(current, full=dict(row["desired"]))

        return await self._db.read(read)


_EMPTY = {
    "desired": {},
    "desired_version": 0,
    "desired_updated_at": None,
    "reported": {},
    "reported_version": 0,
    "reported_updated_at": None,
    "tags": {},
    "tags_version": 0,
    "tags_updated_at": None,
    "configured": {},
}


def _row(conn: Connection, device_id: str, *, create: bool) -> dict[str, Any]:
    """The twin's row; a device without one has empty sections (inserted if ``create``).

    ``create`` is for a write that reads, merges and writes back: the row is locked (FOR
    UPDATE) until the transaction ends, so concurrent patches of one twin queue instead of
    one overwriting the other. On SQLite the loop runs one transaction at a time anyway; on
    PostgreSQL units of work run on several threads, and 50 reported patches sent at once
    kept 12-15 of them without the lock (tests/integration/test_messages.py)."""
    query = statements.LOCK_TWIN if create else statements.SELECT_TWIN
    row = conn.execute(query, {"b_device_id": device_id}).first()
    if row is not None:
        return dict(row._mapping)
    if conn.execute(statements.DEVICE_EXISTS, {"b_device_id": device_id}).first() is None:
        raise NotFound(f"no device {named_device(device_id)}", field="deviceId")
    if not create:
        return {"device_id": device_id, **_EMPTY}
    # A concurrent first patch may insert it too: keep whichever came first, then lock it.
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(twins).values(device_id=device_id, **_EMPTY).on_conflict_do_nothing()
    )
    # a deleted device's rows (deletion leaves them: readers join ``devices``) must not
    # come back with a new device of the same Device ID
    tps = twin_property_states.c
    conn.execute(delete(twin_property_states).where(tps.device_id == device_id))
    return dict(conn.execute(query, {"b_device_id": device_id}).one()._mapping)


def _section(m: dict[str, Any] | RowMapping, name: str) -> TwinSection:
    return TwinSection(
        dict(m[name]), int(m[f"{name}_version"]), from_epoch(m[f"{name}_updated_at"])
    )


# Convergence and provenance rows ---------------------------------------------------


def record_desired_change(
    conn: Connection,
    device_id: str,
    desired: JSON,
    reported: JSON,
    *,
    touched: Iterable[str],
    version: int,
    at: float,
    source_of: Callable[[str], PropertySource],
) -> None:
    """Top-level desired properties a patch touched start over: pending, or converged at
    once when the device already reports the value; a removed one loses its row."""
    tps = twin_property_states.c
    for key in touched:
        conn.execute(
            delete(twin_property_states).where(tps.device_id == device_id, tps.property == key)
        )
        if key not in desired:
            continue
        source = source_of(key)
        state = state_after_desired_change(desired[key], reported.get(key))
        converged = state is ConvergenceState.CONVERGED
        conn.execute(
            insert(twin_property_states).values(
                device_id=device_id,
                property=key,
                desired_version=version,
                changed_at=at,
                source=source.kind,
                configuration_id=source.configuration_id,
                priority=source.priority,
                state=state.value,
                state_since=at,
                converged_at=at if converged else None,
                drifted_at=None,
            )
        )


def record_report(
    conn: Connection, device_id: str, desired: JSON, reported: JSON, *, at: float
) -> None:
    """After a reported patch: each desired property's state moves (pending, drifted or
    failed to converged when reported right, converged to drifted when reported otherwise,
    to failed on a failure acknowledgement of its desired version: domain/convergence.py)."""
    tps = twin_property_states.c
    rows = conn.execute(
        select(tps.property, tps.state, tps.desired_version).where(tps.device_id == device_id)
    ).all()
    for prop, raw_state, desired_version in rows:
        if prop not in desired:
            continue
        current = ConvergenceState(raw_state)
        state = state_after_report(current, desired[prop], reported.get(prop), int(desired_version))
        if state is current:
            continue
        values: dict[str, Any] = {"state": state.value, "state_since": at}
        if state is ConvergenceState.CONVERGED:
            values["converged_at"] = at
        elif state is ConvergenceState.DRIFTED:
            values["drifted_at"] = at
        conn.execute(
            update(twin_property_states)
            .where(tps.device_id == device_id, tps.property == prop)
            .values(values)
        )


def record_sources(
    conn: Connection, device_id: str, desired: JSON, configured: ConfiguredLayer
) -> None:
    """A configured key whose value did not change but whose winner did (a higher
    configuration setting the same value, a manual value the layer now also sets) names
    its new source; its convergence is untouched."""
    tps = twin_property_states.c
    rows = conn.execute(
        select(tps.property, tps.source, tps.configuration_id, tps.priority).where(
            tps.device_id == device_id
        )
    ).all()
    for prop, kind, configuration_id, priority in rows:
        winner = configured.sources.get(prop)
        if winner is None or configured.layer.get(prop) != desired.get(prop):
            continue
        if (kind, configuration_id, priority) != ("configuration", winner[0], winner[1]):
            conn.execute(
                update(twin_property_states)
                .where(tps.device_id == device_id, tps.property == prop)
                .values(source="configuration", configuration_id=winner[0], priority=winner[1])
            )


def property_states(conn: Connection, device_id: str, now: float) -> dict[str, PropertyConvergence]:
    """The device's desired properties' convergence (``now``: for the seconds since)."""
    tps = twin_property_states.c
    rows = conn.execute(
        select(twin_property_states).where(tps.device_id == device_id).order_by(tps.property)
    )
    return {m[tps.property]: _convergence(m, now) for m in (r._mapping for r in rows)}


def _convergence(m: RowMapping, now: float) -> PropertyConvergence:
    tps = twin_property_states.c
    return PropertyConvergence(
        state=ConvergenceState(m[tps.state]),
        since=from_epoch_required(m[tps.state_since]),
        changed_at=from_epoch_required(m[tps.changed_at]),
        desired_version=int(m[tps.desired_version]),
        source=PropertySource(m[tps.source], m[tps.configuration_id], m[tps.priority]),
        converged_at=from_epoch(m[tps.converged_at]),
        drifted_at=from_epoch(m[tps.drifted_at]),
        seconds_since_change=max(0.0, now - m[tps.changed_at]),
        seconds_in_state=max(0.0, now - m[tps.state_since]),
    )
