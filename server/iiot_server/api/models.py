"""Wire models: msgspec Structs, camelCase on the wire, apart from storage models."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from ..domain import sas
from ..domain.device_id import DEVICE_ID_PATTERN
from ..domain.fleet import FleetConfiguration
from ..domain.operation_filters import MAX_BATCH
from ..domain.operations import OperationState
from ..domain.tokens import DeviceIdOverrideMode, LifetimeOverrideMode
from ..domain.workspaces import bare_device_id, split_device_key
from ..security import Role
from ..services.api_keys import ApiKey, CreatedApiKey
from ..services.audit import AuditEvent
from ..services.cloud_to_device import CloudToDeviceMessage
from ..services.devices import ConnectionEvent, Device
from ..services.fleet import (
    ConfigurationMetrics,
    DryRun,
    DryRunDevice,
    PropertyProvenance,
    StageMetrics,
)
from ..services.messages import StoredMessage
from ..services.provisioning import CreatedProvisioningToken, OperationView, ProvisioningToken
from ..services.registration import IssuedToken, Registration
from ..services.twin import PropertyConvergence, Twin, TwinSection
from ..services.workspaces import Workspace

Seconds = Annotated[float, msgspec.Meta(ge=1, le=100 * 365 * 86400, description="seconds")]
MAX_WIRE_INT = 2**53 - 1
"""Largest integer accepted on the wire: storage holds 2**63 - 1 (SQLite and PostgreSQL
BIGINT; larger ones crashed a handler with OverflowError, a 500, before they were bounded),
but 2**53 - 1 is the largest every JSON parser holds exactly, so a client reading the
OpenAPI document's bound gets the same number the server checks."""
Priority = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
# The domain's rules, also in the schema, so the OpenAPI document promises nothing the
# domain then refuses (schemathesis checks that schema-valid input is accepted).
DeviceId = Annotated[
    str, msgspec.Meta(pattern=f"^{DEVICE_ID_PATTERN.pattern}$", description="a Device ID")
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Wire(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=False):
    """Base of all wire models. Answers tolerate fields they do not know, so a client
    reading a newer platform's answer keeps working."""


class WireRequest(Wire, forbid_unknown_fields=True):
    """Base of request bodies: a field the API does not know is refused (400 naming it),
    never dropped: a snake_case ``max_registration_token_lifetime`` made a token with no
    maximum lifetime while this was silent (issue 12). The Spotflow device SDK sends only
    fields these bodies know (``deviceId``; ``provisioningOperationId``;
    ``registrationToken``; register's ``connectionStringType`` goes to a route that reads
    no body)."""


# Device API ------------------------------------------------------------------------


class InitOperationRequest(WireRequest):
    device_id: DeviceId | None = None
    attributes: dict[str, str] | None = None


class InitOperationResponse(Wire):
    provisioning_operation_id: str
    verification_code: str
    expiration_time: datetime
    poll_interval: float


class CompleteOperationRequest(WireRequest):
    provisioning_operation_id: str


class OperationStatusResponse(Wire):
    provisioning_operation_id: str
    verification_code: str
    expiration_time: datetime
    state: OperationState


class RegistrationTokenResponse(Wire):
    registration_token: str
    expiration_time: datetime | None
    lifetime: float | None
    device_id: str

    @classmethod
    def of(cls, issued: IssuedToken) -> RegistrationTokenResponse:
        return cls(
            registration_token=issued.secret,
            expiration_time=issued.token.expires_at,
            lifetime=issued.token.lifetime,
            device_id=bare_device_id(issued.token.device_id),
        )


class RefreshRequest(WireRequest):
    registration_token: str


class RegisterResponse(Wire):
    workspace_id: str
    device_id: str
    mqtt_host: str
    mqtt_port: int
    mqtt_tls: bool
    """MQTT over TLS on ``mqtt_port`` (trust the platform's CA), else plain MQTT."""
    mqtt_client_id: str
    mqtt_username: str
    mqtt_password: str
    registration_token_expiration_time: datetime | None
    registration_token_lifetime: float | None
    refresh_after: float | None
    max_mqtt_message_size: int
    # Spotflow's fields (its SDK reads these; see docs/protocol.md "Spotflow SDK")
    connection_string: str
    """``HostName=<mqtt host>;DeviceId=<workspace>:<device>;SharedAccessSignature=…``"""
    iot_hub_host_name: str
    """The MQTT host (Spotflow's SDK connects to its port 8883)."""
    connection_string_type: str
    """Always ``SharedAccessSignature``."""
    connection_string_expiration: datetime
    """When the SAS expires: with the RT, or a day after registering for an infinite RT."""
    token_remaining_lifetime: str | None
    """The RT's remaining lifetime as a .NET time span (``[d.]hh:mm:ss``); null: infinite."""

    @classmethod
    def of(cls, r: Registration) -> RegisterResponse:
        return cls(
            workspace_id=r.workspace_id,
            device_id=r.device_id,
            mqtt_host=r.mqtt_host,
            mqtt_port=r.mqtt_port,
            mqtt_tls=r.mqtt_tls,
            mqtt_client_id=r.mqtt_client_id,
            mqtt_username=r.mqtt_username,
            mqtt_password=r.mqtt_password,
            registration_token_expiration_time=r.expires_at,
            registration_token_lifetime=r.remaining_lifetime,
            refresh_after=r.refresh_after,
            max_mqtt_message_size=r.max_mqtt_message_size,
            connection_string=r.connection_string,
            iot_hub_host_name=r.mqtt_host,
            connection_string_type=sas.CONNECTION_STRING_TYPE,
            connection_string_expiration=r.connection_string_expires_at,
            token_remaining_lifetime=(
                None if r.remaining_lifetime is None else sas.dotnet_time_span(r.remaining_lifetime)
            ),
        )


# Admin API ---------------------------------------------------------------------------


class TokenOptionsFields(WireRequest):
    device_id: DeviceId | None = None
    device_id_override: DeviceIdOverrideMode | None = None
    max_registration_token_lifetime: Seconds | None = None
    registration_token_lifetime_override: LifetimeOverrideMode = LifetimeOverrideMode.DISABLED
    allow_infinite_lifetime: bool = False


class CreateProvisioningTokenRequest(TokenOptionsFields, kw_only=True):
    """``deviceIdOverride`` defaults to ``disabled`` when a ``deviceId`` is given, else to
    ``enforced_at_init`` (the device names itself)."""

    name: str


class BulkProvisioningTokensRequest(TokenOptionsFields, kw_only=True):
    """Per-device tokens for a factory run: give ``deviceIds``, or ``count`` and
    ``deviceIdPrefix`` (IDs ``{prefix}{00001..count}``)."""

    name: Name
    device_ids: list[DeviceId] | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    device_id_prefix: str | None = None


class ProvisioningTokenOut(Wire):
    id: str
    name: str
    device_id: str | None
    device_id_override: DeviceIdOverrideMode
    max_registration_token_lifetime: float | None
    registration_token_lifetime_override: LifetimeOverrideMode
    allow_infinite_lifetime: bool
    created_at: datetime
    revoked_at: datetime | None
    batch_id: str | None
    paused: bool
    """Paused: ``/provisioning-operations/init`` refuses it (403) until resumed."""
    paused_at: datetime | None
    paused_reason: str | None

    @classmethod
    def of(cls, t: ProvisioningToken) -> ProvisioningTokenOut:
        o = t.options
        return cls(
            id=t.id,
            name=t.name,
            device_id=o.device_id,
            device_id_override=o.device_id_override,
            max_registration_token_lifetime=o.max_registration_token_lifetime,
            registration_token_lifetime_override=o.registration_token_lifetime_override,
            allow_infinite_lifetime=o.allow_infinite_lifetime,
            created_at=t.created_at,
            revoked_at=t.revoked_at,
            batch_id=t.batch_id,
            paused=t.paused,
            paused_at=t.paused_at,
            paused_reason=t.paused_reason,
        )


class CreatedProvisioningTokenOut(ProvisioningTokenOut):
    provisioning_token: str
    """The secret: shown once, never again."""

    @classmethod
    def of(  # type: ignore[override]  # from the creation: only it carries the secret
        cls, created: CreatedProvisioningToken
    ) -> CreatedProvisioningTokenOut:
        token = ProvisioningTokenOut.of(created.token)
        return cls(**msgspec.structs.asdict(token), provisioning_token=created.secret)


class ApproveRequest(WireRequest):
    device_id: DeviceId | None = None
    registration_token_lifetime: Seconds | None = None
    infinite_lifetime: bool = False


class OperationOut(Wire):
    id: str
    provisioning_token_id: str
    verification_code: str
    device_id: str | None
    attributes: dict[str, str]
    state: OperationState
    cancel_reason: str | None
    created_at: datetime
    expires_at: datetime
    approved_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    registration_token_lifetime: float | None
    device_id_override: DeviceIdOverrideMode
    registration_token_lifetime_override: LifetimeOverrideMode
    max_registration_token_lifetime: float | None
    allow_infinite_lifetime: bool

    @classmethod
    def of(cls, v: OperationView) -> OperationOut:
        op, o = v.operation, v.token.options
        return cls(
            id=op.id,
            provisioning_token_id=op.provisioning_token_id,
            verification_code=op.verification_code,
            device_id=op.device_id and bare_device_id(op.device_id),
            attributes=op.attributes,
            state=op.state,
            cancel_reason=op.cancel_reason.value if op.cancel_reason else None,
            created_at=op.created_at,
            expires_at=op.expires_at,
            approved_at=op.approved_at,
            completed_at=op.completed_at,
            cancelled_at=op.cancelled_at,
            registration_token_lifetime=op.registration_token_lifetime,
            device_id_override=o.device_id_override,
            registration_token_lifetime_override=o.registration_token_lifetime_override,
            max_registration_token_lifetime=o.max_registration_token_lifetime,
            allow_infinite_lifetime=o.allow_infinite_lifetime,
        )


# Batch approval and cancellation (issue 15) -----------------------------------------

Timestamp = Annotated[
    str,
    msgspec.Meta(
        description="RFC 3339 / ISO 8601 with a zone, e.g. 2026-11-27T08:00:00Z",
        extra_json_schema={"format": "date-time"},
    ),
]
"""A time in a request body, parsed by the handler: Litestar decodes bodies leniently, and a
``datetime`` field took a bare number as a Unix time (the schemathesis run found
``createdAfter: 0`` accepted)."""

OperationIds = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]],
    msgspec.Meta(max_length=MAX_BATCH),
]


