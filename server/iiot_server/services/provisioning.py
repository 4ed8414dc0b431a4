"""Provisioning Tokens and Provisioning Operations: the technician's and the device's
sides of zero-touch provisioning."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
    Executable,
    RowMapping,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)

from ..clock import Clock
from ..domain import operations as ops
from ..domain.device_id import validate_device_id
from ..domain.errors import (
    Conflict,
    NotFound,
    ProvisioningTokenPaused,
    TooManyRequests,
    Unauthorized,
    ValidationError,
)
from ..domain.operations import OperationState, ProvisioningOperation
from ..domain.tokens import DeviceIdOverrideMode, LifetimeOverrideMode, ProvisioningTokenOptions
from ..domain.verification import (
    RateLimiter,
    format_verification_code,
    new_verification_code,
    normalize_verification_code,
)
from ..domain.workspaces import DEFAULT_WORKSPACE, bare_device_id, device_key
from ..security import SecretKind, has_kind, hash_secret, new_id, new_secret
from ..settings import Settings
from ..store import statements as sql
from ..store.database import Database, from_epoch, from_epoch_required, to_epoch
from ..store.schema import provisioning_operations, provisioning_tokens
from .audit import audit_context, record_audit
from .limits import DeviceApiLimits
from .registration import IssuedToken, RegistrationService

MAX_BULK = 10_000

_TOKEN_PAUSE = select(provisioning_tokens.c.paused_at, provisioning_tokens.c.paused_reason).where(
    provisioning_tokens.c.id == bindparam("b_id")
)
"""Whether a token is paused, read in each init's transaction: built once (see
``store/statements.py``), ~25 µs of CPU per read in-process on SQLite against ~80 µs built
per init (load 6 on the shared 2-core machine)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProvisioningToken:
    """A Provisioning Token as listed (never with its secret)."""

    id: str
    name: str
    options: ProvisioningTokenOptions
    created_at: datetime
    revoked_at: datetime | None = None
    batch_id: str | None = None
    workspace_id: str = DEFAULT_WORKSPACE
    """Every operation it starts, and so the device it provisions, is in this workspace."""
    paused_at: datetime | None = None
    """Paused (:meth:`ProvisioningService.pause_token`): it opens no new operation."""
    paused_reason: str | None = None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


@dataclass(frozen=True)
class CreatedProvisioningToken:
    token: ProvisioningToken
    secret: str


@dataclass(frozen=True)
class OperationView:
    """An operation as a technician sees it, with the modes its token allows."""

    operation: ProvisioningOperation
    token: ProvisioningToken


