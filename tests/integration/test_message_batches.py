"""A batch of messages is stored in one transaction and counts only what is new, on both
databases (PostgreSQL sends it as multi-row INSERTs with RETURNING since session 15, one
statement per message before; SQLite as one executemany)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from iiot_server.services.messages import IncomingMessage

from iiotsim.platform import Platform

from .mqtt import WAIT, provision

pytestmark = pytest.mark.both_databases

AT = datetime(2026, 1, 1, tzinfo=UTC)


def store_many(platform: Platform, batch: list[IncomingMessage]) -> int:
    loop = platform.runner.loop
    assert loop is not None
    call = platform.services.messages.store_many(batch)
    return asyncio.run_coroutine_threadsafe(call, loop).result(WAIT)


def message(device_id: str, message_id: str | None, payload: bytes = b"p") -> IncomingMessage:
    return IncomingMessage(device_id, "s", payload, message_id, AT)


def test_a_batch_counts_and_stores_only_new_messages_once(platform: Platform) -> None:
    a, b = provision(platform, "batch-a").device_id, provision(platform, "batch-b").device_id
    first = [message(a, f"m{i}") for i in range(1500)]  # more than one statement's 1,000
    assert store_many(platform, first) == 1500
    second = [
        message(a, "m7", b"again"),  # already stored
        message(b, "m7"),  # the same id from another device: its own
        message(b, "n1"),
        message(b, "n1", b"twice in one batch"),
        message(b, None),  # no id: never a duplicate
        message(b, None),
    ]
    assert store_many(platform, second) == 4
    stored_a = platform.admin.list_device_messages(a, limit=2000)
    assert [m.message_id for m in stored_a] == [f"m{i}" for i in range(1500)]
    assert [m.payload for m in stored_a if m.message_id == "m7"] == ["p"]  # first kept
    stored_b = platform.admin.list_device_messages(b)
    assert [(m.message_id, m.payload) for m in stored_b] == [
        ("m7", "p"),
        ("n1", "p"),
        (None, "p"),
        (None, "p"),
    ]
    assert store_many(platform, []) == 0