class OperationFilterIn(WireRequest):
    """Which operations a batch acts on: every field given must hold (AND); at least one
    besides ``state`` is required. ``deviceIdPattern`` is a glob (fnmatch-style: ``*`` any
    run of characters, ``?`` one; case-sensitive). ``createdAfter`` is inclusive,
    ``createdBefore`` exclusive. ``ids`` / ``verificationCodes``: each one named is
    reported, also when skipped (not found, expired, already approved, ...)."""

    provisioning_token_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    device_id_prefix: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z_.\-]{1,90}$")] | None = None
    device_id_pattern: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z_.\-*?]{1,90}$")] | None = (
        None
    )
    attributes: dict[str, str] | None = None
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    ids: OperationIds | None = None
    verification_codes: OperationIds | None = None
    state: OperationState | None = None
    """Approve: ``pending`` (the default). Cancel: ``pending`` or ``approved`` (default:
    both)."""


class BatchRequest(WireRequest):
    """A batch over the operations ``filter`` selects; ``dryRun`` reports what would
    happen and changes nothing; ``limit`` (at most 1000) caps the operations acted on."""

    filter: OperationFilterIn
    dry_run: bool = False
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    """Why (recorded in the audit trail with every operation acted on)."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH)] = MAX_BATCH


class BatchApproveRequest(BatchRequest, kw_only=True):
    """The single approval's overrides, applied to each operation; ``deviceId`` is
    refused (one Device ID cannot go to many operations)."""

    registration_token_lifetime: Seconds | None = None
    infinite_lifetime: bool = False
    device_id: str | None = None


class BatchItemOut(Wire, omit_defaults=True):
    """One selected operation's result: ``approved`` / ``cancelled`` (``would_…`` in a dry
    run), ``skipped`` with a ``reason``, or ``failed`` with the ``problem`` the single route
    would answer."""

    provisioning_operation_id: str | None
    """None only for a verification code that no open operation shows."""
    verification_code: str | None
    device_id: str | None
    result: str
    reason: str | None = None
    problem: dict[str, Any] | None = None


class BatchOut(Wire):
    dry_run: bool
    matched: int
    """Operations the filter selected (with ``ids``/``verificationCodes``: each one named)."""
    truncated: bool
    """``matched`` exceeds the call's ``limit``: only the first ``limit`` (oldest first) are
    in ``results`` and were acted on; call again for the rest."""
    counts: dict[str, int]
    """Results per kind (``approved``, ``skipped``, ...)."""
    results: list[BatchItemOut]


class DeviceOut(Wire):
    device_id: str
    workspace_id: str
    provisioning_token_id: str
    provisioning_operation_id: str
    created_at: datetime
    provisioned_at: datetime
    registered_at: datetime | None
    registration_token_status: str | None
    registration_token_expires_at: datetime | None
    connected: bool
    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    connection_takeovers: int
    last_takeover_at: datetime | None

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        status = d.registration_token_status
        return cls(
            device_id=bare_device_id(d.device_id),
            workspace_id=split_device_key(d.device_id)[0],
            provisioning_token_id=d.provisioning_token_id,
            provisioning_operation_id=d.provisioning_operation_id,
            created_at=d.created_at,
            provisioned_at=d.provisioned_at,
            registered_at=d.registered_at,
            registration_token_status=status.value if status else None,
            registration_token_expires_at=d.registration_token_expires_at,
            connected=d.connected,
            last_connected_at=d.last_connected_at,
            last_disconnected_at=d.last_disconnected_at,
            connection_takeovers=d.connection_takeovers,
            last_takeover_at=d.last_takeover_at,
        )


class ConnectionEventOut(Wire):
    """A connect (``connected`` true) or disconnect of the device, as the broker saw it."""

    seq: int
    device_id: str
    at: datetime
    connected: bool
    takeover: bool

    @classmethod
    def of(cls, e: ConnectionEvent) -> ConnectionEventOut:
        return cls(
            seq=e.seq,
            device_id=bare_device_id(e.device_id),
            at=e.at,
            connected=e.connected,
            takeover=e.takeover,
        )


class RevokeDeviceOut(Wire):
    device_id: str
    revoked_tokens: int


class AuditEventOut(Wire):
    """One audit event (``GET /api/v1/audit``): ``actor`` (``api_key:<id>`` with its
    ``actorRole``, ``device:<id>``, ``provisioning_token:<id>`` or ``system``) did ``action``
    to ``targetKind``/``targetId`` at ``at``, saying ``reason``, in request ``requestId``;
    ``before``/``after`` hold the changed state where it has one (twin sections,
    configurations), ``detail`` the rest (approval overrides, token ids)."""

    id: int
    at: datetime
    workspace_id: str
    actor: str
    actor_role: str | None
    action: str
    target_kind: str
    target_id: str
    reason: str | None
    request_id: str | None
    before: Any
    after: Any
    detail: Any

    @classmethod
    def of(cls, e: AuditEvent) -> AuditEventOut:
        return cls(
            id=e.id,
            at=e.at,
            workspace_id=e.workspace_id,
            actor=e.actor,
            actor_role=e.actor_role,
            action=e.action,
            target_kind=e.target_kind,
            target_id=e.target_id,
            reason=e.reason,
            request_id=e.request_id,
            before=e.before,
            after=e.after,
            detail=e.detail,
        )


class CreateApiKeyRequest(WireRequest):
    name: Name
    role: Role


class ApiKeyOut(Wire):
    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    workspace_id: str
    """The one workspace the key acts in, or ``*``: every workspace (platform-wide)."""

    @classmethod
    def of(cls, k: ApiKey) -> ApiKeyOut:
        return cls(
            id=k.id,
            name=k.name,
            role=k.role,
            created_at=k.created_at,
            revoked_at=k.revoked_at,
            workspace_id=k.workspace_id,
        )


class CreatedApiKeyOut(ApiKeyOut):
    api_key: str
    """The secret: shown once, never again."""

    @classmethod
    def of(  # type: ignore[override]  # from the creation: only it carries the secret
        cls, created: CreatedApiKey
    ) -> CreatedApiKeyOut:
        key = ApiKeyOut.of(created.key)
        return cls(**msgspec.structs.asdict(key), api_key=created.secret)


def payload_text(payload: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """A payload for a JSON answer: its text when it is UTF-8, else base64.

    >>> payload_text(b"21.5"), payload_text(b"\\xff")
    (('21.5', 'utf-8'), ('/w==', 'base64'))
    """
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


class MessageOut(Wire):
    """A stored message; ``payload`` is UTF-8 text when it decodes, else base64."""

    seq: int
    device_id: str
    stream: str
    message_id: str | None
    received_at: datetime
    size: int
    encoding: Literal["utf-8", "base64"]
    payload: str

    @classmethod
    def of(cls, m: StoredMessage) -> MessageOut:
        text, encoding = payload_text(m.payload)
        return cls(
            seq=m.seq,
            device_id=bare_device_id(m.device_id),
            stream=m.stream,
            message_id=m.message_id,
            received_at=m.received_at,
            size=len(m.payload),
            encoding=encoding,  # type: ignore[arg-type]
            payload=text,
        )


class CloudToDeviceRequest(WireRequest):
    """A message for one device: ``payload`` as UTF-8 text, or base64 with
    ``encoding: "base64"`` (binary payloads); ``properties`` travel in the MQTT topic's
    property bag, as IoT Hub's application properties."""

    payload: str
    encoding: Literal["utf-8", "base64"] = "utf-8"
    properties: dict[str, str] | None = None
    time_to_live_seconds: Annotated[int, msgspec.Meta(ge=1, le=172_800)] = 3600


