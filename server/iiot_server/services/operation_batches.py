"""Batch approval and cancellation of Provisioning Operations (issue 15): a factory line
boots hundreds of devices in an hour, and approving them one by one is the bottleneck.

A batch selects operations with an :class:`~iiot_server.domain.operation_filters.OperationFilter`
(in the caller's workspace only), oldest first, and acts on each through the very function
the single routes use (``provisioning.approve_operation_in`` / ``cancel_operation_in``), so the
rules (token revoked, lifetime modes, superseding other operations of the Device ID) and the
audit row per operation are the same. Every selected operation gets a result:

- ``approved`` / ``cancelled`` (or ``would_approve`` / ``would_cancel`` in a dry run);
- ``skipped`` with a reason: expired, already approved / completed / cancelled, not found, not
  matched by the filter, or a **Device ID conflict**: two or more operations of the batch ask
  for one Device ID. Approving one would cancel the others (the domain rule), and which one is
  the real device is exactly what a technician must decide (a thief's operation looks the
  same), so a batch approves none of them and says so; approve the right one by id;
- ``failed`` with the problem the single route would have answered (e.g. the token was
  revoked, or its mode needs the technician to give the Device ID).

A dry run does the same work in transactions that are rolled back, so it reports exactly
what a real run would do at that moment and leaves nothing behind (audit rows included).

Work is done in chunks of :data:`CHUNK` operations, one transaction each: on SQLite the
units of work run on the event loop, which serves MQTT too, so a chunk bounds how long the
loop is held (500 approvals took ~0.35 s in all); on PostgreSQL up to :data:`PARALLEL`
chunks run at once. The per-operation checks all come before
its writes, so an operation refused mid-chunk leaves nothing half-done.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, Select, select

from ..clock import Clock
from ..domain.errors import DomainError
from ..domain.operation_filters import MAX_BATCH, OperationFilter
from ..domain.operations import OperationState
from ..domain.verification import RateLimiter
from ..domain.workspaces import bare_device_id, device_key
from ..store.database import Database, to_epoch
from ..store.schema import provisioning_operations, provisioning_tokens
from .provisioning import OperationView, approve_operation_in, cancel_operation_in

CHUNK = 125
"""Operations per transaction."""
PARALLEL = 4
"""Transactions of one batch at once on PostgreSQL (of its 8 database threads)."""


class BatchResult(StrEnum):
    APPROVED = "approved"
    CANCELLED = "cancelled"
    WOULD_APPROVE = "would_approve"
    WOULD_CANCEL = "would_cancel"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class BatchItem:
    """What the batch did (or would do) with one selected operation."""

    operation_id: str | None
    """None for a verification code no operation shows."""
    verification_code: str | None
    device_id: str | None
    result: BatchResult
    reason: str | None = None
    error: DomainError | None = None
    """For ``failed``: what the single route would have refused it with."""


@dataclass(frozen=True)
class BatchOutcome:
    dry_run: bool
    matched: int
    """Operations the filter selected (with ``ids`` / ``verificationCodes``: each one named,
    found or not); more than ``len(items)`` when the call's limit cut the rest off."""
    items: list[BatchItem]

    @property
    def truncated(self) -> bool:
        """Some matched operations were left untouched (past the limit): run it again."""
        return self.matched > len(self.items)


@dataclass(frozen=True)
class _Candidate:
    id: str
    verification_code: str
    device_id: str | None
    state: OperationState
    expires_at: float
    cancel_reason: str | None


class _DryRun(Exception):
    """Raised at the end of a dry run's unit of work so the database rolls it back."""

    def __init__(self, items: list[BatchItem]) -> None:
        super().__init__("dry run")
        self.items = items


_op = provisioning_operations.c
_token = provisioning_tokens.c
_OPEN = (OperationState.PENDING.value, OperationState.APPROVED.value)


