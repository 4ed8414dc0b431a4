"""Fleet configurations: desired properties for every device a condition targets."""

from __future__ import annotations

import asyncio
import builtins
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, func, insert, select, update

from ..clock import Clock
from ..domain.convergence import (
    ConvergenceState,
    RolloutDecision,
    RolloutPlan,
    RolloutState,
    StageCounts,
    admitted_through,
    decide,
    parse_rollout,
    rollout_order,
    timed_out,
    worst,
)
from ..domain.errors import Conflict, NotFound
from ..domain.fleet import (
    ConfiguredLayer,
    FleetConfiguration,
    RolloutStatus,
    by_priority,
    configured_layer_with_sources,
    is_applied,
    layer_change,
    matches,
    parse_condition,
    validate_configuration_id,
    validate_desired,
)
from ..domain.twin import JSON, merge_patch
from ..domain.workspaces import DEFAULT_WORKSPACE, device_key, split_device_key
from ..security import new_id
from ..store.database import Database, from_epoch, from_epoch_required, to_epoch
from ..store.schema import devices, fleet_configurations, rollout_members, twin_property_states
from . import audit
from .audit import record_audit
from .devices import in_workspace
from .twin import PropertySource, TwinService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageMetrics:
    """One stage of a staged rollout: the devices it admitted and their convergence;
    ``timed_out``: of the ``pending`` ones, those past the plan's ``pendingTimeout``."""

    stage: int
    plan: dict[str, Any]
    admitted: int
    pending: int
    converged: int
    drifted: int
    failed: int = 0
    timed_out: int = 0


@dataclass(frozen=True)
class ConfigurationMetrics:
    """``targeted``: devices the condition matches; ``applied``: those that reported back
    every value this configuration wins on; ``pending``/``converged``/``drifted``/
    ``failed``: devices by the worst state of the properties this configuration set on them
    (devices where another source owns all of them are in none); ``stages`` of a staged
    rollout."""

    targeted: int
    applied: int
    pending: int = 0
    converged: int = 0
    drifted: int = 0
    stages: list[StageMetrics] = field(default_factory=list)
    failed: int = 0


@dataclass(frozen=True)
class DryRunDevice:
    """What a configuration change would do to one device: its desired properties before
    and after, whether the configuration targets it and, in a staged rollout, the stage
    that would give it the configuration (0: at once; None: not targeted)."""

    device_id: str
    targeted: bool
    stage: int | None
    before: JSON
    after: JSON

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class DryRun:
    configuration: FleetConfiguration
    targeted: int
    devices: list[DryRunDevice]


@dataclass(frozen=True)
class ProvenanceCandidate:
    """A configuration targeting the device that sets this property, and its value."""

    configuration_id: str
    priority: int
    value: Any
    applies: bool
    """False: a staged rollout has not reached this device yet."""


@dataclass(frozen=True)
class PropertyProvenance:
    value: Any
    source: PropertySource | None
    """None: set before convergence was recorded (revision 0007)."""
    set_at: datetime | None
    desired_version: int | None
    configurations: list[ProvenanceCandidate]
    """Every targeting configuration setting it, highest priority first: the first that
    applies wins at the next re-evaluation (a manual value it differs from is reset)."""


Members = dict[str, set[str]]
"""Configuration key → device keys its staged rollout admitted."""

Admissions = dict[str, tuple[int, float]]
"""Device key → (stage, epoch seconds) a staged rollout admitted it in and at."""