class CloudToDeviceOut(Wire):
    """A cloud-to-device message and its delivery: ``pending`` until the device's PUBACK
    (``delivered``), or ``expired`` once its time to live ran out first."""

    seq: int
    message_id: str
    device_id: str
    state: Literal["pending", "delivered", "expired"]
    created_at: datetime
    expires_at: datetime
    delivered_at: datetime | None
    properties: dict[str, str]
    size: int
    encoding: Literal["utf-8", "base64"]
    payload: str

    @classmethod
    def of(cls, m: CloudToDeviceMessage) -> CloudToDeviceOut:
        text, encoding = payload_text(m.payload)
        return cls(
            seq=m.seq,
            message_id=m.message_id,
            device_id=bare_device_id(m.device_id),
            state=m.state.value,  # type: ignore[arg-type]
            created_at=m.created_at,
            expires_at=m.expires_at,
            delivered_at=m.delivered_at,
            properties=m.properties,
            size=len(m.payload),
            encoding=encoding,  # type: ignore[arg-type]
            payload=text,
        )


class UploadOut(Wire):
    stored: bool
    """False when a message with this id was already stored."""


class TwinSectionOut(Wire):
    properties: dict[str, Any]
    version: int
    updated_at: datetime | None

    @classmethod
    def of(cls, section: TwinSection) -> TwinSectionOut:
        return cls(
            properties=section.properties, version=section.version, updated_at=section.updated_at
        )


