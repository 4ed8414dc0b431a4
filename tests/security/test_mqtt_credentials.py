"""One live MQTT credential per Registration Token (issue 10, item 9): registering again
replaces the password, the earlier one is refused at CONNECT, and credentials no longer
pile up (10 rows in 60 s for one device retrying register). A device that lost its
password registers again and connects."""

from __future__ import annotations

import httpx
import pytest
from iiot_server.store.schema import mqtt_credentials
from sqlalchemy import Connection, func, select

from iiotsim.platform import Platform

from ..integration.mqtt import Device, provision
from ..server.device_calls import register

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)


def live_credentials(platform: Platform, device_id: str) -> int:
    def count(conn: Connection) -> int:
        query = select(func.count()).where(mqtt_credentials.c.device_id == device_id)
        return int(conn.execute(query).scalar_one())

    services = platform.services
    return platform.runner.call(services.db.read(count))


def connack(platform: Platform, device_id: str, password: str) -> int:
    device = Device(platform, device_id, password)
    try:
        return device.connect()
    finally:
        device.close()


def test_registering_again_replaces_the_password(platform: Platform, http: httpx.Client) -> None:
    reg = provision(platform, "cred-dev01")
    passwords = [reg.password]
    for _ in range(9):
        answer = register(http, reg.rt)
        assert answer.status_code == 200
        passwords.append(answer.json()["mqttPassword"])
    assert len(set(passwords)) == len(passwords)
    assert live_credentials(platform, "cred-dev01") == 1
    for old in (passwords[0], passwords[4], passwords[-2]):
        assert connack(platform, "cred-dev01", old) != 0, "an earlier password still connects"
    assert connack(platform, "cred-dev01", passwords[-1]) == 0


def test_a_device_that_lost_its_password_registers_and_connects(
    platform: Platform, http: httpx.Client
) -> None:
    reg = provision(platform, "cred-dev02")  # its password is "lost"
    fresh = register(http, reg.rt).json()["mqttPassword"]
    assert connack(platform, "cred-dev02", fresh) == 0
    assert connack(platform, "cred-dev02", reg.password) != 0
