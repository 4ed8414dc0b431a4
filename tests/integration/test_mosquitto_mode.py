"""Mosquitto as the device-facing broker (issue 14): what is particular to it. The
behaviour shared with the embedded broker is tested on both in test_broker.py,
test_twin.py, test_mosquitto_clients.py and tests/device/."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from iiot_server.broker.mosquitto_process import free_port

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .brokers import needs_mosquitto
from .mqtt import WAIT, Device, provision, wait_for
from .test_broker import stored

pytestmark = needs_mosquitto


@pytest.fixture
def mqtt_broker() -> str:
    return "mosquitto"


def test_platform_files_and_credentials(platform: Platform) -> None:
    directory = platform.data_dir / "mosquitto"
    credentials = directory / "platform-credentials.json"
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert (directory / "dynamic-security.json").stat().st_mode & 0o777 == 0o600
    config = (directory / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in config
    assert "persistence true" in config
    # the platform's own user is no device: a device may not take its name
    assert json.loads(credentials.read_text())["username"] == "iiotsim:platform"


def test_acl_confines_a_device_to_its_own_topics(platform: Platform, devices: list[Device]) -> None:
    a, b = provision(platform, "dev-aaaa"), provision(platform, "dev-bbbb")
    device_a = Device(platform, a.device_id, a.password)
    devices.append(device_a)
    assert device_a.connect() == 0
    assert device_a.subscribe("devices/dev-bbbb/twin/desired") == [0x80]
    assert device_a.subscribe("devices/dev-bbbb/twin/#") == [0x80]
    assert device_a.subscribe("devices/+/twin/desired") == [0x80]
    assert device_a.subscribe("#") == [0x80]
    assert device_a.subscribe("devices/dev-aaaa/twin/+") == [1]
    device_a.publish("devices/dev-aaaa/messages/default/mid=own", b"y")
    assert wait_for(lambda: len(stored(platform, "dev-aaaa")) == 1)
    # mosquitto 2.0 closes an MQTT 3.1.1 connection whose PUBLISH its ACL denies (the
    # embedded broker drops the message and keeps the connection)
    device_a.client.publish("devices/dev-bbbb/messages/default/mid=forged", b"x", qos=1)
    assert device_a.disconnected.wait(WAIT)
    forger = Device(platform, a.device_id, a.password)
    devices.append(forger)
    assert forger.connect() == 0
    forger.client.publish("devices/dev-aaaa/twin/desired", b"{}", qos=1)
    assert forger.disconnected.wait(WAIT)
    time.sleep(0.3)  # what a leak would need to land (real network time, not clock time)
    assert stored(platform, "dev-bbbb") == []
    assert [m.message_id for m in platform.admin.list_device_messages("dev-aaaa")] == ["own"]
    del b


def test_a_will_on_another_devices_topic_is_not_delivered(
    platform: Platform, devices: list[Device]
) -> None:
    a, b = provision(platform, "will-aaaa"), provision(platform, "will-bbbb")
    for topic in ("devices/will-bbbb/messages/default/mid=forged", "devices/will-aaaa/messages/w"):
        device = Device(platform, a.device_id, a.password)
        devices.append(device)
        device.client.will_set(topic, b"died", qos=1)
        assert device.connect() == 0
        device.client.socket().close()  # dies without DISCONNECT: mosquitto sends the Will
        device.client.loop_stop()
    # the Will on its own telemetry topic is stored; the one on b's topic never
    assert wait_for(lambda: len(stored(platform, "will-aaaa")) == 1)
    assert stored(platform, "will-aaaa") == [("w", None, "died")]
    assert stored(platform, "will-bbbb") == []
    del b


def test_revocation_kicks_within_a_second_and_the_password_is_refused(
    platform: Platform, devices: list[Device]
) -> None:
    reg = provision(platform, "valve-0001")
    device = Device(platform, reg.device_id, reg.password)
    devices.append(device)
    assert device.connect() == 0
    started = time.monotonic()
    platform.admin.revoke_device("valve-0001")
    assert device.disconnected.wait(1.0), "not kicked within 1 s of the revocation"
    print(f"revoke -> kicked by mosquitto: {1000 * (time.monotonic() - started):.0f} ms")
    again = Device(platform, reg.device_id, reg.password)
    devices.append(again)
    assert again.connect() != 0


def test_a_new_registration_replaces_the_password_and_kicks_the_old_session(
    platform: Platform, devices: list[Device]
) -> None:
    reg = provision(platform, "valve-0004")
    device = Device(platform, reg.device_id, reg.password)
    devices.append(device)
    assert device.connect() == 0
    with httpx.Client(base_url=platform.http_url) as http:
        answer = http.put("/devices/register", headers={"Authorization": f"DeviceToken {reg.rt}"})
    new_password = answer.json()["mqttPassword"]
    assert device.disconnected.wait(1.0)
    old = Device(platform, reg.device_id, reg.password)
    new = Device(platform, reg.device_id, new_password)
    devices += [old, new]
    assert old.connect() != 0
    assert new.connect() == 0


def test_expiry_on_the_platforms_clock_survives_a_restart(
    tmp_path: Path, clock: ManualClock, devices: list[Device]
) -> None:
    """The dynamic-security file keeps the device's client across a restart; its end is
    armed again from the database."""
    data = tmp_path / "data"
    port = free_port("127.0.0.1")
    with Platform(data, clock=clock, broker="mosquitto", mqtt_port=port) as first:
        reg = provision(first, "meter-0002", max_registration_token_lifetime=3600)
    with Platform(data, clock=clock, broker="mosquitto", mqtt_port=port) as second:
        device = Device(second, reg.device_id, reg.password)
        devices.append(device)
        assert device.connect() == 0
        clock.advance(3600)
        assert device.disconnected.wait(WAIT)
        again = Device(second, reg.device_id, reg.password)
        devices.append(again)
        assert again.connect() != 0


def _publisher(
    host: str, port: int, device_id: str, password: str, count: int
) -> tuple[mqtt.Client, dict[int, str], set[int], threading.Event]:
    """A device publishing ``count`` (< 65,536: packet ids stay unique) QoS 1 messages as
    fast as it may; the set fills with the packet ids mosquitto acknowledged (PUBACK),
    the dict maps them to message ids."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
    client.username_pw_set(device_id, password)
    client.max_inflight_messages_set(100)
    acked: set[int] = set()
    by_mid: dict[int, str] = {}
    done = threading.Event()

    def on_publish(_c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        acked.add(mid)
        if len(acked) == count:
            done.set()

    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    for i in range(count):
        info = client.publish(f"devices/{device_id}/messages/load/mid=m{i}", b"x", qos=1)
        by_mid[info.mid] = f"m{i}"
    return client, by_mid, acked, done


def _stored_ids(platform: Platform, device_id: str) -> set[str]:
    ids: set[str] = set()
    after = 0
    while page := platform.admin.list_device_messages(device_id, after=after, limit=1000):
        ids |= {m.message_id or "" for m in page}
        after = page[-1].seq
    return ids


def test_restart_loses_no_message_acknowledged_to_a_device(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A device's PUBACK is mosquitto's; the platform acknowledges to mosquitto only after
    its commit, on a persistent session that mosquitto saves at its exit. Stopped right
    after a burst that mosquitto acknowledged, while the platform cannot commit (SQLite's
    write lock held by the test), the restarted platform stores all of it, once each."""
    data = tmp_path / "data"
    port = free_port("127.0.0.1")
    count = 3000
    with Platform(data, clock=clock, broker="mosquitto", mqtt_port=port) as first:
        regs = [provision(first, f"load-{n:04d}") for n in range(2)]
        lock = sqlite3.connect(data / "iiot.db", isolation_level=None, check_same_thread=False)
        lock.execute("BEGIN IMMEDIATE")
        publishers = [_publisher("127.0.0.1", port, r.device_id, r.password, count) for r in regs]
        for _, _, _, done in publishers:
            assert done.wait(60), "mosquitto did not acknowledge the burst"
        # read through the lock's own connection: the platform's database work is stuck
        (at_stop,) = lock.execute("SELECT count(*) FROM messages WHERE stream = 'load'").fetchone()
        # the stop waits for the ingest's blocked write: let it through after a while
        threading.Timer(2.0, lambda: (lock.execute("COMMIT"), lock.close())).start()
    assert at_stop < 2 * count  # the platform stopped with acknowledged messages unstored
    for client, _, _, _ in publishers:
        client.loop_stop()
    print(f"stored when the platform stopped: {at_stop} of {2 * count} acknowledged")
    with Platform(data, clock=clock, broker="mosquitto", mqtt_port=port) as second:
        for reg, (_, by_mid, acked, _) in zip(regs, publishers, strict=True):
            ids = {by_mid[mid] for mid in acked}
            assert wait_for(lambda r=reg, i=ids: i <= _stored_ids(second, r.device_id), 60)
            assert len(_stored_ids(second, reg.device_id)) == count  # once each


def test_mosquitto_exits_when_the_platform_process_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from iiotsim.platform import Platform\n"
        f"p = Platform({str(tmp_path / 'data')!r}, broker='mosquitto').start()\n"
        "print(p.services.broker.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        os.kill(pid, 0)  # running
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # a zombie of init's counts as gone
            status = Path(f"/proc/{pid}/status")
            return status.exists() and "State:\tZ" in status.read_text()

        assert wait_for(gone), "mosquitto outlived the platform process"
    finally:
        child.kill()
        child.wait()


def _crash_mosquitto(platform: Platform, device: Device) -> None:
    """SIGKILL the platform's mosquitto (an OOM kill, a crash: not the platform's doing);
    return once it was started again and ``device`` (its own paho retry, 1-2 s) is back."""
    broker = platform.services.broker
    dead = broker.process.pid
    device.connected.clear()
    os.kill(dead, signal.SIGKILL)
    assert device.disconnected.wait(WAIT)
    assert wait_for(lambda: broker.process.pid not in (None, dead), 30)
    assert device.connected.wait(30), "the device did not get back in"


def test_what_a_device_sends_before_the_ingest_is_back_after_a_crash_is_stored(
    platform: Platform, devices: list[Device]
) -> None:
    """mosquitto killed seconds after the platform started (inside its 10 s autosave):
    the ingest session's subscriptions were saved when it subscribed, so what a device
    sends after the restart, before the ingest is back, is queued for the session and
    stored. It was dropped: the restarted mosquitto knew no subscriber for it, and the
    device had its PUBACK."""
    reg = provision(platform, "crash-0002")
    device = Device(platform, reg.device_id, reg.password)
    devices.append(device)
    assert device.connect() == 0
    broker = platform.services.broker
    subscriber = broker._subscriber
    platform.runner.call(subscriber.stop())  # the ingest away (its own retry, 1 s)
    _crash_mosquitto(platform, device)
    device.publish(f"devices/{reg.device_id}/messages/probe/mid=away-1", b"away", qos=1)
    process = broker.process
    platform.runner.call(subscriber.start(process.internal_host, process.internal_port))
    assert wait_for(lambda: "away-1" in _stored_ids(platform, reg.device_id))


def test_a_mosquitto_that_dies_is_started_again_and_everything_works_after_it(
    platform: Platform, devices: list[Device]
) -> None:
    reg = provision(platform, "crash-0001")
    device = Device(platform, reg.device_id, reg.password)
    devices.append(device)
    assert device.connect() == 0
    assert wait_for(lambda: platform.admin.get_device(reg.device_id).connected)
    broker = platform.services.broker
    _crash_mosquitto(platform, device)
    assert broker.restarts == 1
    # the end of its first connection is recorded, then the new one
    assert wait_for(
        lambda: (
            [e.connected for e in platform.admin.list_device_connections(reg.device_id)]
            == [True, False, True]
        )
    )
    # ingest runs again (the platform's persistent session reconnected)
    device.publish(f"devices/{reg.device_id}/messages/probe/mid=after-1", b"after", qos=1)
    assert wait_for(lambda: "after-1" in _stored_ids(platform, reg.device_id))
    # control runs again (dynamic security over the admin link): a revocation still kicks
    device.disconnected.clear()
    platform.admin.revoke_device(reg.device_id)
    assert device.disconnected.wait(WAIT)
    again = Device(platform, reg.device_id, reg.password)
    devices.append(again)
    assert again.connect() != 0


def test_serve_with_broker_mosquitto_runs_and_stops_it(tmp_path: Path) -> None:
    from ..server.test_standalone import start_until_ready

    port = free_port("127.0.0.1")
    argv = [sys.executable, "-m", "iiot_server", "--port", str(free_port("127.0.0.1")),
            "--mqtt-port", str(port), "--data-dir", str(tmp_path), "--broker", "mosquitto"]  # fmt: skip
    proc, output = start_until_ready(argv, dict(os.environ))
    try:
        assert f"mosquitto on 127.0.0.1:{port}" in output, output
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anonymous-probe")
        refused = threading.Event()
        client.on_connect = lambda _c, _u, _f, rc, _p: rc.is_failure and refused.set()
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert refused.wait(WAIT)  # mosquitto answers, and refuses anonymous clients
        client.loop_stop()
        pid = int((tmp_path / "mosquitto" / "mosquitto.pid").read_text())
    finally:
        proc.terminate()
        proc.wait(30)
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists()
                    or "State:\tZ" in Path(f"/proc/{pid}/status").read_text())  # fmt: skip


def test_tls_serves_native_devices_and_refuses_the_iot_hub_dialect(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mosquitto would route ``$iothub/twin/res/…`` to every subscriber: the IoT Hub
    dialect is not served in this mode, a SAS CONNECT is refused (nothing can leak)."""
    from .test_iot_hub_dialect import hub_credentials

    with Platform(tmp_path / "d", clock=clock, broker="mosquitto", tls=True, mqtt_port=0) as p:
        assert p.ca_cert_path is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(p.ca_cert_path))  # for httpx
        reg = provision(p, "tls-0001")
        native = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=reg.device_id)
        native.username_pw_set(reg.device_id, reg.password)
        native.tls_set(ca_certs=str(p.ca_cert_path))
        native.connect(p.mqtt_host, p.mqtt_port)
        native.loop_start()
        info = native.publish("devices/tls-0001/messages/default/mid=t1", b"over tls", qos=1)
        info.wait_for_publish(WAIT)
        native.disconnect()
        native.loop_stop()
        assert wait_for(lambda: stored(p, "tls-0001") == [("default", "t1", "over tls")])
        creds = hub_credentials(p, reg)
        hub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=creds.client_id)
        hub.username_pw_set(creds.username, creds.password)
        hub.tls_set(ca_certs=str(p.ca_cert_path))
        answer: list[int] = []
        hub.on_connect = lambda _c, _u, _f, rc, _p: answer.append(rc.value)
        hub.connect(p.mqtt_host, p.mqtt_port)
        hub.loop_start()
        assert wait_for(lambda: bool(answer))
        hub.loop_stop()
        assert answer[0] != 0