class PropertyConvergenceOut(Wire):
    """One top-level desired property: ``pending`` (changed, not reported back yet),
    ``converged`` (reported as desired), ``drifted`` (reported otherwise after
    converging) or ``failed`` (the device acknowledged this desired version with ``ac`` >=
    400, docs/fleet-configurations.md); ``since``: when it entered that state; ``changedAt``
    and ``desiredVersion``: the desired change it is about; ``source``: ``manual`` or
    ``configuration`` (``configurationId`` at ``priority``)."""

    state: Literal["pending", "converged", "drifted", "failed"]
    since: datetime
    seconds_in_state: float
    changed_at: datetime
    seconds_since_change: float
    desired_version: int
    source: Literal["manual", "configuration"]
    configuration_id: str | None = None
    priority: int | None = None

    @classmethod
    def of(cls, p: PropertyConvergence) -> PropertyConvergenceOut:
        return cls(
            state=p.state.value,  # type: ignore[arg-type]  # the enum's values are the Literal
            since=p.since,
            seconds_in_state=p.seconds_in_state,
            changed_at=p.changed_at,
            seconds_since_change=p.seconds_since_change,
            desired_version=p.desired_version,
            source=p.source.kind,  # type: ignore[arg-type]
            configuration_id=p.source.configuration_id,
            priority=p.source.priority,
        )


