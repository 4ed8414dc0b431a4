"""Message storage over both paths: MQTT ingest and HTTP upload of large payloads."""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from iiotsim.errors import PlatformError
from iiotsim.platform import Platform

from .brokers import BOTH_BROKERS
from .mqtt import Device, provision, wait_for
from .test_broker import stored

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture
def device(platform: Platform) -> Iterator[tuple[Device, str, str]]:
    reg = provision(platform, "logger-01")
    mqtt = Device(platform, reg.device_id, reg.password)
    assert mqtt.connect() == 0
    yield mqtt, reg.rt, reg.device_id
    mqtt.close()


def upload(http: httpx.Client, rt: str, body: bytes, **params: str) -> httpx.Response:
    return http.post(
        "/devices/messages",
        content=body,
        params=params,
        headers={"Authorization": f"DeviceToken {rt}"},
    )


def test_large_message_over_http_is_stored_once(
    platform: Platform, http: httpx.Client, device: tuple[Device, str, str]
) -> None:
    _, rt, device_id = device
    big = bytes(range(256)) * 4096  # 1 MiB of binary data, over the MQTT limit
    first = upload(http, rt, big, stream="blobs", messageId="blob-1")
    assert first.status_code == 201
    assert first.json() == {"stored": True}
    again = upload(http, rt, big, stream="blobs", messageId="blob-1")
    assert again.status_code == 200
    assert again.json() == {"stored": False}
    [message] = platform.admin.list_device_messages(device_id, stream="blobs")
    assert message.size == len(big)
    assert message.encoding == "base64"
    import base64

    assert base64.b64decode(message.payload) == big


def test_upload_needs_a_usable_registration_token(
    http: httpx.Client, device: tuple[Device, str, str]
) -> None:
    assert upload(http, "rt_forged", b"x").status_code == 401
    bad_stream = upload(http, device[1], b"x", stream="no/slashes")
    assert bad_stream.status_code == 400
    assert bad_stream.json()["field"] == "stream"
    bad_id = upload(http, device[1], b"x", messageId="spaces are not allowed")
    assert bad_id.status_code == 400
    assert bad_id.json()["field"] == "messageId"


def test_paging_and_stream_filter(platform: Platform, device: tuple[Device, str, str]) -> None:
    mqtt, _, device_id = device
    for i in range(5):
        mqtt.publish(f"devices/{device_id}/messages/{'a' if i % 2 else 'b'}/mid=p{i}", f"{i}")
    assert wait_for(lambda: len(stored(platform, device_id)) == 5)
    page1 = platform.admin.list_device_messages(device_id, limit=2)
    page2 = platform.admin.list_device_messages(device_id, limit=2, after=page1[-1].seq)
    assert [m.payload for m in page1 + page2] == ["0", "1", "2", "3"]
    assert [m.payload for m in platform.admin.list_device_messages(device_id, stream="a")] == [
        "1",
        "3",
    ]
    with pytest.raises(PlatformError) as err:
        platform.admin.list_device_messages("nobody-01")
    assert err.value.status == 404


def test_compressed_and_oversized_mqtt_messages(
    platform: Platform, device: tuple[Device, str, str]
) -> None:
    mqtt, _, device_id = device
    text = "vibration " * 200
    mqtt.publish(
        f"devices/{device_id}/messages/default/mid=z1&ce=zlib", zlib.compress(text.encode())
    )
    too_big = b"x" * (platform.settings.max_mqtt_message_size + 1)
    mqtt.publish(f"devices/{device_id}/messages/default/mid=big", too_big)
    mqtt.publish(f"devices/{device_id}/messages/default/mid=after", b"after")
    assert wait_for(lambda: len(stored(platform, device_id)) == 2)
    assert stored(platform, device_id) == [("default", "z1", text), ("default", "after", "after")]
    assert platform.services.broker.dropped_messages == 1


@contextmanager
def database_locked(platform: Platform) -> Iterator[None]:
    """Hold SQLite's write lock, or on PostgreSQL a lock on the messages table, from another
    connection (the platform's writes wait)."""
    url = platform.settings.database_url
    if url.startswith("postgresql"):
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as locker:
            locker.exec_driver_sql("LOCK TABLE messages IN EXCLUSIVE MODE")  # blocks INSERTs
            yield
            locker.commit()
        engine.dispose()
        return
    conn = sqlite3.connect(platform.data_dir / "iiot.db", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_puback_waits_until_the_message_is_stored(
    platform: Platform, device: tuple[Device, str, str]
) -> None:
    """A QoS 1 PUBACK is sent only once the message is committed: while the database is
    locked no acknowledgement comes; once it is free, the acknowledged message is there."""
    mqtt, _, device_id = device
    with database_locked(platform):
        info = mqtt.client.publish(f"devices/{device_id}/messages/acked/mid=a1", b"r", qos=1)
        info.wait_for_publish(1.0)
        assert not info.is_published(), "PUBACK sent before the message was stored"
    info.wait_for_publish(10)
    assert info.is_published()
    [row] = platform.admin.list_device_messages(device_id, stream="acked")
    assert row.message_id == "a1"


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_burst_then_disconnect_loses_nothing(platform: Platform) -> None:
    """amqtt 0.12.1 acknowledges and then drops what is still queued when a client
    disconnects; every acknowledged message must be stored, in order."""
    reg = provision(platform, "burst-01")
    mqtt = Device(platform, reg.device_id, reg.password)
    mqtt.client.max_inflight_messages_set(100)
    assert mqtt.connect() == 0
    infos = [
        mqtt.client.publish(f"devices/burst-01/messages/burst/mid=b{i:04d}", b"x" * 32, qos=1)
        for i in range(500)
    ]
    for info in infos:
        info.wait_for_publish(10)
    mqtt.close()  # DISCONNECT straight after the last PUBACK
    expected = [f"b{i:04d}" for i in range(500)]

    def stored_ids() -> list[str | None]:
        rows = platform.admin.list_device_messages("burst-01", stream="burst", limit=1000)
        return [m.message_id for m in rows]

    # on mosquitto the PUBACK is mosquitto's, before the platform's commit: wait for it
    assert wait_for(lambda: len(stored_ids()) >= 500)
    assert stored_ids() == expected


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_twin_reports_sent_just_before_disconnect_are_applied(
    platform: Platform, device: tuple[Device, str, str]
) -> None:
    """Non-telemetry topics take amqtt's own delivery loop: what is still queued there at
    DISCONNECT is delivered, not dropped."""
    mqtt, _, device_id = device
    infos = [
        mqtt.client.publish(f"devices/{device_id}/twin/reported", f'{{"n{i}": {i}}}', qos=1)
        for i in range(50)
    ]
    for info in infos:
        info.wait_for_publish(10)
    mqtt.close()
    assert wait_for(lambda: len(platform.admin.get_twin(device_id).reported.properties) == 50)