class OperationBatchService:
    """Approve or cancel every operation a filter selects, in one call."""

    def __init__(self, db: Database, clock: Clock, code_lookups: RateLimiter) -> None:
        self._db = db
        self._clock = clock
        self._code_lookups = code_lookups

    async def approve(
        self,
        workspace_id: str,
        selection: OperationFilter,
        *,
        dry_run: bool = False,
        limit: int = MAX_BATCH,
        requester: str = "anonymous",
        registration_token_lifetime: float | None = None,
        infinite_lifetime: bool = False,
    ) -> BatchOutcome:
        """Approve the pending operations ``selection`` picks (see the module docstring)."""

        def approve_one(conn: Connection, operation_id: str, now: datetime) -> OperationView:
            return approve_operation_in(
                conn,
                operation_id,
                workspace_id,
                now,
                registration_token_lifetime=registration_token_lifetime,
                infinite_lifetime=infinite_lifetime,
            )

        return await self._run(
            workspace_id,
            selection,
            acts_on=(selection.state or OperationState.PENDING,),
            act=approve_one,
            done=BatchResult.WOULD_APPROVE if dry_run else BatchResult.APPROVED,
            dry_run=dry_run,
            limit=limit,
            requester=requester,
            one_per_device_id=True,
        )

    async def cancel(
        self,
        workspace_id: str,
        selection: OperationFilter,
        *,
        dry_run: bool = False,
        limit: int = MAX_BATCH,
        requester: str = "anonymous",
    ) -> BatchOutcome:
        """Cancel the pending and approved operations ``selection`` picks (``state``
        narrows to one of them)."""

        def cancel_one(conn: Connection, operation_id: str, now: datetime) -> OperationView:
            return cancel_operation_in(conn, operation_id, workspace_id, now)

        states = (
            (selection.state,)
            if selection.state
            else (OperationState.PENDING, OperationState.APPROVED)
        )
        return await self._run(
            workspace_id,
            selection,
            acts_on=states,
            act=cancel_one,
            done=BatchResult.WOULD_CANCEL if dry_run else BatchResult.CANCELLED,
            dry_run=dry_run,
            limit=limit,
            requester=requester,
            one_per_device_id=False,
        )

    async def _run(
        self,
        workspace_id: str,
        selection: OperationFilter,
        *,
        acts_on: tuple[OperationState, ...],
        act: Callable[[Connection, str, datetime], OperationView],
        done: BatchResult,
        dry_run: bool,
        limit: int,
        requester: str,
        one_per_device_id: bool,
    ) -> BatchOutcome:
        now = self._clock.now()
        for _ in selection.verification_codes or ():
            # each code is a look-up, rate-limited per key as on the single routes, so a
            # batch cannot enumerate codes either (docs/security.md)
            self._code_lookups.check(requester, now, field="filter.verificationCodes")
        t = to_epoch(now)
        candidates, named_misses = await self._db.scan(_select, workspace_id, selection, acts_on, t)
        matched = len(candidates) + len(named_misses)
        items: dict[str, BatchItem] = {}
        actionable: list[_Candidate] = []
        for candidate in candidates:
            reason = _not_actionable(candidate, acts_on, t, approving=one_per_device_id)
            if reason is None:
                actionable.append(candidate)
            else:
                items[candidate.id] = _item(candidate, BatchResult.SKIPPED, reason)
        if one_per_device_id:  # over every match: a partner past the limit counts too
            actionable = _without_device_id_conflicts(actionable, items)
        within = {c.id for c in candidates[:limit]}
        to_act = [c for c in actionable if c.id in within]
        # SQLite runs units of work one at a time, on the loop; PostgreSQL on threads, where
        # chunks overlap their round trips: their Device IDs are disjoint (conflicts were
        # skipped above), so none waits for another's locks. 500 dry-run approvals on the
        # throw-away cluster at load 8: 2.2 ms an operation one chunk at a time, 1.4 with 4
        gate = asyncio.Semaphore(1 if self._db.engine.dialect.name == "sqlite" else PARALLEL)

        async def run_chunk(chunk: list[_Candidate]) -> None:
            async with gate:
                try:
                    done_items = await self._db.write(
                        _act_on, chunk, act, done, now, rollback=dry_run
                    )
                except _DryRun as rolled_back:
                    done_items = rolled_back.items
                items.update((c.id, item) for c, item in zip(chunk, done_items, strict=True))
                await asyncio.sleep(0)  # the loop serves others between chunks (SQLite)

        await asyncio.gather(
            *(run_chunk(to_act[i : i + CHUNK]) for i in range(0, len(to_act), CHUNK))
        )
        ordered = [items[c.id] for c in candidates[:limit]]
        ordered += named_misses[: max(0, limit - len(ordered))]
        return BatchOutcome(dry_run=dry_run, matched=matched, items=ordered)


def _act_on(
    conn: Connection,
    candidates: Sequence[_Candidate],
    act: Callable[[Connection, str, datetime], OperationView],
    done: BatchResult,
    now: datetime,
    *,
    rollback: bool,
) -> list[BatchItem]:
    """Act on each operation in ``conn``'s transaction; ``rollback``: then undo it all."""
    items = []
    for candidate in candidates:
        try:
            view = act(conn, candidate.id, now)
        except DomainError as refused:  # raised before the operation's writes
            items.append(
                BatchItem(
                    candidate.id,
                    candidate.verification_code,
                    candidate.device_id,
                    BatchResult.FAILED,
                    refused.detail,
                    refused,
                )
            )
            continue
        op = view.operation
        items.append(BatchItem(op.id, op.verification_code, op.device_id, done))
    if rollback:
        raise _DryRun(items)
    return items