class TwinOut(Wire):
    device_id: str
    desired: TwinSectionOut
    reported: TwinSectionOut
    tags: TwinSectionOut
    convergence: dict[str, PropertyConvergenceOut] = {}
    """Per top-level desired property (see :class:`PropertyConvergenceOut`)."""

    @classmethod
    def of(cls, twin: Twin) -> TwinOut:
        return cls(
            device_id=bare_device_id(twin.device_id),
            desired=TwinSectionOut.of(twin.desired),
            reported=TwinSectionOut.of(twin.reported),
            tags=TwinSectionOut.of(twin.tags),
            convergence={k: PropertyConvergenceOut.of(v) for k, v in twin.convergence.items()},
        )


class ProvenanceCandidateOut(Wire):
    configuration_id: str
    priority: int
    value: Any
    applies: bool
    """False: the configuration's staged rollout has not reached this device yet."""


class PropertyProvenanceOut(Wire):
    """Who set a desired property (``source``: ``manual``, ``configuration``, or
    ``unknown`` for a value older than the record), when, and every configuration
    targeting the device that sets it, highest priority first (the first that applies
    wins at the next re-evaluation)."""

    value: Any
    source: Literal["manual", "configuration", "unknown"]
    configuration_id: str | None
    priority: int | None
    set_at: datetime | None
    desired_version: int | None
    configurations: list[ProvenanceCandidateOut]

    @classmethod
    def of(cls, p: PropertyProvenance) -> PropertyProvenanceOut:
        return cls(
            value=p.value,
            source=p.source.kind if p.source else "unknown",  # type: ignore[arg-type]
            configuration_id=p.source.configuration_id if p.source else None,
            priority=p.source.priority if p.source else None,
            set_at=p.set_at,
            desired_version=p.desired_version,
            configurations=[
                ProvenanceCandidateOut(
                    configuration_id=c.configuration_id,
                    priority=c.priority,
                    value=c.value,
                    applies=c.applies,
                )
                for c in p.configurations
            ],
        )