def test_register_with_mosquitto_gone_is_a_503_not_a_500(platform: Platform) -> None:
    reg = provision(platform, "gone-0001")
    process = platform.services.broker.process
    process.stop()  # mosquitto is gone (the platform is not) ...
    # ... and stays gone: its port taken, so the platform's restarts fail (0.5 s, 1 s, ...)
    with socket.create_server((process.host, process.port)) as squatter:
        with httpx.Client(base_url=platform.http_url, timeout=60) as http:
            answer = http.put(
                "/devices/register", headers={"Authorization": f"DeviceToken {reg.rt}"}
            )
        squatter.close()
    assert answer.status_code == 503, answer.text
    assert answer.json()["type"] == "/problems/serviceUnavailable"


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto-clients missing")
def test_mosquitto_sub_as_a_device_receives_its_desired_patch(platform: Platform) -> None:
    """A foreign client (Debian's mosquitto_sub) with device credentials gets the desired
    patch the platform publishes through mosquitto; one on another device's twin is refused."""
    reg = provision(platform, "mosq-0004")
    argv = ["mosquitto_sub", "-h", platform.mqtt_host, "-p", str(platform.mqtt_port),
            "-V", "mqttv311", "-i", reg.device_id, "-u", reg.device_id, "-P", reg.password,
            "-q", "1", "-C", "1", "-W", "20"]  # fmt: skip
    sub = subprocess.Popen(
        [*argv, "-t", "devices/mosq-0004/twin/desired"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_for(lambda: platform.admin.get_device("mosq-0004").connected)
    time.sleep(0.5)  # its SUBSCRIBE follows the CONNECT (real network time)
    platform.admin.update_desired_properties("mosq-0004", {"setpoint": 4})
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err
    assert json.loads(out) == {"setpoint": 4, "$version": 1}
    other = subprocess.run(
        [*argv[:-4], "-t", "devices/mosq-9999/twin/desired", "-C", "1", "-W", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert other.stdout == ""
    assert "subscription requests were denied" in other.stderr
