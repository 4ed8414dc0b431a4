"""Tables. Times are stored as UTC epoch seconds (float): portable across SQLite and
PostgreSQL, cheap to index and compare; the store converts at its edge.

A change here needs its migration in ``store/migrations/versions/`` (how: that package's
docstring); ``tests/server/test_migrations.py`` fails until the two agree."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

DEVICE_KEY_LENGTH = 181
"""A device key: ``<workspace>:<device>``, 90 + 1 + 90 (``domain/workspaces.py``)."""

# Isolated tenants; ``default`` always exists (revision 0004). A device's workspace is
# part of its key in every ``device_id`` column; tokens, keys and configurations name it.
workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(90), primary_key=True),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    # the workspace a key acts in; PLATFORM_WIDE (every workspace and /workspaces) for keys
    # made before workspaces, the bootstrap admin and keys made under /api/v1/api-keys
    Column("workspace_id", String(90), nullable=False, server_default="*"),
)

provisioning_tokens = Table(
    "provisioning_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("max_registration_token_lifetime", Float),
    Column("registration_token_lifetime_override", String(20), nullable=False),
    Column("allow_infinite_lifetime", Boolean, nullable=False),
    Column("device_id", String(90)),  # a default Device ID, bare: the token has its workspace
    Column("device_id_override", String(40), nullable=False),
    Column("batch_id", String(36), index=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("workspace_id", String(90), nullable=False, server_default="default"),
    # paused (revision 0008): refuses new operations until resumed; NULL: not paused
    Column("paused_at", Float),
    Column("paused_reason", String(500)),
)

provisioning_operations = Table(
    "provisioning_operations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "provisioning_token_id", String(36), ForeignKey("provisioning_tokens.id"), nullable=False
    ),
    Column("verification_code", String(9), nullable=False),
    Column("device_id", String(DEVICE_KEY_LENGTH)),
    Column("attributes", JSON, nullable=False),
    Column("state", String(20), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("approved_at", Float),
    Column("completed_at", Float),
    Column("cancelled_at", Float),
    Column("cancel_reason", String(20)),
    Column("registration_token_lifetime", Float),
    Index("ix_operations_state_expiry", "state", "expires_at"),
    Index("ix_operations_code", "verification_code"),
    Index("ix_operations_device", "device_id"),
    Index("ix_operations_token", "provisioning_token_id"),  # revision 0002
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(DEVICE_KEY_LENGTH), primary_key=True),
    Column("provisioning_token_id", String(36), nullable=False),
    Column("provisioning_operation_id", String(36), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("provisioned_at", Float, nullable=False),
    Column("registered_at", Float),
    Column("connected", Boolean, nullable=False, default=False),
    Column("last_connected_at", Float),
    Column("last_disconnected_at", Float),
    Column("connection_takeovers", Integer, nullable=False, default=0),
    Column("last_takeover_at", Float),
)

# Every connect and disconnect the broker saw, so an architect can fit the fleet's own
# connectivity (``iiotsim.sim.connection_intervals``); the devices row keeps only the last.
connection_events = Table(
    "connection_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(DEVICE_KEY_LENGTH), nullable=False),
    Column("at", Float, nullable=False),
    Column("connected", Boolean, nullable=False),
    Column("takeover", Boolean, nullable=False, default=False),
    Index("ix_connection_events_device_seq", "device_id", "seq"),
)

# The audit trail (issue 15, ``services/audit.py``): who changed what, when, why, in which
# request. Append-only in the database itself: revision 0005 adds triggers refusing UPDATE
# and DELETE (SQLite ``RAISE(ABORT)``, PostgreSQL a trigger function), so no code path, API
# or not, can rewrite history. ``id`` orders the rows (newest first = highest id).
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("workspace_id", String(90), nullable=False),
    Column("actor", String(200), nullable=False),  # system | api_key:<id> | device:<key> | …
    Column("actor_role", String(20)),  # an API key's role
    Column("action", String(64), nullable=False),  # <noun>.<past-tense verb>
    Column("target_kind", String(40), nullable=False),
    Column("target_id", String(200), nullable=False),
    Column("reason", String(500)),
    Column("request_id", String(64)),
    Column("before", String),  # JSON text
    Column("after", String),  # JSON text
    Column("detail", String),  # JSON text
    # Only the two the trail is read by (listing, a target's history): each index is one
    # more page written per audited request. Revision 0009 dropped action, actor and
    # request id; those filters walk the workspace's rows newest first.
    Index("ix_audit_events_workspace_id", "workspace_id", "id"),
    Index("ix_audit_events_target", "workspace_id", "target_id", "id"),
)

registration_tokens = Table(
    "registration_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("device_id", String(DEVICE_KEY_LENGTH), nullable=False, index=True),
    Column("provisioning_token_id", String(36), nullable=False),
    Column("provisioning_operation_id", String(36), nullable=False),
    Column("parent_id", String(36), index=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("issued_at", Float, nullable=False),
    Column("lifetime", Float),  # seconds; NULL = infinite
    Column("expires_at", Float),
    Column("superseded_at", Float),
    Column("revoked_at", Float),
)

mqtt_credentials = Table(
    "mqtt_credentials",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("device_id", String(DEVICE_KEY_LENGTH), nullable=False, index=True),
    Column("registration_token_id", String(36), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("issued_at", Float, nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(DEVICE_KEY_LENGTH), nullable=False),
    Column("stream", String(64), nullable=False),
    Column("message_id", String(128)),
    Column("payload", LargeBinary, nullable=False),
    Column("received_at", Float, nullable=False),
    # A message redelivered with the same id is stored once (NULL ids never collide).
    Index("ux_messages_identity", "device_id", "stream", "message_id", unique=True),
    Index("ix_messages_device_stream_seq", "device_id", "stream", "seq"),
)

twins = Table(
    "twins",
    metadata,
    Column("device_id", String(DEVICE_KEY_LENGTH), primary_key=True),
    Column("desired", JSON, nullable=False),
    Column("desired_version", Integer, nullable=False),
    Column("desired_updated_at", Float),
    Column("reported", JSON, nullable=False),
    Column("reported_version", Integer, nullable=False),
    Column("reported_updated_at", Float),
    Column("tags", JSON, nullable=False),
    Column("tags_version", Integer, nullable=False),
    Column("tags_updated_at", Float),
    # the desired properties fleet configurations last gave this device
    Column("configured", JSON, nullable=False, default=dict),
)

fleet_configurations = Table(
    "fleet_configurations",
    metadata,
    # ``<workspace>:<id>`` like a device key, so each workspace has its own ids
    Column("id", String(DEVICE_KEY_LENGTH), primary_key=True),
    Column("target_condition", JSON, nullable=False),
    Column("desired_properties", JSON, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("workspace_id", String(90), nullable=False, server_default="default"),
    # a staged rollout (revision 0007): its plan, and where it stands; NULL: none
    Column("rollout", JSON),
    Column("rollout_state", String(12)),
    Column("rollout_stage", Integer),
    Column("rollout_reason", String(500)),
    Column("rollout_updated_at", Float),
)

# Per device and top-level desired property (revision 0007): who set it (provenance) and
# whether the device reported it back (convergence). Written with the twin, in its
# transaction; a removed desired property loses its row.
twin_property_states = Table(
    "twin_property_states",
    metadata,
    Column("device_id", String(DEVICE_KEY_LENGTH), primary_key=True),
    Column("property", Text, primary_key=True),
    Column("desired_version", Integer, nullable=False),
    Column("changed_at", Float, nullable=False),
    Column("source", String(20), nullable=False),  # manual | configuration
    Column("configuration_id", String(90)),  # bare: the device key has the workspace
    Column("priority", Integer),
    Column("state", String(12), nullable=False),  # pending | converged | drifted
    Column("state_since", Float, nullable=False),
    Column("converged_at", Float),
    Column("drifted_at", Float),
    Index("ix_twin_property_states_state", "state", "property"),
    Index("ix_twin_property_states_configuration", "configuration_id", "state"),
)

# The devices a staged rollout has given its configuration so far, and in which stage.
rollout_members = Table(
    "rollout_members",
    metadata,
    Column("configuration_id", String(DEVICE_KEY_LENGTH), primary_key=True),  # its key
    Column("device_id", String(DEVICE_KEY_LENGTH), primary_key=True),
    Column("stage", Integer, nullable=False),
    Column("admitted_at", Float, nullable=False),
    Index("ix_rollout_members_device", "device_id"),
)

desired_patches = Table(
    "desired_patches",
    metadata,
    Column("device_id", String(DEVICE_KEY_LENGTH), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("patch", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Messages the platform sends a device (IoT Hub's cloud-to-device messages), kept until
# the device acknowledges them (MQTT PUBACK) or they expire.
cloud_to_device_messages = Table(
    "cloud_to_device_messages",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("device_id", String(DEVICE_KEY_LENGTH), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("properties", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("delivered_at", Float),
    Index("ix_c2d_device_pending", "device_id", "delivered_at", "seq"),
)


# Leak detection (issue 15, ``services/alerts.py``): what the platform flagged, with its
# evidence and the automatic response taken; one open alert per kind and subject (a Device
# ID or a Provisioning Token) counts its repeats instead of piling up rows (revision 0006).
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("at", Float, nullable=False),
    Column("workspace_id", String(90), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("device_id", String(DEVICE_KEY_LENGTH)),
    Column("provisioning_token_id", String(36)),
    Column("evidence", String, nullable=False),  # JSON text
    Column("response", String(40)),
    Column("occurrences", Integer, nullable=False, default=1),
    Column("last_seen_at", Float, nullable=False),
    Column("acknowledged_at", Float),
    Index("ix_alerts_workspace_at", "workspace_id", "at"),
    Index("ix_alerts_subject", "kind", "device_id", "provisioning_token_id"),
)