class TwinProvenanceOut(Wire):
    device_id: str
    properties: dict[str, PropertyProvenanceOut]


class ConvergenceCountsOut(Wire):
    """Devices by the state of one desired property (or of one configuration's)."""

    pending: int = 0
    converged: int = 0
    drifted: int = 0
    failed: int = 0


class TwinConvergenceOut(Wire):
    """Fleet-wide convergence: per top-level desired property, and per configuration."""

    properties: dict[str, ConvergenceCountsOut]
    configurations: dict[str, ConvergenceCountsOut]


class FleetConfigurationIn(WireRequest):
    """A configuration: ``targetCondition`` (see docs/fleet-configurations.md), the
    ``desiredProperties`` it sets, and its ``priority`` (higher wins on overlapping keys)."""

    target_condition: dict[str, Any]
    desired_properties: dict[str, Any]
    priority: Priority = 0
    id: str | None = None
    rollout: dict[str, Any] | None = None
    """A staged rollout: ``{"stages": [{"percent": 10} | {"count": 5}, ...],
    "advanceWhenConverged": 0.9, "haltWhenDriftedOrFailed": 0.1, "pendingTimeout": 3600}``
    (docs/fleet-configurations.md)."""


class StageMetricsOut(Wire):
    """A stage's devices by convergence; ``timedOut``: of the ``pending`` ones, those
    still pending ``pendingTimeout`` seconds after the stage admitted them (they count
    with the drifted and failed ones against ``haltWhenDriftedOrFailed``)."""

    stage: int
    plan: dict[str, Any]
    admitted: int
    pending: int
    converged: int
    drifted: int
    failed: int = 0
    timed_out: int = 0

    @classmethod
    def of(cls, s: StageMetrics) -> StageMetricsOut:
        return cls(
            stage=s.stage,
            plan=s.plan,
            admitted=s.admitted,
            pending=s.pending,
            converged=s.converged,
            drifted=s.drifted,
            failed=s.failed,
            timed_out=s.timed_out,
        )


