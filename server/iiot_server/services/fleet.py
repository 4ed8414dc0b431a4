"""Fleet configurations: desired properties for every device a condition targets."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from ..clock import Clock
from ..domain.errors import Conflict, NotFound
from ..domain.fleet import (
    FleetConfiguration,
    configured_layer,
    is_applied,
    matches,
    parse_condition,
    validate_configuration_id,
    validate_desired,
)
from ..domain.twin import JSON
from ..domain.workspaces import DEFAULT_WORKSPACE, device_key, split_device_key
from ..security import new_id
from ..store.database import Database, from_epoch_required, to_epoch
from ..store.schema import devices, fleet_configurations
from .devices import in_workspace
from .twin import TwinService


@dataclass(frozen=True)
class ConfigurationMetrics:
    targeted: int
    applied: int


class FleetService:
    """Create, change and delete configurations; each change re-evaluates the fleet."""

    def __init__(self, db: Database, clock: Clock, twins: TwinService) -> None:
        self._db = db
        self._clock = clock
        self._twins = twins
        twins.after_change = self.reevaluate_device

    async def create(
        self,
        *,
        target_condition: object,
        desired_properties: object,
        priority: int,
        configuration_id: str | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> FleetConfiguration:
        """A configuration of ``workspace_id``: it targets only that workspace's devices,
        and its id is its own there (another workspace may use the same)."""
        config = self._build(
            configuration_id or new_id(), target_condition, desired_properties, priority
        )
        key = device_key(workspace_id, config.id)

        def write(conn: Connection) -> None:
            exists = select(fleet_configurations.c.id).where(fleet_configurations.c.id == key)
            if conn.execute(exists).first() is not None:
                raise Conflict(f"fleet configuration {config.id!r} exists", field="id")
            conn.execute(insert(fleet_configurations).values(**_row(config, workspace_id)))

        await self._db.write(write)
        await self.reevaluate()
        return config

    async def replace(
        self,
        configuration_id: str,
        *,
        target_condition: object,
        desired_properties: object,
        priority: int,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> FleetConfiguration:
        current = await self.get(configuration_id, workspace_id)
        config = self._build(configuration_id, target_condition, desired_properties, priority)
        config = FleetConfiguration(
            config.id,
            config.target_condition,
            config.raw_condition,
            config.desired_properties,
            config.priority,
            current.created_at,
            config.updated_at,
        )

        def write(conn: Connection) -> None:
            conn.execute(
                update(fleet_configurations)
                .where(fleet_configurations.c.id == device_key(workspace_id, configuration_id))
                .values(**_row(config, workspace_id))
            )

        await self._db.write(write)
        await self.reevaluate()
        return config

    async def delete(self, configuration_id: str, workspace_id: str = DEFAULT_WORKSPACE) -> None:
        key = device_key(workspace_id, configuration_id)

        def write(conn: Connection) -> None:
            result = conn.execute(
                delete(fleet_configurations).where(fleet_configurations.c.id == key)
            )
            if result.rowcount == 0:
                raise NotFound(f"no fleet configuration {configuration_id!r}", field="id")

        await self._db.write(write)
        await self.reevaluate()

    async def get(
        self, configuration_id: str, workspace_id: str = DEFAULT_WORKSPACE
    ) -> FleetConfiguration:
        for config in await self.list(workspace_id):
            if config.id == configuration_id:
                return config
        raise NotFound(f"no fleet configuration {configuration_id!r}", field="id")

    async def list(self, workspace_id: str = DEFAULT_WORKSPACE) -> list[FleetConfiguration]:
        def read(conn: Connection) -> list[FleetConfiguration]:
            rows = conn.execute(
                select(fleet_configurations)
                .where(fleet_configurations.c.workspace_id == workspace_id)
                .order_by(fleet_configurations.c.id)
            )
            return [_config(r._mapping) for r in rows]

        return await self._db.read(read)

    async def _by_workspace(self) -> dict[str, builtins.list[FleetConfiguration]]:
        def read(conn: Connection) -> dict[str, builtins.list[FleetConfiguration]]:
            rows = conn.execute(select(fleet_configurations).order_by(fleet_configurations.c.id))
            grouped: dict[str, builtins.list[FleetConfiguration]] = {}
            for r in rows:
                grouped.setdefault(r._mapping["workspace_id"], []).append(_config(r._mapping))
            return grouped

        return await self._db.read(read)

    async def reevaluate(self) -> int:
        """Re-apply every configuration to every device of its workspace; returns devices
        changed."""
        grouped = await self._by_workspace()

        def layer(key: str, tags: JSON, reported: JSON) -> JSON:
            return configured_layer(grouped.get(split_device_key(key)[0], []), tags, reported)

        return await self._twins.apply_layers(layer)

    async def reevaluate_device(self, device_id: str) -> None:
        configs = await self.list(split_device_key(device_id)[0])
        await self._twins.apply_layers(lambda _, t, r: configured_layer(configs, t, r), device_id)

    async def metrics(
        self, workspace_id: str = DEFAULT_WORKSPACE
    ) -> dict[str, ConfigurationMetrics]:
        """Per configuration: devices targeted, and devices that reported its values back."""
        configs = await self.list(workspace_id)
        counts = {c.id: [0, 0] for c in configs}
        for _, tags, reported in await self._twins.all_documents(
            in_workspace(devices.c.device_id, workspace_id)
        ):
            matching = [c for c in configs if matches(c.target_condition, tags, reported)]
            for config in matching:
                counts[config.id][0] += 1
                if is_applied(config, matching, reported):
                    counts[config.id][1] += 1
        return {cid: ConfigurationMetrics(t, a) for cid, (t, a) in counts.items()}

    def _build(
        self, configuration_id: str, target_condition: object, desired: object, priority: int
    ) -> FleetConfiguration:
        now = self._clock.now()
        condition = parse_condition(target_condition)  # refuses all but a one-key object
        assert isinstance(target_condition, dict)
        return FleetConfiguration(
            id=validate_configuration_id(configuration_id),
            target_condition=condition,
            raw_condition=target_condition,
            desired_properties=validate_desired(desired),
            priority=priority,
            created_at=now,
            updated_at=now,
        )


def _row(config: FleetConfiguration, workspace_id: str) -> dict[str, Any]:
    return {
        "id": device_key(workspace_id, config.id),
        "workspace_id": workspace_id,
        "target_condition": config.raw_condition,
        "desired_properties": config.desired_properties,
        "priority": config.priority,
        "created_at": to_epoch(config.created_at),
        "updated_at": to_epoch(config.updated_at),
    }


def _config(m: RowMapping) -> FleetConfiguration:
    c = fleet_configurations.c
    raw: JSON = dict(m[c.target_condition])
    return FleetConfiguration(
        id=split_device_key(m[c.id])[1],
        target_condition=parse_condition(raw),
        raw_condition=raw,
        desired_properties=dict(m[c.desired_properties]),
        priority=int(m[c.priority]),
        created_at=from_epoch_required(m[c.created_at]),
        updated_at=from_epoch_required(m[c.updated_at]),
    )
