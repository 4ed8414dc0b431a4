"""The technician/admin API (``Authorization: Bearer <api key>``): each controller is served
under ``/api/v1`` (workspace ``default``) and ``/api/v1/workspaces/{workspaceId}`` (``app.py``);
handlers act in the ``workspace`` the guard checked (``api/auth.py``). Devices are addressed by
their Device ID on the wire and by their key (``domain/workspaces.py``) in the services."""

from __future__ import annotations

import base64
import binascii
import csv
import io
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from ..domain.convergence import ConvergenceState, RolloutState
from ..domain.errors import DomainError, ValidationError
from ..domain.operation_filters import OperationFilter
from ..domain.operations import OperationState
from ..domain.tokens import DeviceIdOverrideMode, ProvisioningTokenOptions
from ..domain.topics import STREAM_PATTERN
from ..domain.verification import CODE_PATTERN
from ..domain.workspaces import PLATFORM_WIDE, device_key
from ..services import Services
from ..services.api_keys import ApiKey
from ..services.audit import set_reason
from ..services.operation_batches import BatchOutcome, OperationBatchService
from ..services.twin import Section
from .alerts import AlertsController
from .audit import AuditController
from .auth import ACCESS, WORKSPACE_PARAMETER, Access
from .models import (
    MAX_WIRE_INT,
    ApiKeyOut,
    ApproveRequest,
    BatchApproveRequest,
    BatchItemOut,
    BatchOut,
    BatchRequest,
    BulkProvisioningTokensRequest,
    CloudToDeviceOut,
    CloudToDeviceRequest,
    ConnectionEventOut,
    ConvergenceCountsOut,
    CreateApiKeyRequest,
    CreatedApiKeyOut,
    CreatedProvisioningTokenOut,
    CreateProvisioningTokenRequest,
    DeviceOut,
    FleetConfigurationDryRunOut,
    FleetConfigurationIn,
    FleetConfigurationOut,
    MessageOut,
    OperationFilterIn,
    OperationOut,
    PropertyProvenanceOut,
    ProvisioningTokenOut,
    RevokeDeviceOut,
    TokenOptionsFields,
    TwinConvergenceOut,
    TwinOut,
    TwinProvenanceOut,
)
from .problems import ALSO_ANSWERS, PROBLEMS, status_of

# Access is the guard's (api/auth.py): admin unless a controller or route says otherwise.
TECHNICIAN = {ACCESS: Access.TECHNICIAN}
ADMIN = {ACCESS: Access.ADMIN}
BodyT = TypeVar("BodyT")


class ApiController(Controller):
    """A resource of the technician/admin API: admin unless it says otherwise."""

    security = [{"apiKey": []}]


def _options(
    data: JSONBody[TokenOptionsFields], *, device_id: str | None
) -> ProvisioningTokenOptions:
    mode = data.device_id_override
    if mode is None:
        mode = DeviceIdOverrideMode.DISABLED if device_id else DeviceIdOverrideMode.ENFORCED_AT_INIT
    return ProvisioningTokenOptions.validated(
        max_registration_token_lifetime=data.max_registration_token_lifetime,
        registration_token_lifetime_override=data.registration_token_lifetime_override,
        allow_infinite_lifetime=data.allow_infinite_lifetime,
        device_id=device_id,
        device_id_override=mode,
    )