class ConfigurationMetricsOut(Wire):
    """``targeted``: devices the condition matches; ``applied``: of them, those that
    reported back every value this configuration wins on; ``pending``/``converged``/
    ``drifted``/``failed``: devices by the worst state of the properties this
    configuration set on them; ``stages``: a staged rollout's stages with their devices."""

    targeted: int
    applied: int
    pending: int = 0
    converged: int = 0
    drifted: int = 0
    failed: int = 0
    stages: list[StageMetricsOut] = []


class RolloutOut(Wire):
    """A staged rollout: its plan, ``state`` (rolling, halted, aborted, completed), the
    current ``stage`` (0-based) and why it halted."""

    plan: dict[str, Any]
    state: str
    stage: int
    reason: str | None
    updated_at: datetime | None


class FleetConfigurationOut(Wire):
    id: str
    target_condition: dict[str, Any]
    desired_properties: dict[str, Any]
    priority: int
    created_at: datetime
    updated_at: datetime
    metrics: ConfigurationMetricsOut
    rollout: RolloutOut | None = None

    @classmethod
    def of(
        cls, c: FleetConfiguration, metrics: ConfigurationMetrics | None
    ) -> FleetConfigurationOut:
        m = metrics or ConfigurationMetrics(0, 0)
        r = c.rollout
        return cls(
            id=c.id,
            target_condition=c.raw_condition,
            desired_properties=c.desired_properties,
            priority=c.priority,
            created_at=c.created_at,
            updated_at=c.updated_at,
            metrics=ConfigurationMetricsOut(
                targeted=m.targeted,
                applied=m.applied,
                pending=m.pending,
                converged=m.converged,
                drifted=m.drifted,
                failed=m.failed,
                stages=[StageMetricsOut.of(s) for s in m.stages],
            ),
            rollout=None
            if r is None
            else RolloutOut(
                plan=r.plan.wire(),
                state=r.state.value,
                stage=r.stage,
                reason=r.reason,
                updated_at=r.updated_at,
            ),
        )


class DryRunDeviceOut(Wire):
    """One device a configuration change would touch: desired properties ``before`` and
    ``after``; ``stage``: the rollout stage that would give it the configuration."""

    device_id: str
    targeted: bool
    stage: int | None
    changed: bool
    before: dict[str, Any]
    after: dict[str, Any]

    @classmethod
    def of(cls, d: DryRunDevice) -> DryRunDeviceOut:
        return cls(
            device_id=bare_device_id(d.device_id),
            targeted=d.targeted,
            stage=d.stage,
            changed=d.changed,
            before=d.before,
            after=d.after,
        )


class FleetConfigurationDryRunOut(Wire):
    """``?dryRun=true``: what the configuration would do; nothing was written."""

    id: str
    targeted: int
    changed: int
    devices: list[DryRunDeviceOut]
    dry_run: Literal[True] = True

    @classmethod
    def of(cls, d: DryRun) -> FleetConfigurationDryRunOut:
        return cls(
            id=d.configuration.id,
            targeted=d.targeted,
            changed=sum(1 for x in d.devices if x.changed),
            devices=[DryRunDeviceOut.of(x) for x in d.devices],
        )


class Health(Wire):
    status: Literal["ok"] = "ok"
    time: datetime | None = None


class CreateWorkspaceRequest(WireRequest):
    id: str
    """A Device ID's character rules: 4-90 of ``0-9 a-z A-Z - _ .``."""


class WorkspaceOut(Wire):
    id: str
    created_at: datetime

    @classmethod
    def of(cls, w: Workspace) -> WorkspaceOut:
        return cls(id=w.id, created_at=w.created_at)