class ProvisioningService:
    """Create and check Provisioning Tokens; run operations from init to completion."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        registration: RegistrationService,
        limits: DeviceApiLimits | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._registration = registration
        self._limits = limits or DeviceApiLimits(settings, clock)
        self._by_hash: dict[str, ProvisioningToken] = {}
        self.on_operation_initiated: (
            Callable[[ProvisioningToken, str | None], Awaitable[object]] | None
        ) = None
        """Awaited after each operation a device opens, with its bare Device ID (None when
        not given): leak detection's rule (c) (``services/alerts.py``)."""
        self.code_lookups = RateLimiter(
            capacity=settings.code_lookup_burst, rate=settings.code_lookups_per_second
        )

    # Provisioning Tokens -------------------------------------------------------------

    async def create_token(
        self,
        name: str,
        options: ProvisioningTokenOptions,
        *,
        batch_id: str | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> CreatedProvisioningToken:
        return (await self._insert_tokens(name, [options], batch_id, workspace_id))[0]

    async def create_tokens_bulk(
        self,
        name: str,
        options: ProvisioningTokenOptions,
        device_ids: list[str],
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> list[CreatedProvisioningToken]:
        """Per-device tokens for a factory run: each token's default Device ID is one of
        ``device_ids``; the other options are shared."""
        if not 1 <= len(device_ids) <= MAX_BULK:
            raise ValidationError(f"give 1-{MAX_BULK} Device IDs", field="deviceIds")
        if len(set(device_ids)) != len(device_ids):
            raise ValidationError("Device IDs must be unique", field="deviceIds")
        per_device = []
        for index, device_id in enumerate(device_ids):
            validate_device_id(device_id, field=f"deviceIds[{index}]")
            item = dataclasses.replace(options, device_id=device_id)
            item.validate()
            per_device.append(item)
        return await self._insert_tokens(name, per_device, new_id(), workspace_id)

    async def _insert_tokens(
        self,
        name: str,
        options: list[ProvisioningTokenOptions],
        batch_id: str | None,
        workspace_id: str,
    ) -> list[CreatedProvisioningToken]:
        if not name or len(name) > 200:
            raise ValidationError("name must be 1-200 characters", field="name")
        now = self._clock.now()
        created = []
        rows = []
        for opts in options:
            opts.validate()
            secret = new_secret(SecretKind.PROVISIONING_TOKEN)
            token = ProvisioningToken(new_id(), name, opts, now, None, batch_id, workspace_id)
            created.append(CreatedProvisioningToken(token, secret))
            rows.append(
                {
                    "id": token.id,
                    "name": name,
                    "secret_hash": hash_secret(secret),
                    "max_registration_token_lifetime": opts.max_registration_token_lifetime,
                    "registration_token_lifetime_override": (
                        opts.registration_token_lifetime_override.value
                    ),
                    "allow_infinite_lifetime": opts.allow_infinite_lifetime,
                    "device_id": opts.device_id,
                    "device_id_override": opts.device_id_override.value,
                    "batch_id": batch_id,
                    "created_at": to_epoch(now),
                    "workspace_id": workspace_id,
                }
            )

        def insert_rows(conn: Connection) -> None:
            conn.execute(insert(provisioning_tokens), rows)
            for item in created:
                record_audit(
                    conn,
                    action="token.created",
                    target_kind="provisioning_token",
                    target_id=item.token.id,
                    workspace_id=workspace_id,
                    after=_token_audit(item.token),
                )

        await self._db.write(insert_rows)
        return created

    async def list_tokens(self, workspace_id: str = DEFAULT_WORKSPACE) -> list[ProvisioningToken]:
        def rows(conn: Connection) -> list[ProvisioningToken]:
            result = conn.execute(
                select(provisioning_tokens)
                .where(provisioning_tokens.c.workspace_id == workspace_id)
                .order_by(provisioning_tokens.c.created_at)
            )
            return [_token(r._mapping) for r in result]

        return await self._db.scan(rows)

    async def get_token(
        self, token_id: str, workspace_id: str = DEFAULT_WORKSPACE
    ) -> ProvisioningToken:
        return await self._db.read(_get_token, token_id, workspace_id)

    def forget_workspace(self, workspace_id: str) -> None:
        """Drop a deleted workspace's tokens from the cache (the database revoked them)."""
        self._by_hash = {h: t for h, t in self._by_hash.items() if t.workspace_id != workspace_id}

    async def revoke_token(
        self, token_id: str, workspace_id: str = DEFAULT_WORKSPACE
    ) -> ProvisioningToken:
        """Revoke a token: it can start and complete no more operations."""
        t = to_epoch(self._clock.now())

        def revoke(conn: Connection) -> ProvisioningToken:
            _get_token(conn, token_id, workspace_id)  # another workspace's: 404
            c = provisioning_tokens.c
            revoked = conn.execute(
                update(provisioning_tokens)
                .where(c.id == token_id, c.revoked_at.is_(None))
                .values(revoked_at=t)
            )
            token = _get_token(conn, token_id)
            if revoked.rowcount:  # not again for a token revoked before
                record_audit(
                    conn,
                    action="token.revoked",
                    target_kind="provisioning_token",
                    target_id=token_id,
                    workspace_id=workspace_id,
                    before={"revokedAt": None},
                    after={"revokedAt": token.revoked_at},
                )
            return token

        token = await self._db.write(revoke)
        self._by_hash = {h: t for h, t in self._by_hash.items() if t.id != token_id}
        return token

    async def pause_token(
        self, token_id: str, workspace_id: str = DEFAULT_WORKSPACE, *, reason: str | None = None
    ) -> ProvisioningToken:
        """Pause a token, reversibly (:meth:`resume_token`): ``/provisioning-operations/init``
        with it answers 403 ``/problems/provisioningTokenPaused`` until it is resumed.
        Operations it opened before keep working (polled, approved, completed): pausing
        stops new devices, not the technician's work in progress; revoke for that. A
        revoked token cannot be paused (409). Pausing a paused token changes nothing (its
        first ``pausedAt`` and reason stay). ``reason`` defaults to the request's
        ``?reason=``."""
        t = to_epoch(self._clock.now())
        why = reason if reason is not None else audit_context.get().reason

        def pause(conn: Connection) -> ProvisioningToken:
            _get_token(conn, token_id, workspace_id)  # another workspace's: 404
            c = provisioning_tokens.c
            paused = conn.execute(  # conditional: of two concurrent pauses, one is recorded
                update(provisioning_tokens)
                .where(c.id == token_id, c.paused_at.is_(None), c.revoked_at.is_(None))
                .values(paused_at=t, paused_reason=why and why[:500])
            )
            token = _get_token(conn, token_id)
            if token.revoked_at is not None:
                raise Conflict(
                    f"Provisioning Token {token_id!r} was revoked; a revoked token cannot be "
                    "paused",
                    field="id",
                )
            if not paused.rowcount:  # paused before
                return token
            record_audit(
                conn,
                action="token.paused",
                target_kind="provisioning_token",
                target_id=token_id,
                workspace_id=workspace_id,
                before={"pausedAt": None},
                after={"pausedAt": token.paused_at, "pausedReason": token.paused_reason},
            )
            return token

        token = await self._db.write(pause)
        self._forget_cached(token_id)
        return token

    async def resume_token(
        self, token_id: str, workspace_id: str = DEFAULT_WORKSPACE
    ) -> ProvisioningToken:
        """Resume a paused token: it opens operations again. Resuming one that is not
        paused (revoked ones included) changes nothing."""

        def resume(conn: Connection) -> ProvisioningToken:
            before = _get_token(conn, token_id, workspace_id)  # another workspace's: 404
            c = provisioning_tokens.c
            resumed = conn.execute(  # conditional, as for the pause
                update(provisioning_tokens)
                .where(c.id == token_id, c.paused_at.is_not(None))
                .values(paused_at=None, paused_reason=None)
            )
            token = _get_token(conn, token_id)
            if not resumed.rowcount:  # not paused
                return token
            record_audit(
                conn,
                action="token.resumed",
                target_kind="provisioning_token",
                target_id=token_id,
                workspace_id=workspace_id,
                before={"pausedAt": before.paused_at, "pausedReason": before.paused_reason},
                after={"pausedAt": None},
            )
            return token

        token = await self._db.write(resume)
        self._forget_cached(token_id)
        return token

    def _forget_cached(self, token_id: str) -> None:
        """Drop a token from the authentication cache: its next use reads its new state."""
        self._by_hash = {h: t for h, t in self._by_hash.items() if t.id != token_id}

    async def authenticate(self, secret: str) -> ProvisioningToken:
        """The token behind a presented PT secret, or :class:`Unauthorized`; each call
        counts towards the token's request rate (``services.limits``)."""
        if not has_kind(secret, SecretKind.PROVISIONING_TOKEN):
            raise Unauthorized("expected a Provisioning Token (pt_…)")
        digest = hash_secret(secret)
        token = self._by_hash.get(digest)
        if token is None:

            def find(conn: Connection) -> ProvisioningToken | None:
                row = conn.execute(
                    select(provisioning_tokens).where(provisioning_tokens.c.secret_hash == digest)
                ).first()
                return None if row is None else _token(row._mapping)

            token = await self._db.read(find)
            if token is None:
                raise Unauthorized("unknown Provisioning Token")
            if token.revoked_at is None and not token.paused:  # a paused one: read each time
                self._by_hash[digest] = token
        if token.revoked_at is not None:
            raise Unauthorized("this Provisioning Token was revoked")
        self._limits.provisioning_token_request(token.id)
        return token

    # Operations, device side ---------------------------------------------------------

    async def init_operation(
        self, token: ProvisioningToken, device_id: str | None, attributes: object
    ) -> ProvisioningOperation:
        """Start an operation; its verification code is unique among open operations.
        Refused (429) past the open-operation limits per Device ID and per token, and
        (403 ``ProvisioningTokenPaused``) while the token is paused."""
        now = self._clock.now()
        operation = ops.initiate_operation(  # validates before any I/O
            token.options,
            operation_id=new_id(),
            provisioning_token_id=token.id,
            verification_code=new_verification_code(),
            now=now,
            device_id=device_id,
            attributes=attributes,
            lifetime=self._settings.operation_lifetime,
        )
        if operation.device_id is not None:
            self._limits.device_request(
                f"pt:{token.id}:device:{operation.device_id}", field="deviceId"
            )

        def insert_operation(conn: Connection) -> ProvisioningOperation:
            # paused? the token as it stands now, not as cached at authentication: a pause
            # by another platform process, or racing this request, is seen (a primary-key
            # read; a resume too, as paused tokens are never cached)
            paused = conn.execute(_TOKEN_PAUSE, {"b_id": token.id}).first()
            if paused is not None and paused.paused_at is not None:
                raise _paused(token.id, paused.paused_reason)
            self._check_open_operations(conn, operation, token.workspace_id, now)
            op = operation
            for _ in range(20):
                clash = conn.execute(
                    sql.OPEN_CODE_CLASH, {"b_code": op.verification_code, "b_now": to_epoch(now)}
                ).first()
                if clash is None:
                    break
                op = dataclasses.replace(op, verification_code=new_verification_code())
            else:  # pragma: no cover - 20 collisions in 2.6e10 codes
                raise Conflict("could not allocate a unique verification code; retry")
            conn.execute(sql.INSERT_OPERATION, _op_row(op, token.workspace_id))
            record_audit(
                conn,
                action="operation.initiated",
                target_kind="provisioning_operation",
                target_id=op.id,
                workspace_id=token.workspace_id,
                after=_operation_audit(op),
                detail={"provisioningTokenId": token.id},
                at=now,
            )
            return op

        inserted = await self._db.write(insert_operation)
        if self.on_operation_initiated is not None:
            try:
                await self.on_operation_initiated(token, inserted.device_id)
            except Exception:  # leak detection never changes the device's answer
                log.exception("leak detection on an initiated operation failed")
        return inserted

    def _check_open_operations(
        self, conn: Connection, operation: ProvisioningOperation, workspace_id: str, now: datetime
    ) -> None:
        """TooManyRequests when the token, or the Device ID, already has as many open
        operations as allowed; Retry-After is when the oldest of them expires."""
        t = to_epoch(now)
        checks: list[tuple[Executable, dict[str, object], int, str, str | None]] = [
            (
                sql.OPEN_OPERATIONS_OF_TOKEN,
                {"b_token_id": operation.provisioning_token_id, "b_now": t},
                self._settings.max_open_operations_per_provisioning_token,
                "this Provisioning Token",
                None,
            )
        ]
        if operation.device_id is not None:
            checks.append(
                (
                    sql.OPEN_OPERATIONS_OF_DEVICE_ID,
                    {"b_device_id": device_key(workspace_id, operation.device_id), "b_now": t},
                    self._settings.max_open_operations_per_device_id,
                    f"Device ID {operation.device_id!r}",
                    "deviceId",
                )
            )
        for statement, params, limit, whose, field in checks:
            count, first_expiry = conn.execute(statement, params).one()
            if count >= limit:
                raise TooManyRequests(
                    f"{whose} already has {count} open Provisioning Operations (at most "
                    f"{limit}); resume one (GET /provisioning-operations/{{id}}) or wait",
                    retry_after=max(1.0, float(first_expiry) - t),
                    field=field,
                )

    async def get_operation_for_token(
        self, token: ProvisioningToken, operation_id: str
    ) -> ProvisioningOperation:
        self._limits.device_request(f"pt:{token.id}:op:{operation_id}")
        op = await self._db.read(_get_op, operation_id, token_id=token.id)
        return ops.effective(op, self._clock.now())

    async def complete_operation(
        self, token: ProvisioningToken, operation_id: str
    ) -> IssuedToken | None:
        """The Registration Token of an approved operation; None while it is pending."""
        self._limits.device_request(f"pt:{token.id}:op:{operation_id}")
        now = self._clock.now()

        def complete(conn: Connection) -> IssuedToken | None:
            op = _get_op(conn, operation_id, token_id=token.id, lock=True)
            completed = ops.complete(op, now)
            if completed is None:
                return None
            conn.execute(
                sql.COMPLETE_OPERATION,
                {"b_id": op.id, "b_state": completed.state.value, "b_now": to_epoch(now)},
            )
            assert completed.device_id is not None  # settled at approval
            record_audit(
                conn,
                action="operation.completed",
                target_kind="provisioning_operation",
                target_id=op.id,
                workspace_id=token.workspace_id,
                before={"state": op.state},
                after={"state": completed.state},
                detail={"deviceId": completed.device_id},
                at=now,
            )
            return self._registration.issue_for_operation(
                conn,
                device_id=device_key(token.workspace_id, completed.device_id),
                provisioning_token_id=token.id,
                operation_id=op.id,
                lifetime=completed.registration_token_lifetime,
                now=now,
            )

        issued = await self._db.write(complete)
        if issued is not None:
            self._registration.announce_reprovisioned(issued)
        return issued

    # Operations, technician side -----------------------------------------------------

    async def list_operations(
        self,
        workspace_id: str = DEFAULT_WORKSPACE,
        *,
        state: OperationState | None = None,
        verification_code: str | None = None,
        requester: str = "anonymous",
        limit: int = 500,
    ) -> list[OperationView]:
        """Operations, newest first, as they stand now (expired ones show as cancelled)."""
        now = self._clock.now()
        t = to_epoch(now)
        c = provisioning_operations.c
        query = (
            select(provisioning_operations, provisioning_tokens)
            .join(provisioning_tokens, provisioning_tokens.c.id == c.provisioning_token_id)
            .where(provisioning_tokens.c.workspace_id == workspace_id)
        )
        if verification_code is not None:
            self.code_lookups.check(requester, now)
            code = format_verification_code(normalize_verification_code(verification_code))
            query = query.where(c.verification_code == code)
        if state is OperationState.PENDING or state is OperationState.APPROVED:
            query = query.where(c.state == state.value, c.expires_at > t)
        elif state is OperationState.COMPLETED:
            query = query.where(c.state == state.value)
        elif state is OperationState.CANCELLED:
            query = query.where(
                or_(c.state == state.value, and_(c.state != "completed", c.expires_at <= t))
            )
        query = query.order_by(c.created_at.desc()).limit(limit)

        def rows(conn: Connection) -> list[OperationView]:
            return [
                OperationView(ops.effective(_op(r._mapping), now), _token(r._mapping))
                for r in conn.execute(query)
            ]

        return await self._db.scan(rows)

    async def resolve_operation_id(
        self, id_or_code: str, *, requester: str, workspace_id: str = DEFAULT_WORKSPACE
    ) -> str:
        """An operation id as given, or the id of the open operation showing this
        verification code (any case, with or without its dash), so a technician can act
        on what the device shows. Code look-ups are rate-limited per ``requester`` as on
        the listing, so codes cannot be enumerated through this either."""
        try:
            uuid.UUID(id_or_code)
            return id_or_code
        except ValueError:
            pass
        try:
            normalize_verification_code(id_or_code, field="operationId")
        except ValidationError:
            return id_or_code  # neither an id nor a code: the look-up answers 404
        views = await self.list_operations(
            workspace_id, verification_code=id_or_code, requester=requester, limit=10
        )
        open_ones = [
            v.operation
            for v in views
            if v.operation.state in (OperationState.PENDING, OperationState.APPROVED)
        ]
        if not open_ones:
            raise NotFound(
                f"no open operation shows the code {id_or_code!r}",
                field="operationId",
            )
        return open_ones[0].id

    async def get_operation(
        self, operation_id: str, workspace_id: str = DEFAULT_WORKSPACE
    ) -> OperationView:
        def find(conn: Connection) -> OperationView:
            op = _get_op(conn, operation_id)
            token = _get_token(conn, op.provisioning_token_id)
            _require_in(op, token, workspace_id)
            return OperationView(op, token)

        view = await self._db.read(find)
        return OperationView(ops.effective(view.operation, self._clock.now()), view.token)

    async def approve_operation(
        self,
        operation_id: str,
        workspace_id: str = DEFAULT_WORKSPACE,
        *,
        device_id: str | None = None,
        registration_token_lifetime: float | None = None,
        infinite_lifetime: bool = False,
    ) -> OperationView:
        """Approve; any other open operation for the same Device ID is cancelled."""
        return await self._db.write(
            approve_operation_in,
            operation_id,
            workspace_id,
            self._clock.now(),
            device_id=device_id,
            registration_token_lifetime=registration_token_lifetime,
            infinite_lifetime=infinite_lifetime,
        )

    async def cancel_operation(
        self, operation_id: str, workspace_id: str = DEFAULT_WORKSPACE
    ) -> OperationView:
        return await self._db.write(
            cancel_operation_in, operation_id, workspace_id, self._clock.now()
        )


def approve_operation_in(
    conn: Connection,
    operation_id: str,
    workspace_id: str,
    now: datetime,
    *,
    device_id: str | None = None,
    registration_token_lifetime: float | None = None,
    infinite_lifetime: bool = False,
) -> OperationView:
    """Approve one operation within the caller's transaction; any other open operation for
    the same Device ID is cancelled (superseded). The single route and the batch route
    (``services/operation_batches.py``) both go through here, so they follow one rule set."""
    first = _get_op(conn, operation_id)
    token = _get_token(conn, first.provisioning_token_id)
    _require_in(first, token, workspace_id)
    device = device_id or first.device_id
    if device is None:  # the token's mode needs a Device ID: ops.approve refuses it below
        locked = [_get_op(conn, operation_id, lock=True)]
    else:
        # the operation and every other of its Device ID, as they stand once locked: the
        # decision and the superseding below read these rows (5 statements an approval,
        # not 8: the batch route does 500 in one call)
        locked = [
            _op(r._mapping)
            for r in conn.execute(
                sql.LOCK_OPERATIONS_OF_DEVICE_ID,
                {"b_device_id": device_key(workspace_id, device), "b_id": operation_id},
            )
        ]
    op = next(o for o in locked if o.id == operation_id)
    if token.revoked_at is not None:
        raise Conflict(
            "the Provisioning Token of this operation was revoked",
            field="provisioningOperationId",
        )
    approved = ops.approve(
        op,
        token.options,
        now,
        device_id=device_id,
        registration_token_lifetime=registration_token_lifetime,
        infinite_lifetime=infinite_lifetime,
    )
    _update_op(conn, approved, workspace_id)
    assert approved.device_id is not None  # settled at approval
    overrides = {
        "deviceId": device_id,
        "registrationTokenLifetime": registration_token_lifetime,
        "infiniteLifetime": infinite_lifetime or None,
    }
    record_audit(
        conn,
        action="operation.approved",
        target_kind="provisioning_operation",
        target_id=approved.id,
        workspace_id=workspace_id,
        before=_operation_audit(op),
        after=_operation_audit(approved),
        detail={"overrides": {k: v for k, v in overrides.items() if v is not None}},
        at=now,
    )
    # superseded_by keeps the open ones of the approved Device ID (= ``device``: a pending
    # operation's Device ID changes only at its approval)
    others = [o for o in locked if o.id != approved.id]
    previous = {other.id: other for other in others}
    for cancelled in ops.superseded_by(approved, others, now):
        _update_op(conn, cancelled, workspace_id)
        # in the approver's name and request: their approval superseded it
        record_audit(
            conn,
            action="operation.cancelled",
            target_kind="provisioning_operation",
            target_id=cancelled.id,
            workspace_id=workspace_id,
            before={"state": previous[cancelled.id].state},
            after={"state": cancelled.state, "cancelReason": cancelled.cancel_reason},
            detail={"supersededBy": approved.id},
            at=now,
        )
    return OperationView(approved, token)


def cancel_operation_in(
    conn: Connection, operation_id: str, workspace_id: str, now: datetime
) -> OperationView:
    """Cancel one operation within the caller's transaction (single and batch routes)."""
    op = _get_op(conn, operation_id, lock=True)
    token = _get_token(conn, op.provisioning_token_id)
    _require_in(op, token, workspace_id)
    cancelled = ops.cancel(op, now)
    _update_op(conn, cancelled, workspace_id)
    record_audit(
        conn,
        action="operation.cancelled",
        target_kind="provisioning_operation",
        target_id=cancelled.id,
        workspace_id=workspace_id,
        before={"state": op.state},
        after={"state": cancelled.state, "cancelReason": cancelled.cancel_reason},
        at=now,
    )
    return OperationView(cancelled, token)


def _paused(token_id: str, reason: str | None) -> ProvisioningTokenPaused:
    why = f" ({reason})" if reason else ""
    return ProvisioningTokenPaused(
        f"Provisioning Token {token_id!r} is paused{why}; it opens no new Provisioning "
        "Operation until an administrator resumes it"
    )


def _token_audit(token: ProvisioningToken) -> dict[str, object]:
    """A Provisioning Token as its audit events show it (never its secret)."""
    o = token.options
    return {
        "name": token.name,
        "batchId": token.batch_id,
        "deviceId": o.device_id,
        "deviceIdOverride": o.device_id_override,
        "maxRegistrationTokenLifetime": o.max_registration_token_lifetime,
        "registrationTokenLifetimeOverride": o.registration_token_lifetime_override,
        "allowInfiniteLifetime": o.allow_infinite_lifetime,
    }


def _operation_audit(op: ProvisioningOperation) -> dict[str, object]:
    """A Provisioning Operation as its audit events show it."""
    return {
        "state": op.state,
        "deviceId": op.device_id,
        "verificationCode": op.verification_code,
        "provisioningTokenId": op.provisioning_token_id,
        "attributes": op.attributes,
        "registrationTokenLifetime": op.registration_token_lifetime,
    }


def _require_in(op: ProvisioningOperation, token: ProvisioningToken, workspace_id: str) -> None:
    """Another workspace's operation is answered as unknown (its existence never leaks)."""
    if token.workspace_id != workspace_id:
        raise NotFound(f"no Provisioning Operation {op.id!r}", field="provisioningOperationId")


def _update_op(conn: Connection, op: ProvisioningOperation, workspace_id: str) -> None:
    row = _op_row(op, workspace_id)
    row["b_id"] = row.pop("id")
    conn.execute(sql.UPDATE_OPERATION, row)


def _get_op(
    conn: Connection, operation_id: str, *, token_id: str | None = None, lock: bool = False
) -> ProvisioningOperation:
    """The operation; ``lock`` for a write that decides on its state (held to commit)."""
    if token_id is None:
        query = sql.LOCK_OPERATION if lock else sql.SELECT_OPERATION
        row = conn.execute(query, {"b_id": operation_id}).first()
    else:  # a device sees only operations started with its own token
        query = sql.LOCK_OPERATION_OF_TOKEN if lock else sql.SELECT_OPERATION_OF_TOKEN
        row = conn.execute(query, {"b_id": operation_id, "b_token_id": token_id}).first()
    if row is None:
        raise NotFound(
            f"no Provisioning Operation {operation_id!r}", field="provisioningOperationId"
        )
    return _op(row._mapping)


def _get_token(
    conn: Connection, token_id: str, workspace_id: str | None = None
) -> ProvisioningToken:
    """The token; with ``workspace_id``, another workspace's token is as unknown as none."""
    row = conn.execute(sql.SELECT_PROVISIONING_TOKEN, {"b_id": token_id}).first()
    if row is None or (workspace_id is not None and row._mapping["workspace_id"] != workspace_id):
        raise NotFound(f"no Provisioning Token {token_id!r}", field="id")
    return _token(row._mapping)


def _token(m: RowMapping) -> ProvisioningToken:
    c = provisioning_tokens.c
    return ProvisioningToken(
        id=m[c.id],
        name=m[c.name],
        options=ProvisioningTokenOptions(
            max_registration_token_lifetime=m[c.max_registration_token_lifetime],
            registration_token_lifetime_override=LifetimeOverrideMode(
                m[c.registration_token_lifetime_override]
            ),
            allow_infinite_lifetime=m[c.allow_infinite_lifetime],
            device_id=m[c.device_id],
            device_id_override=DeviceIdOverrideMode(m[c.device_id_override]),
        ),
        created_at=from_epoch_required(m[c.created_at]),
        revoked_at=from_epoch(m[c.revoked_at]),
        batch_id=m[c.batch_id],
        workspace_id=m[c.workspace_id],
        paused_at=from_epoch(m[c.paused_at]),
        paused_reason=m[c.paused_reason],
    )


def _op(m: RowMapping) -> ProvisioningOperation:
    c = provisioning_operations.c
    reason = m[c.cancel_reason]
    return ProvisioningOperation(
        id=m[c.id],
        provisioning_token_id=m[c.provisioning_token_id],
        verification_code=m[c.verification_code],
        created_at=from_epoch_required(m[c.created_at]),
        expires_at=from_epoch_required(m[c.expires_at]),
        device_id=m[c.device_id] and bare_device_id(m[c.device_id]),  # stored as its key
        attributes=dict(m[c.attributes] or {}),
        state=OperationState(m[c.state]),
        approved_at=from_epoch(m[c.approved_at]),
        completed_at=from_epoch(m[c.completed_at]),
        cancelled_at=from_epoch(m[c.cancelled_at]),
        cancel_reason=ops.CancelReason(reason) if reason else None,
        registration_token_lifetime=m[c.registration_token_lifetime],
    )


def _op_row(op: ProvisioningOperation, workspace_id: str) -> dict[str, object]:
    """The row of an operation of ``workspace_id``: its Device ID is stored as the device
    key, so the per-Device-ID rules (open-operation limit, approval superseding others,
    closing on revoke) hold within the workspace only."""
    return {
        "id": op.id,
        "provisioning_token_id": op.provisioning_token_id,
        "verification_code": op.verification_code,
        "device_id": op.device_id and device_key(workspace_id, op.device_id),
        "attributes": op.attributes,
        "state": op.state.value,
        "created_at": to_epoch(op.created_at),
        "expires_at": to_epoch(op.expires_at),
        "approved_at": op.approved_at and to_epoch(op.approved_at),
        "completed_at": op.completed_at and to_epoch(op.completed_at),
        "cancelled_at": op.cancelled_at and to_epoch(op.cancelled_at),
        "cancel_reason": op.cancel_reason.value if op.cancel_reason else None,
        "registration_token_lifetime": op.registration_token_lifetime,
    }