class FleetService:
    """Create, change and delete configurations; each change re-evaluates the fleet."""

    def __init__(self, db: Database, clock: Clock, twins: TwinService) -> None:
        self._db = db
        self._clock = clock
        self._twins = twins
        twins.after_change = self.reevaluate_device
        self._rollout_timers: dict[str, tuple[float, asyncio.Task[None]]] = {}
        """Configuration key → (deadline, task): a rolling stage with a ``pendingTimeout``
        is checked again when its earliest pending device times out."""

    async def create(
        self,
        *,
        target_condition: object,
        desired_properties: object,
        priority: int,
        configuration_id: str | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
        rollout: object = None,
    ) -> FleetConfiguration:
        """A configuration of ``workspace_id``: it targets only that workspace's devices,
        and its id is its own there (another workspace may use the same). With a
        ``rollout`` (``domain/convergence.py``) its first stage gets it at once, the next
        ones as the previous converge."""
        config = self._build(
            configuration_id or new_id(), target_condition, desired_properties, priority, rollout
        )
        key = device_key(workspace_id, config.id)
        first_stage = await self._first_stage(config, workspace_id)

        def write(conn: Connection) -> None:
            exists = select(fleet_configurations.c.id).where(fleet_configurations.c.id == key)
            if conn.execute(exists).first() is not None:
                raise Conflict(f"fleet configuration {config.id!r} exists", field="id")
            conn.execute(insert(fleet_configurations).values(**_row(config, workspace_id)))
            _admit(conn, key, first_stage, 0, to_epoch(config.updated_at))
            _audit_configuration(
                conn, "configuration.created", workspace_id, config.id, None, config
            )

        await self._db.write(write)
        await self.reevaluate()
        await self.check_rollouts(workspace_id)
        return await self.get(config.id, workspace_id)

    async def replace(
        self,
        configuration_id: str,
        *,
        target_condition: object,
        desired_properties: object,
        priority: int,
        workspace_id: str = DEFAULT_WORKSPACE,
        rollout: object = None,
    ) -> FleetConfiguration:
        """Change a configuration. With a ``rollout`` the change rolls out afresh: its first
        stage gets it at once, the other targeted devices lose this configuration's
        properties until their stage (so a new value reaches one slice first)."""
        current = await self.get(configuration_id, workspace_id)
        config = self._build(
            configuration_id, target_condition, desired_properties, priority, rollout
        )
        config = replace(config, created_at=current.created_at)
        key = device_key(workspace_id, configuration_id)
        first_stage = await self._first_stage(config, workspace_id)

        def write(conn: Connection) -> None:
            before = _stored(conn, key)
            conn.execute(
                update(fleet_configurations)
                .where(fleet_configurations.c.id == key)
                .values(**_row(config, workspace_id))
            )
            conn.execute(delete(rollout_members).where(rollout_members.c.configuration_id == key))
            _admit(conn, key, first_stage, 0, to_epoch(config.updated_at))
            _audit_configuration(
                conn, "configuration.updated", workspace_id, config.id, before, config
            )

        await self._db.write(write)
        await self.reevaluate()
        await self.check_rollouts(workspace_id)
        return await self.get(config.id, workspace_id)

    async def delete(self, configuration_id: str, workspace_id: str = DEFAULT_WORKSPACE) -> None:
        key = device_key(workspace_id, configuration_id)

        def write(conn: Connection) -> None:
            before = _stored(conn, key)
            result = conn.execute(
                delete(fleet_configurations).where(fleet_configurations.c.id == key)
            )
            if result.rowcount == 0:
                raise NotFound(f"no fleet configuration {configuration_id!r}", field="id")
            conn.execute(delete(rollout_members).where(rollout_members.c.configuration_id == key))
            _audit_configuration(
                conn, "configuration.deleted", workspace_id, configuration_id, before, None
            )

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
        members = await self._members()

        def layer(key: str, tags: JSON, reported: JSON) -> ConfiguredLayer:
            workspace = split_device_key(key)[0]
            return _layer_for(grouped.get(workspace, []), members, workspace, key, tags, reported)

        return await self._twins.apply_layers(layer)

    async def reevaluate_device(self, device_id: str) -> None:
        """One device's tags or reported properties changed: its layer, then the staged
        rollouts it is part of (its report may complete or halt a stage)."""
        workspace = split_device_key(device_id)[0]
        configs = await self.list(workspace)
        staged = any(not c.reaches_every_target for c in configs)
        members = await self._members(device_id) if staged else {}  # else: a read saved
        await self._twins.apply_layers(
            lambda key, t, r: _layer_for(configs, members, workspace, key, t, r), device_id
        )
        rolling = {
            split_device_key(k)[1] for k, devices_in in members.items() if device_id in devices_in
        }
        if any(c.id in rolling and _is_rolling(c) for c in configs):
            await self.check_rollouts(workspace)

    async def _members(self, device_id: str | None = None) -> Members:
        query = select(rollout_members.c.configuration_id, rollout_members.c.device_id)
        if device_id is not None:
            query = query.where(rollout_members.c.device_id == device_id)

        def read(conn: Connection) -> Members:
            out: Members = {}
            for configuration_key, did in conn.execute(query):
                out.setdefault(configuration_key, set()).add(did)
            return out

        return await self._db.read(read)

    async def metrics(
        self, workspace_id: str = DEFAULT_WORKSPACE
    ) -> dict[str, ConfigurationMetrics]:
        """Per configuration: devices targeted, devices that reported its values back, its
        devices by convergence, and a staged rollout's stages."""
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
        states = await self._device_states(workspace_id)
        now = to_epoch(self._clock.now())
        out = {}
        for c in configs:
            mine = states.get(c.id, {})
            by_state = _count(mine.values())
            stages = []
            if c.rollout is not None:
                admissions = await self._admissions(device_key(workspace_id, c.id))
                for index, stage in enumerate(c.rollout.plan.stages):
                    counted, _ = _stage_counts(c.rollout.plan, mine, admissions, index, now)
                    stages.append(
                        StageMetrics(
                            index,
                            stage.wire(),
                            counted.devices,
                            counted.pending,
                            counted.converged,
                            counted.drifted,
                            counted.failed,
                            counted.timed_out,
                        )
                    )
            targeted, applied = counts[c.id]
            out[c.id] = ConfigurationMetrics(
                targeted,
                applied,
                by_state.pending,
                by_state.converged,
                by_state.drifted,
                stages,
                by_state.failed,
            )
        return out

    async def _device_states(self, workspace_id: str) -> dict[str, dict[str, ConvergenceState]]:
        """Configuration id → device key → the worst state of the properties it set there."""
        tps = twin_property_states.c
        query = (
            select(tps.configuration_id, tps.device_id, tps.state)
            .join(devices, devices.c.device_id == tps.device_id)  # not a deleted device's
            .where(tps.source == "configuration", in_workspace(tps.device_id, workspace_id))
        )

        def read(conn: Connection) -> dict[str, dict[str, ConvergenceState]]:
            found: dict[str, dict[str, list[ConvergenceState]]] = {}
            for cid, did, state in conn.execute(query):
                found.setdefault(cid, {}).setdefault(did, []).append(ConvergenceState(state))
            return {
                cid: {did: w for did, s in per.items() if (w := worst(s)) is not None}
                for cid, per in found.items()
            }

        return await self._db.scan(read)

    async def _admissions(self, configuration_key: str) -> Admissions:
        m = rollout_members.c
        query = select(m.device_id, m.stage, m.admitted_at).where(
            m.configuration_id == configuration_key
        )

        def read(conn: Connection) -> Admissions:
            return {did: (int(stage), float(at)) for did, stage, at in conn.execute(query)}

        return await self._db.read(read)

    async def convergence_counts(
        self, workspace_id: str = DEFAULT_WORKSPACE
    ) -> dict[str, dict[str, int]]:
        """Fleet-wide: per top-level desired property, devices by convergence state."""
        tps = twin_property_states.c
        query = (
            select(tps.property, tps.state, func.count())
            .join(devices, devices.c.device_id == tps.device_id)  # not a deleted device's
            .where(in_workspace(tps.device_id, workspace_id))
            .group_by(tps.property, tps.state)
        )

        def read(conn: Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for prop, state, n in conn.execute(query):
                per = out.setdefault(prop, {s.value: 0 for s in ConvergenceState})
                per[state] = int(n)
            return dict(sorted(out.items()))

        return await self._db.scan(read)

    # Staged rollouts -------------------------------------------------------------------

    async def _targeted(self, config: FleetConfiguration, workspace_id: str) -> builtins.list[str]:
        documents = await self._twins.all_documents(in_workspace(devices.c.device_id, workspace_id))
        return [did for did, tags, rep in documents if matches(config.target_condition, tags, rep)]

    async def _first_stage(
        self, config: FleetConfiguration, workspace_id: str
    ) -> builtins.list[str]:
        if config.rollout is None:
            return []
        key = device_key(workspace_id, config.id)
        order = rollout_order(key, await self._targeted(config, workspace_id))
        return order[: admitted_through(config.rollout.plan, 0, len(order))]

    async def check_rollouts(self, workspace_id: str = DEFAULT_WORKSPACE) -> None:
        """Advance or halt every rolling configuration of the workspace whose current stage
        says so (``domain/convergence.py: decide``); an advance admits the next slice of
        targeted devices and re-evaluates the fleet, then checks again (a stage whose
        devices already report the values passes at once). Called when a rollout's device
        reports, on create, change and resume, and by a timer at the earliest instant a
        pending device of a stage with a ``pendingTimeout`` times out (the only change of
        the shares that no write makes): one timer per rolling configuration, armed on the
        platform's clock (``clock.sleep``, as the broker's credential expiry), and armed
        again from the stored admission times at start-up (:meth:`start_rollout_timers`)."""
        configs = await self.list(workspace_id)
        most_stages = max((len(c.rollout.plan.stages) for c in configs if c.rollout), default=0)
        deadlines: dict[str, float] = {}
        for _ in range(1 + most_stages):  # each round advances a rollout by a stage, or ends
            advanced = False
            for config in await self.list(workspace_id):
                if not _is_rolling(config):
                    continue
                key = device_key(workspace_id, config.id)
                moved, deadline = await self._step(config, workspace_id)
                deadlines.pop(key, None)
                if deadline is not None:
                    deadlines[key] = deadline
                advanced = advanced or moved
            if not advanced:
                break
            await self.reevaluate()
        self._arm_rollout_timers(workspace_id, deadlines)

    async def start_rollout_timers(self) -> None:
        """At start-up: judge every rolling rollout with a ``pendingTimeout`` again (devices
        may have timed out while the platform was down) and arm its timer from the
        admission times stored in ``rollout_members``."""
        for workspace_id, configs in (await self._by_workspace()).items():
            if any(_waits_on_timeouts(c) for c in configs):
                await self.check_rollouts(workspace_id)

    def stop_rollout_timers(self) -> None:
        for _, task in self._rollout_timers.values():
            task.cancel()
        self._rollout_timers.clear()

    def rollout_deadlines(self) -> dict[str, datetime]:
        """Configuration key → when its timer will judge its stage again (for tests and
        operators: which rollouts wait on a timeout)."""
        return {k: from_epoch_required(d) for k, (d, _) in self._rollout_timers.items()}

    def _arm_rollout_timers(self, workspace_id: str, deadlines: dict[str, float]) -> None:
        for key in [k for k in self._rollout_timers if split_device_key(k)[0] == workspace_id]:
            if key not in deadlines:
                self._rollout_timers.pop(key)[1].cancel()
        for key, deadline in deadlines.items():
            armed = self._rollout_timers.get(key)
            if armed is not None and armed[0] == deadline and not armed[1].done():
                continue
            if armed is not None:
                armed[1].cancel()
            task = asyncio.create_task(
                self._judge_at(workspace_id, key, deadline), name=f"iiot-rollout-timeout:{key}"
            )
            self._rollout_timers[key] = (deadline, task)

    async def _judge_at(self, workspace_id: str, key: str, deadline: float) -> None:
        until = from_epoch_required(deadline)
        while self._clock.now() < until:
            await self._clock.sleep((until - self._clock.now()).total_seconds())
        armed = self._rollout_timers.get(key)
        if armed is not None and armed[1] is asyncio.current_task():
            del self._rollout_timers[key]  # the check below arms the next one
        try:
            await self.check_rollouts(workspace_id)
        except Exception:  # a timer has nobody to answer: say so, the next write retries
            log.exception("checking the rollouts of workspace %s at a timeout", workspace_id)

    async def _step(
        self, config: FleetConfiguration, workspace_id: str
    ) -> tuple[bool, float | None]:
        """One rolling configuration's decision: whether it admitted devices, and when it
        waits, the earliest instant a pending device of its stage times out (None: none)."""
        assert config.rollout is not None
        status = config.rollout
        key = device_key(workspace_id, config.id)
        states = (await self._device_states(workspace_id)).get(config.id, {})
        admissions = await self._admissions(key)
        stage_of = {d: s for d, (s, _) in admissions.items()}
        t = to_epoch(self._clock.now())
        counts, deadline = _stage_counts(status.plan, states, admissions, status.stage, t)
        decision = decide(status.plan, counts)
        if decision is RolloutDecision.WAIT:
            return False, deadline
        c = fleet_configurations.c
        if decision is RolloutDecision.HALT:
            reason = _halt_reason(status.stage, status.plan, counts)

            def halt(conn: Connection) -> None:
                halted = conn.execute(
                    update(fleet_configurations)
                    .where(c.id == key, c.rollout_state == RolloutState.ROLLING.value)
                    .where(c.rollout_stage == status.stage)
                    .values(
                        rollout_state=RolloutState.HALTED.value,
                        rollout_reason=reason,
                        rollout_updated_at=t,
                    )
                )
                if halted.rowcount:
                    _audit_rollout(
                        conn,
                        "configuration.rollout_halted",
                        workspace_id,
                        config.id,
                        {"state": "rolling", "stage": status.stage},
                        {"state": "halted", "stage": status.stage, "reason": reason},
                        counts,
                    )

            await self._db.write(halt)
            return False, None
        last = status.stage + 1 >= len(status.plan.stages)
        order = rollout_order(key, await self._targeted(config, workspace_id))
        through = admitted_through(status.plan, status.stage + 1, len(order))
        fresh = [d for d in order if d not in stage_of][: max(0, through - len(stage_of))]

        def advance(conn: Connection) -> bool:
            moved = conn.execute(
                update(fleet_configurations)
                .where(c.id == key, c.rollout_state == RolloutState.ROLLING.value)
                .where(c.rollout_stage == status.stage)
                .values(
                    rollout_stage=status.stage if last else status.stage + 1,
                    rollout_state=(RolloutState.COMPLETED if last else RolloutState.ROLLING).value,
                    rollout_reason=None,
                    rollout_updated_at=t,
                )
            )
            if moved.rowcount == 0:
                return False  # another report advanced it first
            if not last:
                _admit(conn, key, fresh, status.stage + 1, t)
            _audit_rollout(
                conn,
                "configuration.rollout_completed" if last else "configuration.rollout_advanced",
                workspace_id,
                config.id,
                {"state": "rolling", "stage": status.stage},
                {"state": "completed" if last else "rolling", "stage": status.stage + (not last)},
                counts,
                admitted=[split_device_key(d)[1] for d in fresh] if not last else [],
            )
            return True

        return await self._db.write(advance), None

    async def set_rollout_state(
        self, configuration_id: str, state: RolloutState, workspace_id: str = DEFAULT_WORKSPACE
    ) -> FleetConfiguration:
        """``rolling`` resumes a halted rollout (checked again at once); ``aborted`` stops
        it: the devices it reached keep the configuration, the others never get it (delete
        the configuration to take it back)."""
        config = await self.get(configuration_id, workspace_id)
        if config.rollout is None:
            raise Conflict(f"fleet configuration {configuration_id!r} has no rollout", field="id")
        allowed = {
            RolloutState.ROLLING: {RolloutState.HALTED},
            RolloutState.ABORTED: {RolloutState.ROLLING, RolloutState.HALTED},
        }[state]
        if config.rollout.state not in allowed:
            raise Conflict(
                f"the rollout of {configuration_id!r} is {config.rollout.state.value}",
                field="rollout",
            )
        key = device_key(workspace_id, configuration_id)
        t = to_epoch(self._clock.now())

        def write(conn: Connection) -> None:
            c = fleet_configurations.c
            changed = conn.execute(
                update(fleet_configurations)
                .where(c.id == key, c.rollout_state.in_([s.value for s in allowed]))
                .values(rollout_state=state.value, rollout_reason=None, rollout_updated_at=t)
            )
            if changed.rowcount == 0:  # it moved meanwhile (completed, halted, deleted)
                raise Conflict(f"the rollout of {configuration_id!r} changed", field="rollout")
            verb = "resumed" if state is RolloutState.ROLLING else "aborted"
            assert config.rollout is not None
            _audit_rollout(
                conn,
                f"configuration.rollout_{verb}",
                workspace_id,
                configuration_id,
                {"state": config.rollout.state.value, "stage": config.rollout.stage},
                {"state": state.value, "stage": config.rollout.stage},
                None,
                system=False,  # the caller's (an admin's API key)
            )

        await self._db.write(write)
        if state is RolloutState.ROLLING:
            await self.check_rollouts(workspace_id)
        return await self.get(configuration_id, workspace_id)

    # Provenance and dry runs -------------------------------------------------------------

    async def provenance(self, device_id: str) -> dict[str, PropertyProvenance]:
        """For each desired property of a device: who set it (a configuration at a
        priority, or a manual patch) and when, and every configuration targeting the device
        that sets it."""
        workspace = split_device_key(device_id)[0]
        twin = await self._twins.get(device_id)
        configs = await self.list(workspace)
        members = await self._members(device_id)
        tags, reported = twin.tags.properties, twin.reported.properties
        targeting = [
            c for c in reversed(by_priority(configs)) if matches(c.target_condition, tags, reported)
        ]
        out = {}
        for prop, value in twin.desired.properties.items():
            state = twin.convergence.get(prop)
            out[prop] = PropertyProvenance(
                value=value,
                source=state.source if state else None,
                set_at=state.changed_at if state else None,
                desired_version=state.desired_version if state else None,
                configurations=[
                    ProvenanceCandidate(
                        c.id,
                        c.priority,
                        c.desired_properties[prop],
                        _reaches(c, members, workspace, device_id),
                    )
                    for c in targeting
                    if prop in c.desired_properties
                ],
            )
        return out

    async def dry_run(
        self,
        *,
        target_condition: object,
        desired_properties: object,
        priority: int,
        configuration_id: str | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
        rollout: object = None,
        replacing: bool = False,
    ) -> DryRun:
        """What creating (or, ``replacing``, changing) a configuration would do, writing
        nothing: each device it targets or whose desired properties would change, before
        and after (a staged rollout: after its first stage)."""
        config = self._build(
            configuration_id or new_id(), target_condition, desired_properties, priority, rollout
        )
        configs = await self.list(workspace_id)
        exists = any(c.id == config.id for c in configs)
        if replacing and not exists:
            raise NotFound(f"no fleet configuration {config.id!r}", field="id")
        if not replacing and exists:
            raise Conflict(f"fleet configuration {config.id!r} exists", field="id")
        key = device_key(workspace_id, config.id)
        after_configs = [c for c in configs if c.id != config.id] + [config]
        members = {k: v for k, v in (await self._members()).items() if k != key}
        stage: dict[str, int] = {}
        if config.rollout is not None:
            order = rollout_order(key, await self._targeted(config, workspace_id))
            plan = config.rollout.plan
            for index, did in enumerate(order):
                stage[did] = next(
                    s
                    for s in range(len(plan.stages))
                    if index < admitted_through(plan, s, len(order))
                )
            members[key] = {d for d, s in stage.items() if s == 0}
        rows = await self._twins.desired_documents(in_workspace(devices.c.device_id, workspace_id))
        out = []
        targeted = 0
        for did, tags, reported, desired, configured in rows:
            is_targeted = matches(config.target_condition, tags, reported)
            targeted += is_targeted
            layer = _layer_for(after_configs, members, workspace_id, did, tags, reported).layer
            after = merge_patch(desired, layer_change(configured, layer, desired))
            if is_targeted or after != desired:
                out.append(
                    DryRunDevice(
                        did,
                        is_targeted,
                        stage.get(did, 0) if is_targeted else None,
                        desired,
                        after,
                    )
                )
        return DryRun(config, targeted, out)

    def _build(
        self,
        configuration_id: str,
        target_condition: object,
        desired: object,
        priority: int,
        rollout: object = None,
    ) -> FleetConfiguration:
        now = self._clock.now()
        condition = parse_condition(target_condition)  # refuses all but a one-key object
        assert isinstance(target_condition, dict)
        status = None
        if rollout is not None:
            status = RolloutStatus(parse_rollout(rollout), RolloutState.ROLLING, 0, None, now)
        return FleetConfiguration(
            id=validate_configuration_id(configuration_id),
            target_condition=condition,
            raw_condition=target_condition,
            desired_properties=validate_desired(desired),
            priority=priority,
            created_at=now,
            updated_at=now,
            rollout=status,
        )


def _is_rolling(config: FleetConfiguration) -> bool:
    return config.rollout is not None and config.rollout.state is RolloutState.ROLLING


def _waits_on_timeouts(config: FleetConfiguration) -> bool:
    """A rolling rollout with a ``pendingTimeout``: time alone can change its decision."""
    rollout = config.rollout
    return _is_rolling(config) and rollout is not None and rollout.plan.pending_timeout is not None


def _reaches(config: FleetConfiguration, members: Members, workspace: str, device: str) -> bool:
    """Whether the configuration applies to a device it targets (its rollout reached it)."""
    if config.reaches_every_target:
        return True
    return device in members.get(device_key(workspace, config.id), set())


def _layer_for(
    configs: builtins.list[FleetConfiguration],
    members: Members,
    workspace: str,
    device: str,
    tags: JSON,
    reported: JSON,
) -> ConfiguredLayer:
    applying = [c for c in configs if _reaches(c, members, workspace, device)]
    return configured_layer_with_sources(applying, tags, reported)


def _admit(
    conn: Connection, configuration_key: str, device_keys: builtins.list[str], stage: int, at: float
) -> None:
    for did in device_keys:
        conn.execute(
            insert(rollout_members).values(
                configuration_id=configuration_key, device_id=did, stage=stage, admitted_at=at
            )
        )


def _audit_rollout(
    conn: Connection,
    action: str,
    workspace_id: str,
    configuration_id: str,
    before: dict[str, Any],
    after: dict[str, Any],
    counts: StageCounts | None,
    *,
    admitted: builtins.list[str] | None = None,
    system: bool = True,
) -> None:
    """A rollout's stage change in the audit trail: automatic ones as the platform
    (``system``), even when an admin's call (create, resume) set them off."""
    detail: dict[str, Any] = {}
    if counts is not None:
        detail["stage"] = {
            "devices": counts.devices,
            "pending": counts.pending,
            "converged": counts.converged,
            "drifted": counts.drifted,
            "failed": counts.failed,
            "timedOut": counts.timed_out,
        }
    if admitted:
        detail["admitted"] = admitted
    as_system = audit.audit_context.set(audit.AuditContext()) if system else None
    try:
        audit.record_audit(
            conn,
            action=action,
            target_kind="fleet_configuration",
            target_id=configuration_id,
            workspace_id=workspace_id,
            before=before,
            after=after,
            detail=detail or None,
        )
    finally:
        if as_system is not None:
            audit.audit_context.reset(as_system)


def _count(states: Any) -> StageCounts:
    found = builtins.list(states)
    return StageCounts(
        devices=len(found),
        pending=found.count(ConvergenceState.PENDING),
        converged=found.count(ConvergenceState.CONVERGED),
        drifted=found.count(ConvergenceState.DRIFTED),
        failed=found.count(ConvergenceState.FAILED),
    )


def _stage_counts(
    plan: RolloutPlan,
    states: dict[str, ConvergenceState],
    admissions: Admissions,
    stage: int,
    now: float,
) -> tuple[StageCounts, float | None]:
    """A stage's counts at ``now`` (``states``: device key → the worst state of the
    configuration's properties there) and the earliest instant one of its pending devices
    will time out (None: no ``pendingTimeout``, or none left to time out)."""
    members = [(d, at) for d, (s, at) in admissions.items() if s == stage]
    counted = _count(states[d] for d, _ in members if d in states)
    pending_since = [at for d, at in members if states.get(d) is ConvergenceState.PENDING]
    late = sum(1 for at in pending_since if timed_out(at, now, plan))
    deadline = None
    if plan.pending_timeout is not None:
        waiting = [at for at in pending_since if not timed_out(at, now, plan)]
        deadline = min(waiting, default=None)
        deadline = None if deadline is None else deadline + plan.pending_timeout
    return replace(counted, devices=len(members), timed_out=late), deadline


def _halt_reason(stage: int, plan: RolloutPlan, counts: StageCounts) -> str:
    """Why a stage halted, e.g. "stage 1: 1 of 2 devices drifted, 1 of 2 devices timed out
    (pending over 600 s) (together more than 40%)"."""
    of = f"of {counts.judged} devices"
    parts = [
        f"{n} {of} {what}"
        for n, what in (
            (counts.drifted, "drifted"),
            (counts.failed, "failed"),
            (counts.timed_out, f"timed out (pending over {plan.pending_timeout or 0:g} s)"),
        )
        if n
    ]
    together = "together " if len(parts) > 1 else ""
    threshold = f"{plan.halt_when_drifted_or_failed:.0%}"
    return f"stage {stage}: {', '.join(parts)} ({together}more than {threshold})"


def _stored(conn: Connection, key: str) -> FleetConfiguration | None:
    row = conn.execute(select(fleet_configurations).where(fleet_configurations.c.id == key)).first()
    return None if row is None else _config(row._mapping)


def _audit_view(config: FleetConfiguration | None) -> dict[str, Any] | None:
    """A configuration as its audit events show it (before / after)."""
    if config is None:
        return None
    return {
        "targetCondition": config.raw_condition,
        "desiredProperties": config.desired_properties,
        "priority": config.priority,
        "rollout": config.rollout.plan.wire() if config.rollout else None,
    }


def _audit_configuration(
    conn: Connection,
    action: str,
    workspace_id: str,
    configuration_id: str,
    before: FleetConfiguration | None,
    after: FleetConfiguration | None,
) -> None:
    record_audit(
        conn,
        action=action,
        target_kind="fleet_configuration",
        target_id=configuration_id,
        workspace_id=workspace_id,
        before=_audit_view(before),
        after=_audit_view(after),
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
        "rollout": config.rollout.plan.wire() if config.rollout else None,
        "rollout_state": config.rollout.state.value if config.rollout else None,
        "rollout_stage": config.rollout.stage if config.rollout else None,
        "rollout_reason": config.rollout.reason if config.rollout else None,
        "rollout_updated_at": to_epoch(config.rollout.updated_at)
        if config.rollout and config.rollout.updated_at
        else None,
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
        rollout=_rollout(m),
    )


def _rollout(m: RowMapping) -> RolloutStatus | None:
    c = fleet_configurations.c
    if m[c.rollout] is None:
        return None
    return RolloutStatus(
        plan=parse_rollout(m[c.rollout]),
        state=RolloutState(m[c.rollout_state]),
        stage=int(m[c.rollout_stage] or 0),
        reason=m[c.rollout_reason],
        updated_at=from_epoch(m[c.rollout_updated_at]),
    )
