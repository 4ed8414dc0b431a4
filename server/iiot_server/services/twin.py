"""Device twins: desired, reported and tags, versioned, patched by JSON merge-patch."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..clock import Clock
from ..domain.documents import decode_json_document
from ..domain.errors import DomainError, NotFound, ValidationError
from ..domain.fleet import layer_change
from ..domain.twin import JSON, changes_since, merge_patch, validate_patch, with_version
from ..domain.workspaces import named_device
from ..events import PlatformEvents
from ..store.database import Database, from_epoch, to_epoch
from ..store.schema import desired_patches, devices, twins

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
class Twin:
    device_id: str
    desired: TwinSection
    reported: TwinSection
    tags: TwinSection


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

    async def get(self, device_id: str) -> Twin:
        def read(conn: Connection) -> Twin:
            return _twin(device_id, _row(conn, device_id, create=False))

        return await self._db.read(read)

    async def patch(self, device_id: str, section: Section, patch: object) -> Twin:
        """Merge ``patch`` into one section; its version grows by one."""
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
            return _twin(device_id, _row(conn, device_id, create=False))

        order = self._in_call_order.get(device_id)
        if order is None:
            order = self._in_call_order[device_id] = asyncio.Lock()
        async with order:
            twin = await self._db.write(write)
        if section is not Section.DESIRED and self.after_change is not None:
            await self.after_change(device_id)  # fleet targeting may have changed
            twin = await self.get(device_id)
        if section is Section.DESIRED:
            self._events.publish(
                "desired_changed", device_id, with_version(validated, twin.desired.version)
            )
        return twin

    async def apply_layers(
        self, layer_for: Callable[[str, JSON, JSON], JSON], device_id: str | None = None
    ) -> int:
        """Re-evaluate the configured layer of one device (or all) in one transaction:
        ``layer_for(device_key, tags, reported)`` gives the new layer, the difference to the
        previous one becomes an ordinary desired patch (versioned, pushed to the device).
        Returns how many devices changed."""
        t = to_epoch(self._clock.now())

        def write(conn: Connection) -> list[tuple[str, JSON]]:
            # in key order: two re-evaluations lock the twins in the same order (no deadlock)
            query = select(devices.c.device_id).order_by(devices.c.device_id)
            if device_id is not None:
                query = query.where(devices.c.device_id == device_id)
            changed = []
            for (did,) in conn.execute(query).all():
                row = _row(conn, did, create=True)
                layer = layer_for(did, row["tags"], row["reported"])
                patch = layer_change(row["configured"] or {}, layer, row["desired"])
                values: dict[str, Any] = {"configured": layer}
                if patch:
                    version = row["desired_version"] + 1
                    values.update(
                        desired=merge_patch(row["desired"], patch),
                        desired_version=version,
                        desired_updated_at=t,
                    )
                    conn.execute(
                        insert(desired_patches).values(
                            device_id=did, version=version, patch=patch, created_at=t
                        )
                    )
                    changed.append((did, with_version(patch, version)))
                if patch or layer != row["configured"]:
                    conn.execute(update(twins).where(twins.c.device_id == did).values(values))
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
                await self.patch(device_id, Section.REPORTED, body)
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
    query = select(twins).where(twins.c.device_id == device_id)
    if create:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is not None:
        return dict(row._mapping)
    device = select(devices.c.device_id).where(devices.c.device_id == device_id)
    if conn.execute(device).first() is None:
        raise NotFound(f"no device {named_device(device_id)}", field="deviceId")
    if not create:
        return {"device_id": device_id, **_EMPTY}
    # A concurrent first patch may insert it too: keep whichever came first, then lock it.
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(twins).values(device_id=device_id, **_EMPTY).on_conflict_do_nothing()
    )
    return dict(conn.execute(query).one()._mapping)


def _section(m: dict[str, Any] | RowMapping, name: str) -> TwinSection:
    return TwinSection(
        dict(m[name]), int(m[f"{name}_version"]), from_epoch(m[f"{name}_updated_at"])
    )


def _twin(device_id: str, m: dict[str, Any]) -> Twin:
    return Twin(device_id, _section(m, "desired"), _section(m, "reported"), _section(m, "tags"))