def _select(
    conn: Connection,
    workspace_id: str,
    selection: OperationFilter,
    acts_on: tuple[OperationState, ...],
    now: float,
) -> tuple[list[_Candidate], list[BatchItem]]:
    """The operations the filter selects, oldest first, and a skipped item for each id or
    code it names that is not among them."""
    query = _query(workspace_id, selection, acts_on, now)
    candidates = []
    for row in conn.execute(query):
        m = row._mapping
        device = m[_op.device_id] and bare_device_id(m[_op.device_id])
        if not selection.matches(device, dict(m[_op.attributes] or {})):
            continue
        candidates.append(
            _Candidate(
                id=m[_op.id],
                verification_code=m[_op.verification_code],
                device_id=device,
                state=OperationState(m[_op.state]),
                expires_at=m[_op.expires_at],
                cancel_reason=m[_op.cancel_reason],
            )
        )
    misses: list[BatchItem] = []
    if selection.ids is not None:
        found = {c.id for c in candidates}
        missing = [i for i in selection.ids if i not in found]
        known = _in_workspace(conn, workspace_id, _op.id.in_(missing), _op.id) if missing else set()
        misses += [
            BatchItem(
                i,
                None,
                None,
                BatchResult.SKIPPED,
                # another workspace's id reads exactly like an unknown one
                "not matched by the filter's other fields" if i in known else "not found",
            )
            for i in missing
        ]
    if selection.verification_codes is not None:
        shown = {c.verification_code for c in candidates}
        missing = [code for code in selection.verification_codes if code not in shown]
        known = (
            _in_workspace(
                conn,
                workspace_id,
                _op.verification_code.in_(missing),
                _op.verification_code,
                open_at=now,
            )
            if missing
            else set()
        )
        for code in missing:
            reason = (
                "not matched by the filter's other fields"
                if code in known
                else "no open operation shows this code"
            )
            misses.append(BatchItem(None, code, None, BatchResult.SKIPPED, reason))
    return candidates, misses


def _query(
    workspace_id: str,
    selection: OperationFilter,
    acts_on: tuple[OperationState, ...],
    now: float,
) -> Select[tuple[object, ...]]:
    query = (
        select(
            _op.id,
            _op.verification_code,
            _op.device_id,
            _op.attributes,
            _op.state,
            _op.expires_at,
            _op.cancel_reason,
        )
        .join(provisioning_tokens, _token.id == _op.provisioning_token_id)
        .where(_token.workspace_id == workspace_id)
        .order_by(_op.created_at, _op.id)
    )
    if selection.provisioning_token_id is not None:
        query = query.where(_op.provisioning_token_id == selection.provisioning_token_id)
    prefix = selection.like_prefix()
    if prefix is not None:  # narrows only: SQLite's LIKE ignores case, matches() decides
        escaped = device_key(workspace_id, prefix).replace("_", "\\_")
        query = query.where(_op.device_id.like(f"{escaped}%", escape="\\"))
    if selection.created_after is not None:
        query = query.where(_op.created_at >= to_epoch(selection.created_after))
    if selection.created_before is not None:
        query = query.where(_op.created_at < to_epoch(selection.created_before))
    if selection.ids is not None:
        query = query.where(_op.id.in_(selection.ids))
    if selection.verification_codes is not None:
        # a code is unique among open operations only: the open one is meant
        query = query.where(
            _op.verification_code.in_(selection.verification_codes),
            _op.state.in_(_OPEN),
            _op.expires_at > now,
        )
    if not selection.names_operations:
        query = query.where(_op.state.in_([s.value for s in acts_on]), _op.expires_at > now)
    return query


def _in_workspace(
    conn: Connection,
    workspace_id: str,
    condition: object,
    column: object,
    *,
    open_at: float | None = None,
) -> set[str]:
    query = (
        select(column)  # type: ignore[call-overload]
        .join(provisioning_tokens, _token.id == _op.provisioning_token_id)
        .where(_token.workspace_id == workspace_id, condition)
    )
    if open_at is not None:
        query = query.where(_op.state.in_(_OPEN), _op.expires_at > open_at)
    return {row[0] for row in conn.execute(query)}


def _not_actionable(
    candidate: _Candidate, acts_on: tuple[OperationState, ...], now: float, *, approving: bool
) -> str | None:
    """Why the batch leaves this operation alone, or None if it acts on it."""
    state = candidate.state
    if state.value in _OPEN and candidate.expires_at <= now:
        return "expired"
    if state in acts_on:
        return None
    if state is OperationState.CANCELLED:
        return f"already cancelled ({candidate.cancel_reason})"
    if state is OperationState.COMPLETED or approving:
        return f"already {state.value}"
    return f"{state.value}, not {' or '.join(s.value for s in acts_on)} (filter.state)"


def _without_device_id_conflicts(
    to_act: list[_Candidate], items: dict[str, BatchItem]
) -> list[_Candidate]:
    """``to_act`` less the operations that share a Device ID with another of the batch
    (each gets a skipped item in ``items``)."""
    by_device: defaultdict[str, list[_Candidate]] = defaultdict(list)
    for candidate in to_act:
        if candidate.device_id is not None:
            by_device[candidate.device_id].append(candidate)
    kept = []
    for candidate in to_act:
        same = by_device.get(candidate.device_id or "", [])
        if len(same) > 1:
            items[candidate.id] = _item(
                candidate,
                BatchResult.SKIPPED,
                f"Device ID conflict: {len(same)} operations this batch matched ask for Device ID "
                f"{candidate.device_id!r}, and approving one cancels the others; approve the "
                "right one by its id or code",
            )
        else:
            kept.append(candidate)
    return kept


def _item(candidate: _Candidate, result: BatchResult, reason: str | None = None) -> BatchItem:
    return BatchItem(candidate.id, candidate.verification_code, candidate.device_id, result, reason)