class ProvisioningTokensController(ApiController):
    path = "/provisioning-tokens"
    tags = ["provisioning tokens"]

    @post("/", status_code=201)
    async def create(
        self,
        data: JSONBody[CreateProvisioningTokenRequest],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> CreatedProvisioningTokenOut:
        """Create a Provisioning Token; its secret is in the response, once."""
        created = await services.provisioning.create_token(
            data.name, _options(data, device_id=data.device_id), workspace_id=workspace
        )
        return CreatedProvisioningTokenOut.of(created)

    @post(
        "/bulk",
        status_code=201,
        opt={ALSO_ANSWERS: {201: ("text/csv", "With `?format=csv`: CSV, one row per token.")}},
    )
    async def bulk(
        self,
        data: JSONBody[BulkProvisioningTokensRequest],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        output: Annotated[str, QueryParameter(name="format", pattern="^(json|csv)$")] = "json",
    ) -> Response[Any]:
        """Per-device tokens for a factory run; ``?format=csv`` answers CSV
        (``deviceId,provisioningTokenId,provisioningToken``)."""
        if data.device_ids is not None:
            device_ids = data.device_ids
        elif data.count is not None:
            prefix = data.device_id_prefix or "device-"
            device_ids = [f"{prefix}{i:05d}" for i in range(1, data.count + 1)]
        else:
            raise ValidationError(
                "give deviceIds, or count (and deviceIdPrefix)", field="deviceIds"
            )
        template = _options(data, device_id=device_ids[0] if device_ids else None)
        created = await services.provisioning.create_tokens_bulk(
            data.name, template, device_ids, workspace_id=workspace
        )
        if output == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["deviceId", "provisioningTokenId", "provisioningToken"])
            for c in created:
                writer.writerow([c.token.options.device_id, c.token.id, c.secret])
            return Response(buffer.getvalue(), status_code=201, media_type="text/csv")
        return Response([CreatedProvisioningTokenOut.of(c) for c in created], status_code=201)

    @get("/")
    async def list_tokens(
        self, services: NamedDependency[Services], workspace: NamedDependency[str]
    ) -> list[ProvisioningTokenOut]:
        tokens = await services.provisioning.list_tokens(workspace)
        return [ProvisioningTokenOut.of(t) for t in tokens]

    @get("/{token_id:str}")
    async def get_token(
        self,
        token_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> ProvisioningTokenOut:
        return ProvisioningTokenOut.of(await services.provisioning.get_token(token_id, workspace))

    @post("/{token_id:str}/revoke", status_code=200)
    async def revoke(
        self,
        token_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> ProvisioningTokenOut:
        """Revoke: the token starts no more operations, its pending ones cannot be approved."""
        return ProvisioningTokenOut.of(
            await services.provisioning.revoke_token(token_id, workspace)
        )

    @post("/{token_id:str}/pause", status_code=200, opt={PROBLEMS: (409,)})
    async def pause(
        self,
        token_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> ProvisioningTokenOut:
        """Pause, reversibly: init with the token answers 403 until it is resumed; its
        operations already open keep working. 409 for a revoked token; ``?reason=`` is
        kept as ``pausedReason``."""
        return ProvisioningTokenOut.of(await services.provisioning.pause_token(token_id, workspace))

    @post("/{token_id:str}/resume", status_code=200)
    async def resume(
        self,
        token_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> ProvisioningTokenOut:
        """Resume a paused token: it opens operations again."""
        return ProvisioningTokenOut.of(
            await services.provisioning.resume_token(token_id, workspace)
        )


async def _strictly(request: Request[Any, Any, Any], kind: type[BodyT]) -> BodyT:
    """The body as ``kind``, typed strictly: Litestar converts bodies leniently (``0`` for
    false, ``"5"`` for 5), and a batch acting on many operations takes only what its
    document says (the schemathesis run found ``"dryRun": 0`` accepted). A 400 names the
    field (``filter.ids[0]``)."""
    try:
        return msgspec.convert(await request.json(), type=kind, strict=True)
    except msgspec.ValidationError as exc:
        detail, _, where = str(exc).partition(" - at `$")
        field = where.rstrip("`").lstrip(".") or "body"
        raise ValidationError(detail, field=field) from None


def _timestamp(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        raise ValidationError(
            f"{value[:40]!r} is not a time: give RFC 3339 with a zone, e.g. 2026-11-27T08:00:00Z",
            field=field,
        ) from None


def _selection(data: OperationFilterIn, *, states: tuple[OperationState, ...]) -> OperationFilter:
    return OperationFilter.validated(
        provisioning_token_id=data.provisioning_token_id,
        device_id_prefix=data.device_id_prefix,
        device_id_pattern=data.device_id_pattern,
        attributes=data.attributes,
        created_after=_timestamp(data.created_after, "filter.createdAfter"),
        created_before=_timestamp(data.created_before, "filter.createdBefore"),
        ids=data.ids,
        verification_codes=data.verification_codes,
        state=data.state,
        states_allowed=states,
    )


def _problem(exc: DomainError) -> dict[str, Any]:
    """The problem body the single route answers for ``exc`` (``api/problems.py``)."""
    body: dict[str, Any] = {
        "type": exc.problem_type,
        "title": exc.title,
        "status": status_of(exc),
        "detail": exc.detail,
    }
    if exc.field:
        body["field"] = exc.field
    return body


def _batch_out(outcome: BatchOutcome) -> BatchOut:
    counts: dict[str, int] = {}
    results = []
    for item in outcome.items:
        counts[item.result.value] = counts.get(item.result.value, 0) + 1
        results.append(
            BatchItemOut(
                provisioning_operation_id=item.operation_id,
                verification_code=item.verification_code,
                device_id=item.device_id,
                result=item.result.value,
                reason=item.reason,
                problem=None if item.error is None else _problem(item.error),
            )
        )
    return BatchOut(
        dry_run=outcome.dry_run,
        matched=outcome.matched,
        truncated=outcome.truncated,
        counts=counts,
        results=results,
    )


def _batches(services: Services) -> OperationBatchService:
    return OperationBatchService(services.db, services.clock, services.provisioning.code_lookups)


class ProvisioningOperationsController(ApiController):
    path = "/provisioning-operations"
    tags = ["provisioning operations"]
    opt = TECHNICIAN

    # The batch routes (POST /approve, /cancel) and the single ones
    # (POST /{operationId}/approve) differ in length, so neither shadows the other.
    @post("/approve", status_code=200, opt={PROBLEMS: (429,)})
    async def approve_matching(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[BatchApproveRequest],
        principal: NamedDependency[ApiKey],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> BatchOut:
        """Approve every pending operation ``filter`` selects, oldest first, at most
        ``limit`` (1000) per call; each is approved by the single approval's rules (and
        supersedes other open operations of its Device ID). ``deviceIdPattern`` is a glob
        (fnmatch-style). Operations of the batch that share a Device ID are all skipped.
        ``dryRun``: what would happen, nothing changed. Past ``limit``: ``truncated`` is
        true and only the first ``limit`` were acted on. See docs/tokens.md."""
        data = await _strictly(request, BatchApproveRequest)
        if data.device_id is not None:
            raise ValidationError(
                "a batch cannot give one Device ID to many operations: approve that one "
                "by its id or code (POST /provisioning-operations/{id}/approve)",
                field="deviceId",
            )
        selection = _selection(data.filter, states=(OperationState.PENDING,))
        set_reason(data.reason)  # each operation's audit event carries it
        outcome = await _batches(services).approve(
            workspace,
            selection,
            dry_run=data.dry_run,
            limit=data.limit,
            requester=principal.id,
            registration_token_lifetime=data.registration_token_lifetime,
            infinite_lifetime=data.infinite_lifetime,
        )
        return _batch_out(outcome)

    @post("/cancel", status_code=200, opt={PROBLEMS: (429,)})
    async def cancel_matching(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[BatchRequest],
        principal: NamedDependency[ApiKey],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> BatchOut:
        """Cancel every pending or approved operation ``filter`` selects (``state`` narrows
        to one), oldest first, at most ``limit`` (1000) per call; ``dryRun`` changes
        nothing; past ``limit``, ``truncated`` is true."""
        data = await _strictly(request, BatchRequest)
        selection = _selection(
            data.filter, states=(OperationState.PENDING, OperationState.APPROVED)
        )
        set_reason(data.reason)  # each operation's audit event carries it
        outcome = await _batches(services).cancel(
            workspace, selection, dry_run=data.dry_run, limit=data.limit, requester=principal.id
        )
        return _batch_out(outcome)

    @get("/", opt={PROBLEMS: (429,)})  # code look-ups are rate-limited per API key
    async def list_operations(
        self,
        principal: NamedDependency[ApiKey],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        operation_state: Annotated[OperationState | None, QueryParameter(name="state")] = None,
        verification_code: Annotated[
            str | None, QueryParameter(name="verificationCode", pattern=CODE_PATTERN)
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 500,
    ) -> list[OperationOut]:
        """Operations, newest first; filter by ``state`` and ``verificationCode``
        (code lookups are rate-limited per API key)."""
        views = await services.provisioning.list_operations(
            workspace,
            state=operation_state,
            verification_code=verification_code,
            requester=principal.id,
            limit=limit,
        )
        return [OperationOut.of(v) for v in views]

    @get("/{operation_id:str}")
    async def get_operation(
        self,
        operation_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> OperationOut:
        return OperationOut.of(await services.provisioning.get_operation(operation_id, workspace))

    @post("/{operation_id:str}/approve", status_code=200, opt={PROBLEMS: (409, 429)})
    async def approve(
        self,
        operation_id: FromPath[str],
        principal: NamedDependency[ApiKey],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        data: JSONBody[ApproveRequest | None] = None,
    ) -> OperationOut:
        """Approve, by id or by the verification code the device shows; ``deviceId`` and
        ``registrationTokenLifetime`` only where the token's modes allow them. Other open
        operations for the same Device ID are cancelled."""
        data = data or ApproveRequest()
        view = await services.provisioning.approve_operation(
            await services.provisioning.resolve_operation_id(
                operation_id, requester=principal.id, workspace_id=workspace
            ),
            workspace,
            device_id=data.device_id,
            registration_token_lifetime=data.registration_token_lifetime,
            infinite_lifetime=data.infinite_lifetime,
        )
        return OperationOut.of(view)

    @post("/{operation_id:str}/cancel", status_code=200, opt={PROBLEMS: (409, 429)})
    async def cancel(
        self,
        operation_id: FromPath[str],
        principal: NamedDependency[ApiKey],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> OperationOut:
        """Cancel, by id or by the verification code the device shows."""
        resolved = await services.provisioning.resolve_operation_id(
            operation_id, requester=principal.id, workspace_id=workspace
        )
        return OperationOut.of(await services.provisioning.cancel_operation(resolved, workspace))


class DevicesController(ApiController):
    path = "/devices"
    tags = ["devices"]
    opt = TECHNICIAN

    @get("/")
    async def list_devices(
        self,
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        after: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 1000,
        convergence: FromQuery[ConvergenceState | None] = None,
        desired_property: Annotated[
            str | None, QueryParameter(name="property", min_length=1, max_length=1000)
        ] = None,
    ) -> list[DeviceOut]:
        """Devices by Device ID; page with ``after`` (the last Device ID seen).
        ``convergence`` (pending, converged, drifted, failed): only devices with a desired property
        in that state; ``property``: that property."""
        listed = await services.devices.list(
            workspace,
            limit=limit,
            after=after,
            convergence=convergence.value if convergence else None,
            desired_property=desired_property,
        )
        return [DeviceOut.of(d) for d in listed]

    @get("/{device_id:str}")
    async def get_device(
        self,
        device_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> DeviceOut:
        return DeviceOut.of(await services.devices.get(device_key(workspace, device_id)))

    @get("/{device_id:str}/messages")
    async def list_messages(
        self,
        device_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        stream: Annotated[str | None, QueryParameter(pattern=f"^{STREAM_PATTERN.pattern}$")] = None,
        after: Annotated[int, QueryParameter(ge=0, le=MAX_WIRE_INT)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
    ) -> list[MessageOut]:
        """Stored messages of a device, oldest first; page with ``after`` (last ``seq``)."""
        key = device_key(workspace, device_id)
        await services.devices.get(key)  # 404 for an unknown device
        stored = await services.messages.list(key, stream=stream, after=after, limit=limit)
        return [MessageOut.of(m) for m in stored]

    @get("/{device_id:str}/connections")
    async def list_connection_events(
        self,
        device_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        after: Annotated[int, QueryParameter(ge=0, le=MAX_WIRE_INT)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 1000,
    ) -> list[ConnectionEventOut]:
        """The device's connects and disconnects, oldest first; page with ``after`` (last
        ``seq``). Read-only: the fleet's own connectivity data for a simulator fit."""
        events = await services.devices.connection_events(
            device_key(workspace, device_id), after=after, limit=limit
        )
        return [ConnectionEventOut.of(e) for e in events]

    @get("/{device_id:str}/twin")
    async def get_twin(
        self,
        device_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> TwinOut:
        """Desired and reported properties and tags, each with version and last update,
        and each desired property's ``convergence`` (pending, converged, drifted, failed)."""
        return TwinOut.of(await services.twins.get(device_key(workspace, device_id)))

    @get("/{device_id:str}/twin/provenance")
    async def get_twin_provenance(
        self,
        device_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> TwinProvenanceOut:
        """For each desired property: who set it (a fleet configuration at its priority,
        or a manual patch), when, and every configuration targeting the device that sets
        it, highest priority first."""
        found = await services.fleet.provenance(device_key(workspace, device_id))
        return TwinProvenanceOut(
            device_id=device_id,
            properties={k: PropertyProvenanceOut.of(v) for k, v in found.items()},
        )

    @patch("/{device_id:str}/twin/desired", opt=ADMIN)
    async def patch_desired(
        self,
        device_id: FromPath[str],
        data: JSONBody[dict[str, Any]],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> TwinOut:
        """JSON merge-patch of the desired properties (a null removes a key); the device
        receives the patch with its ``$version`` over MQTT."""
        key = device_key(workspace, device_id)
        return TwinOut.of(await services.twins.patch(key, Section.DESIRED, data))

    @patch("/{device_id:str}/twin/tags", opt=ADMIN)
    async def patch_tags(
        self,
        device_id: FromPath[str],
        data: JSONBody[dict[str, Any]],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> TwinOut:
        """JSON merge-patch of the tags (platform only; never sent to the device)."""
        key = device_key(workspace, device_id)
        return TwinOut.of(await services.twins.patch(key, Section.TAGS, data))

    @post(
        "/{device_id:str}/cloud-to-device-messages",
        status_code=201,
        opt={**ADMIN, PROBLEMS: (429,)},
    )
    async def send_cloud_to_device(
        self,
        device_id: FromPath[str],
        data: JSONBody[CloudToDeviceRequest],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> CloudToDeviceOut:
        """Queue a message for the device; it is sent over MQTT (QoS 1, on
        ``devices/{id}/messages/devicebound/{properties}``) once the device listens, and is
        ``delivered`` at its PUBACK. At most 50 wait per device (then 429), 64 KiB each."""
        if data.encoding == "base64":
            try:
                payload = base64.b64decode(data.payload, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError("payload is not valid base64", field="payload") from None
        else:
            payload = data.payload.encode("utf-8")
        sent = await services.cloud_to_device.send(
            device_key(workspace, device_id),
            payload,
            data.properties,
            timedelta(seconds=data.time_to_live_seconds),
        )
        return CloudToDeviceOut.of(sent)

    @get("/{device_id:str}/cloud-to-device-messages")
    async def list_cloud_to_device(
        self,
        device_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        after: Annotated[int, QueryParameter(ge=0, le=MAX_WIRE_INT)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[CloudToDeviceOut]:
        """Messages sent to the device with their delivery state, oldest first; page with
        ``after`` (the last ``seq``)."""
        listed = await services.cloud_to_device.list(
            device_key(workspace, device_id), after=after, limit=limit
        )
        return [CloudToDeviceOut.of(m) for m in listed]

    @delete("/{device_id:str}", status_code=204, opt=ADMIN)
    async def delete_device(
        self,
        device_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> None:
        """Forget the device; its tokens stop working and its MQTT session ends."""
        await services.registration.delete_device(device_key(workspace, device_id))

    @post("/{device_id:str}/revoke", status_code=200, opt=ADMIN)
    async def revoke(
        self,
        device_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> RevokeDeviceOut:
        """Revoke every Registration Token of the device; it must provision again."""
        count = await services.registration.revoke_device(device_key(workspace, device_id))
        return RevokeDeviceOut(device_id=device_id, revoked_tokens=count)


class ApiKeysController(ApiController):
    path = "/api-keys"
    tags = ["api keys"]

    @post("/", status_code=201)
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CreateApiKeyRequest],
        principal: NamedDependency[ApiKey],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> CreatedApiKeyOut:
        """A key of this workspace. A platform-wide key calling ``/api/v1/api-keys`` (no
        workspace in the path) makes a platform-wide key, acting in every workspace, as
        every key did before workspaces; a workspace's key only ever makes keys of it."""
        scoped = (
            principal.workspace_id != PLATFORM_WIDE
            or WORKSPACE_PARAMETER in request.path_params  # /workspaces/default/… too
        )
        created = await services.api_keys.create(
            data.name, data.role, workspace_id=workspace if scoped else PLATFORM_WIDE
        )
        return CreatedApiKeyOut.of(created)

    @get("/")
    async def list_keys(
        self, services: NamedDependency[Services], workspace: NamedDependency[str]
    ) -> list[ApiKeyOut]:
        """The workspace's keys; ``default``'s listing shows the platform-wide ones too."""
        return [ApiKeyOut.of(k) for k in await services.api_keys.list(workspace)]

    @post("/{key_id:str}/revoke", status_code=200, opt={PROBLEMS: (409,)})
    async def revoke(
        self,
        key_id: FromPath[str],
        principal: NamedDependency[ApiKey],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> ApiKeyOut:
        """Revoke a key at once (409 for the key making the request: no self-lockout)."""
        return ApiKeyOut.of(
            await services.api_keys.revoke(key_id, by=principal.id, workspace_id=workspace)
        )


DRY_RUN_ANSWER = "With `?dryRun=true`: what it would do (nothing written)."


class FleetConfigurationsController(ApiController):
    path = "/fleet-configurations"
    tags = ["fleet configurations"]

    @post(
        "/",
        status_code=201,
        opt={PROBLEMS: (409,)},
        responses={200: ResponseSpec(FleetConfigurationDryRunOut, description=DRY_RUN_ANSWER)},
    )
    async def create(
        self,
        data: JSONBody[FleetConfigurationIn],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        dry_run: Annotated[bool, QueryParameter(name="dryRun")] = False,
    ) -> Response[Any]:
        """Create a configuration; the fleet is re-evaluated at once. With a ``rollout``,
        in stages. ``?dryRun=true``: the devices it would target and their desired
        properties before and after, writing nothing (200)."""
        if dry_run:
            preview = await services.fleet.dry_run(
                target_condition=data.target_condition,
                desired_properties=data.desired_properties,
                priority=data.priority,
                configuration_id=data.id,
                workspace_id=workspace,
                rollout=data.rollout,
            )
            return Response(FleetConfigurationDryRunOut.of(preview), status_code=200)
        config = await services.fleet.create(
            target_condition=data.target_condition,
            desired_properties=data.desired_properties,
            priority=data.priority,
            configuration_id=data.id,
            workspace_id=workspace,
            rollout=data.rollout,
        )
        metrics = await services.fleet.metrics(workspace)
        return Response(FleetConfigurationOut.of(config, metrics.get(config.id)), status_code=201)

    @get("/")
    async def list_configurations(
        self, services: NamedDependency[Services], workspace: NamedDependency[str]
    ) -> list[FleetConfigurationOut]:
        metrics = await services.fleet.metrics(workspace)
        configs = await services.fleet.list(workspace)
        return [FleetConfigurationOut.of(c, metrics.get(c.id)) for c in configs]

    @get("/{configuration_id:str}")
    async def get_configuration(
        self,
        configuration_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> FleetConfigurationOut:
        config = await services.fleet.get(configuration_id, workspace)
        metrics = await services.fleet.metrics(workspace)
        return FleetConfigurationOut.of(config, metrics.get(config.id))

    @put("/{configuration_id:str}")
    async def replace(
        self,
        configuration_id: FromPath[str],
        data: JSONBody[FleetConfigurationIn],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        dry_run: Annotated[bool, QueryParameter(name="dryRun")] = False,
    ) -> FleetConfigurationOut | FleetConfigurationDryRunOut:
        """Change a configuration; the fleet is re-evaluated at once (with a ``rollout``,
        the change rolls out in stages afresh). ``?dryRun=true``: what it would do, writing
        nothing."""
        if data.id is not None and data.id != configuration_id:
            raise ValidationError("id in the body differs from the path", field="id")
        if dry_run:
            preview = await services.fleet.dry_run(
                target_condition=data.target_condition,
                desired_properties=data.desired_properties,
                priority=data.priority,
                configuration_id=configuration_id,
                workspace_id=workspace,
                rollout=data.rollout,
                replacing=True,
            )
            return FleetConfigurationDryRunOut.of(preview)
        config = await services.fleet.replace(
            configuration_id,
            target_condition=data.target_condition,
            desired_properties=data.desired_properties,
            priority=data.priority,
            workspace_id=workspace,
            rollout=data.rollout,
        )
        metrics = await services.fleet.metrics(workspace)
        return FleetConfigurationOut.of(config, metrics.get(config.id))

    @post("/{configuration_id:str}/rollout/resume", status_code=200, opt={PROBLEMS: (409,)})
    async def resume_rollout(
        self,
        configuration_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> FleetConfigurationOut:
        """Resume a halted staged rollout; its current stage is judged again at once."""
        config = await services.fleet.set_rollout_state(
            configuration_id, RolloutState.ROLLING, workspace
        )
        metrics = await services.fleet.metrics(workspace)
        return FleetConfigurationOut.of(config, metrics.get(config.id))

    @post("/{configuration_id:str}/rollout/abort", status_code=200, opt={PROBLEMS: (409,)})
    async def abort_rollout(
        self,
        configuration_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> FleetConfigurationOut:
        """Stop a staged rollout: devices it reached keep the configuration, no others get
        it (delete the configuration to take it back)."""
        config = await services.fleet.set_rollout_state(
            configuration_id, RolloutState.ABORTED, workspace
        )
        metrics = await services.fleet.metrics(workspace)
        return FleetConfigurationOut.of(config, metrics.get(config.id))

    @delete("/{configuration_id:str}", status_code=204)
    async def delete_configuration(
        self,
        configuration_id: FromPath[str],
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
    ) -> None:
        """Delete; properties only it set are removed from the devices' desired properties."""
        await services.fleet.delete(configuration_id, workspace)


class TwinConvergenceController(ApiController):
    path = "/twin-convergence"
    tags = ["devices"]
    opt = TECHNICIAN

    @get("/")
    async def fleet_convergence(
        self, services: NamedDependency[Services], workspace: NamedDependency[str]
    ) -> TwinConvergenceOut:
        """Fleet-wide: devices by convergence state per desired property and per fleet
        configuration (its devices by the worst state of the properties it set)."""
        per_property = await services.fleet.convergence_counts(workspace)
        metrics = await services.fleet.metrics(workspace)
        return TwinConvergenceOut(
            properties={k: ConvergenceCountsOut(**v) for k, v in per_property.items()},
            configurations={
                cid: ConvergenceCountsOut(
                    pending=m.pending, converged=m.converged, drifted=m.drifted, failed=m.failed
                )
                for cid, m in metrics.items()
            },
        )


CONTROLLERS = [
    ProvisioningTokensController,
    ProvisioningOperationsController,
    DevicesController,
    ApiKeysController,
    AuditController,  # api/audit.py
    FleetConfigurationsController,
    TwinConvergenceController,
    AlertsController,  # api/alerts.py
]
