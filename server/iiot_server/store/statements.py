"""Prebuilt statements for the hot paths (provisioning flow, register, refresh).

Building a SQLAlchemy statement and its cache key costs more than SQLite takes to run it
(profiled: most of the database thread's time went to ``values()``/``where()`` and cache
keys). A statement built once with bind parameters memoizes its cache key, so each call
only binds values. Bind names start with ``b_`` so they never clash with column names in
an UPDATE's SET clause.
"""

from __future__ import annotations

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update

from .schema import (
    connection_events,
    devices,
    mqtt_credentials,
    provisioning_operations,
    provisioning_tokens,
    twins,
)
from .schema import registration_tokens as rt

_op = provisioning_operations.c

OPEN_OPERATION = and_(_op.state.in_(("pending", "approved")), _op.expires_at > bindparam("b_now"))

INSERT_OPERATION = insert(provisioning_operations)
UPDATE_OPERATION = update(provisioning_operations).where(_op.id == bindparam("b_id"))
SELECT_OPERATION = select(provisioning_operations).where(_op.id == bindparam("b_id"))
SELECT_OPERATION_OF_TOKEN = SELECT_OPERATION.where(
    _op.provisioning_token_id == bindparam("b_token_id")
)
LOCK_OPERATION = SELECT_OPERATION.with_for_update()
LOCK_OPERATIONS_OF_DEVICE_ID = (
    select(provisioning_operations)
    .where(or_(_op.device_id == bindparam("b_device_id"), _op.id == bindparam("b_id")))
    .order_by(_op.id)
    .with_for_update()
)
"""An approval's first step: the operation and every other of its Device ID, locked in id
order, so two approvals for one Device ID queue instead of each holding its own operation
and waiting for the other's (PostgreSQL aborted one with a deadlock: HTTP 500). The rows
are what the approval decides on, so it reads none of them again."""
LOCK_OPERATION_OF_TOKEN = SELECT_OPERATION_OF_TOKEN.with_for_update()
"""Approve, cancel and complete read the operation, decide and write: simultaneous ones
queue on its row (PostgreSQL; SQLite runs one transaction at a time anyway)."""
OPEN_CODE_CLASH = select(_op.id).where(_op.verification_code == bindparam("b_code"), OPEN_OPERATION)
CLOSE_DEVICE_OPERATIONS = (
    update(provisioning_operations)
    .where(
        _op.device_id == bindparam("b_device_id"),
        _op.state.in_(bindparam("b_states", expanding=True)),
        _op.expires_at > bindparam("b_now"),
    )
    .values(state="cancelled", cancelled_at=bindparam("b_now"), cancel_reason=bindparam("b_reason"))
)
"""Revoking or deleting a device: ``operations.CLOSED_BY_DEVICE_END`` → cancelled."""
OPEN_OPERATIONS_OF_TOKEN = select(func.count(), func.min(_op.expires_at)).where(
    _op.provisioning_token_id == bindparam("b_token_id"), OPEN_OPERATION
)
OPEN_OPERATIONS_OF_DEVICE_ID = select(func.count(), func.min(_op.expires_at)).where(
    _op.device_id == bindparam("b_device_id"), OPEN_OPERATION
)
"""How many open operations, and the first expiry among them (the open-operation limits)."""
COMPLETE_OPERATION = UPDATE_OPERATION.values(
    state=bindparam("b_state"), completed_at=bindparam("b_now")
)

SELECT_PROVISIONING_TOKEN = select(provisioning_tokens).where(
    provisioning_tokens.c.id == bindparam("b_id")
)

INSERT_REGISTRATION_TOKEN = insert(rt)
FIND_REGISTRATION_TOKEN = select(rt).where(rt.c.secret_hash == bindparam("b_hash"))
TOKEN_OF_MQTT_PASSWORD = (
    select(rt)
    .join(mqtt_credentials, mqtt_credentials.c.registration_token_id == rt.c.id)
    .where(mqtt_credentials.c.secret_hash == bindparam("b_hash"))
)
"""Every MQTT CONNECT's credential check."""
LOCK_REGISTRATION_TOKEN = FIND_REGISTRATION_TOKEN.with_for_update()
"""A refresh reads the token, decides (first refresh or retry) and writes: simultaneous
refreshes of one token queue on its row (PostgreSQL; SQLite runs one at a time anyway)."""
SUPERSEDE_REGISTRATION_TOKEN = (
    update(rt).where(rt.c.id == bindparam("b_id")).values(superseded_at=bindparam("b_now"))
)
REVOKE_REGISTRATION_TOKEN = (
    update(rt)
    .where(rt.c.id == bindparam("b_id"), rt.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)
REVOKE_CHILD_TOKENS = (
    update(rt)
    .where(rt.c.parent_id == bindparam("b_id"), rt.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)
REVOKE_DEVICE_TOKENS = (
    update(rt)
    .where(rt.c.device_id == bindparam("b_device_id"), rt.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)

INSERT_MQTT_CREDENTIAL = insert(mqtt_credentials)
DELETE_MQTT_CREDENTIALS_OF_TOKEN = delete(mqtt_credentials).where(
    mqtt_credentials.c.registration_token_id == bindparam("b_token_id")
)

DEVICE_EXISTS = select(devices.c.device_id).where(devices.c.device_id == bindparam("b_device_id"))
INSERT_DEVICE = insert(devices)
UPDATE_DEVICE = update(devices).where(devices.c.device_id == bindparam("b_device_id"))
DEVICE_REGISTERED = UPDATE_DEVICE.values(registered_at=bindparam("b_now"))


_dev = devices.c
_connected_device = update(devices).where(_dev.device_id == bindparam("b_device_id"))
DEVICE_CONNECTED = _connected_device.values(connected=True, last_connected_at=bindparam("b_at"))
DEVICE_TAKEN_OVER = _connected_device.values(
    connected=True,
    last_connected_at=bindparam("b_at"),
    connection_takeovers=_dev.connection_takeovers + 1,
    last_takeover_at=bindparam("b_at"),
)
DEVICE_DISCONNECTED = _connected_device.values(
    connected=False, last_disconnected_at=bindparam("b_at")
)
INSERT_CONNECTION_EVENT = insert(connection_events).values(
    device_id=bindparam("b_device_id"),
    at=bindparam("b_at"),
    connected=bindparam("b_connected"),
    takeover=bindparam("b_takeover"),
)
"""Every MQTT CONNECT and disconnect writes one of the three updates and the event (a
hybrid run of 1,000 devices does ~10 a simulated minute, ~14,000 more at each refresh
wave): built per call they were ~11 % of the platform's CPU there."""

SELECT_TWIN = select(twins).where(twins.c.device_id == bindparam("b_device_id"))
LOCK_TWIN = SELECT_TWIN.with_for_update()
"""Every MQTT CONNECT's twin request reads the twin (and, for a device without one, that
the device exists) twice: built per call, these and the credential check cost ~0.5 ms of
the platform's CPU per reconnect (~5 a step in a 1,000-device hybrid run)."""
