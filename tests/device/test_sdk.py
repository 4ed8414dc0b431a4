"""The device SDK against the real embedded platform (HTTP API + MQTT broker), with the
platform and the devices sharing one ManualClock."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from iiot_device import (
    Backoff,
    DatabaseInUse,
    DesiredProperties,
    DeviceClient,
    ProvisioningOperationCancelled,
    ProvisioningTokenRefused,
    Status,
)

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform
from iiotsim.twin import ProxyHub

from ..integration.brokers import BOTH_BROKERS
from ..integration.mqtt import wait_for
from .sdk import Approver, run_clock_until, start_device


def stored_ids(platform: Platform, device_id: str, stream: str = "default") -> list[str | None]:
    """Every stored message id of the device, oldest first (all pages: a device killed
    mid-stream on an idle machine had sent 11,710 messages, past one 10,000-row page)."""
    ids: list[str | None] = []
    after = 0
    while page := platform.admin.list_device_messages(
        device_id, stream=stream, after=after, limit=10_000
    ):
        ids += [m.message_id for m in page]
        after = page[-1].seq
    return ids


@pytest.fixture
def pt(platform: Platform) -> str:
    return platform.admin.create_provisioning_token(
        "sdk", max_registration_token_lifetime=7200
    ).provisioning_token


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_first_boot_provisions_connects_and_delivers(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    approver = Approver(platform)
    with start_device(
        platform,
        clock,
        pt,
        tmp_path / "d.db",
        approver,
        device_id="sdk-0001",
        attributes={"site": "hall-3"},
    ) as device:
        assert device.device_id == "sdk-0001"
        [op] = approver.shown
        assert len(op.verification_code) == 9 and op.verification_code[4] == "-"
        assert platform.admin.get_operation(op.id).state == "completed"
        # the real expiry: issue time + the full lifetime (not a pre-halved one)
        assert device.registration_token_expires_at == clock.now() + timedelta(seconds=7200)
        for i in range(20):
            device.send_message(f"reading {i}".encode(), message_id=f"m{i:02d}")
        assert device.wait_sent(20)
        assert device.status is Status.CONNECTED
        assert device.pending_messages_count == 0
    assert stored_ids(platform, "sdk-0001") == [f"m{i:02d}" for i in range(20)]


def test_restart_reuses_the_registration_token(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    with start_device(platform, clock, pt, tmp_path / "d.db", device_id="sdk-0002") as device:
        device.send_message(b"before restart")
        assert device.wait_sent(20)
    never = Approver(platform, approve=False)
    with start_device(platform, clock, pt, tmp_path / "d.db", never) as again:
        assert never.shown == []  # no new operation
        assert again.device_id == "sdk-0002"
        again.send_message(b"after restart")
        assert again.wait_sent(20)
    assert len(platform.admin.list_operations()) == 1
    assert len(stored_ids(platform, "sdk-0002")) == 2


def test_pending_operation_survives_a_restart(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    class PowerCut(BaseException):
        pass

    shown: list[str] = []

    def cut(op: object) -> None:
        shown.append(op.verification_code)  # type: ignore[attr-defined]
        raise PowerCut

    with pytest.raises(PowerCut):
        DeviceClient.start(
            pt,
            tmp_path / "d.db",
            server_url=platform.http_url,
            clock=clock,
            device_id="sdk-0003",
            on_provisioning_operation=cut,
        )
    approver = Approver(platform)
    with start_device(platform, clock, pt, tmp_path / "d.db", approver, device_id="sdk-0003"):
        pass
    assert [op.verification_code for op in approver.shown] == shown  # the same code
    assert len(platform.admin.list_operations()) == 1


def test_cancelled_operation_is_a_clear_error(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    def cancel(op: object) -> None:
        platform.admin.cancel_operation(op.verification_code)  # type: ignore[attr-defined]

    with pytest.raises(ProvisioningOperationCancelled, match="cancelled"):
        DeviceClient.start(
            pt,
            tmp_path / "d.db",
            server_url=platform.http_url,
            clock=clock,
            device_id="sdk-0004",
            on_provisioning_operation=cancel,
        )


def test_refused_provisioning_token_is_a_clear_error(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    with pytest.raises(ProvisioningTokenRefused, match="Provisioning Token"):
        DeviceClient.start(
            "pt_forged", tmp_path / "d.db", server_url=platform.http_url, clock=clock
        )


def test_a_second_owner_of_the_database_is_refused(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    with start_device(platform, clock, pt, tmp_path / "d.db", device_id="sdk-0005"):
        with pytest.raises(DatabaseInUse, match="in use"):
            DeviceClient.start(pt, tmp_path / "d.db", server_url=platform.http_url, clock=clock)
        script = textwrap.dedent(f"""
            from iiot_device.store import LocalStore
            LocalStore({str(tmp_path / "d.db")!r})
        """)
        other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert other.returncode == 1 and "DatabaseInUse" in other.stderr


def test_messages_sent_while_the_platform_is_down_arrive_in_order(
    clock: ManualClock, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = Platform(data_dir=data, clock=clock).start()
    ports = {"http_port": first.runner.port, "mqtt_port": first.mqtt_port}
    pt = first.admin.create_provisioning_token("sdk").provisioning_token
    device = start_device(first, clock, pt, tmp_path / "d.db", device_id="sdk-0006")
    try:
        device.send_message(b"online", message_id="m000")
        assert device.wait_sent(20)
        first.stop()
        assert run_clock_until(clock, lambda: device.status is not Status.CONNECTED)
        for i in range(1, 101):
            device.send_message(f"offline {i}".encode(), message_id=f"m{i:03d}")
        assert device.pending_messages_count == 100
        with Platform(data_dir=data, clock=clock, **ports) as second:
            assert run_clock_until(clock, lambda: device.pending_messages_count == 0, step=1.0)
            assert stored_ids(second, "sdk-0006") == [f"m{i:03d}" for i in range(101)]
    finally:
        device.close()
        first.stop()


def test_power_loss_while_sending_loses_no_returned_message(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    """A device process killed with SIGKILL mid-stream: every message whose
    ``send_message`` returned is stored by the platform once, after the restart."""
    pt = platform.admin.create_provisioning_token(
        "forever", allow_infinite_lifetime=True
    ).provisioning_token
    db = tmp_path / "d.db"
    with start_device(platform, clock, pt, db, device_id="sdk-0007") as device:
        assert device.registration_token_expires_at is None
    script = textwrap.dedent(f"""
        from iiot_device import DeviceClient
        client = DeviceClient.start({pt!r}, {str(db)!r}, server_url={platform.http_url!r})
        for i in range(1_000_000):
            client.send_message(b"x" * 100, message_id=f"k{{i:07d}}")
            print(i, flush=True)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 3000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    for line in proc.stdout:  # what it printed before dying was returned
        last = int(line)
    with start_device(platform, clock, pt, db) as restarted:
        assert restarted.wait_sent(60)
    got = stored_ids(platform, "sdk-0007")
    expected = [f"k{i:07d}" for i in range(last + 1)]
    assert got[: last + 1] == expected  # in order, each once
    assert len(got) == len(set(got))


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_refresh_at_half_lifetime_and_reprovisioning_after_revocation(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    approver = Approver(platform)
    with start_device(
        platform, clock, pt, tmp_path / "d.db", approver, device_id="sdk-0008"
    ) as device:
        assert wait_for(lambda: device.status is Status.CONNECTED)
        first_expiry = device.registration_token_expires_at
        assert first_expiry is not None
        clock.advance(3599)  # just before half of 7200 s: no refresh yet
        device.send_message(b"a")
        assert device.wait_sent(20)
        assert device.registration_token_expires_at == first_expiry
        clock.advance(2)  # half lifetime passed
        assert wait_for(lambda: device.registration_token_expires_at != first_expiry)
        assert device.registration_token_expires_at == clock.now() + timedelta(seconds=7200)
        assert run_clock_until(clock, lambda: device.status is Status.CONNECTED)
        device.send_message(b"after refresh")
        assert device.wait_sent(20)
        assert len(approver.shown) == 1

        platform.admin.revoke_device("sdk-0008")
        assert run_clock_until(clock, lambda: len(approver.shown) == 2)
        assert run_clock_until(clock, lambda: device.status is Status.CONNECTED)
        device.send_message(b"after re-provisioning")
        assert device.wait_sent(20)
    # on mosquitto the PUBACK comes before the platform's commit: wait for the store
    assert wait_for(lambda: len(stored_ids(platform, "sdk-0008")) == 3)


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_twin_both_ways(platform: Platform, clock: ManualClock, pt: str, tmp_path: Path) -> None:
    seen: list[DesiredProperties] = []
    got = threading.Event()

    def on_desired(desired: DesiredProperties) -> None:
        seen.append(desired)
        got.set()

    with start_device(
        platform,
        clock,
        pt,
        tmp_path / "d.db",
        device_id="sdk-0009",
        on_desired_properties=on_desired,
    ) as device:
        assert wait_for(lambda: device.status is Status.CONNECTED)
        platform.admin.update_desired_properties("sdk-0009", {"interval": 5, "mode": "eco"})
        assert wait_for(lambda: device.desired_properties.properties.get("mode") == "eco")
        assert wait_for(lambda: bool(seen) and seen[-1].properties.get("mode") == "eco")
        version = device.desired_properties.version
        device.update_reported_properties({"interval": 5, "firmware": "1.2.0"})
        device.update_reported_properties({"firmware": None, "uptime": 12})
        assert device.wait_sent(20)
        twin = platform.admin.get_twin("sdk-0009")
        assert twin.reported.properties == {"interval": 5, "uptime": 12}
        assert twin.desired.version == version
    # offline change: caught up at the next start (the full twin after every connect)
    platform.admin.update_desired_properties("sdk-0009", {"mode": None, "limit": 9})
    with start_device(platform, clock, pt, tmp_path / "d.db") as device:
        assert device.desired_properties.properties == {"interval": 5, "mode": "eco"}  # stored
        assert wait_for(lambda: device.desired_properties.properties == {"interval": 5, "limit": 9})


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_desired_version_gap_fetches_the_twin(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    with start_device(platform, clock, pt, tmp_path / "d.db", device_id="sdk-0010") as device:
        assert wait_for(lambda: device.status is Status.CONNECTED)
        platform.admin.update_desired_properties("sdk-0010", {"a": 1})
        assert wait_for(lambda: device.desired_properties.version >= 1)
        broker = platform.services.broker
        # a patch that skips versions (as if two were lost): the SDK fetches the twin
        platform.runner.call(
            broker.internal_message_broadcast(
                "devices/sdk-0010/twin/desired", b'{"b": 2, "$version": 7}', 1
            )
        )
        platform.admin.update_desired_properties("sdk-0010", {"c": 3})
        assert wait_for(lambda: device.desired_properties.properties == {"a": 1, "c": 3})
        assert "b" not in device.desired_properties.properties


def test_large_message_goes_over_http(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    big = os.urandom(600 * 1024)  # over the 256 KiB MQTT limit
    with start_device(platform, clock, pt, tmp_path / "d.db", device_id="sdk-0011") as device:
        device.send_message(b"small 1", stream="blobs", message_id="s1")
        device.send_message(big, stream="blobs", message_id="big")
        device.send_message(b"small 2", stream="blobs", message_id="s2")
        assert device.wait_sent(30)
    rows = platform.admin.list_device_messages("sdk-0011", stream="blobs")
    assert [m.message_id for m in rows] == ["s1", "big", "s2"]
    assert rows[1].size == len(big)


def test_reported_patches_stored_before_a_restart_are_sent_at_start(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    from iiot_device.store import LocalStore

    with start_device(platform, clock, pt, tmp_path / "d.db", device_id="sdk-0012"):
        pass
    store = LocalStore(tmp_path / "d.db")  # written while the client was not running
    store.add_reported({"battery": 80})
    store.add_reported({"battery": 79, "lid": "closed"})
    store.close()
    with start_device(platform, clock, pt, tmp_path / "d.db") as device:
        assert device.wait_sent(20)
    assert platform.admin.get_twin("sdk-0012").reported.properties == {
        "battery": 79,
        "lid": "closed",
    }


def test_refused_provisioning_token_in_the_background_is_reported_and_keeps_messages(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    token = platform.admin.create_provisioning_token(
        "short-lived", max_registration_token_lifetime=7200
    )
    with start_device(
        platform, clock, token.provisioning_token, tmp_path / "d.db", device_id="sdk-0013"
    ) as device:
        assert wait_for(lambda: device.status is Status.CONNECTED)
        platform.admin.revoke_provisioning_token(token.id)
        platform.admin.revoke_device("sdk-0013")
        device.send_message(b"kept 1")
        device.send_message(b"kept 2")
        assert run_clock_until(clock, lambda: device.status is Status.PROVISIONING_TOKEN_REFUSED)
        assert isinstance(device.last_error, ProvisioningTokenRefused)
        assert device.pending_messages_count == 2


def test_the_sdk_installs_on_its_own(tmp_path: Path) -> None:
    """``pip install ./device`` into a bare environment: only paho-mqtt and httpx come."""
    root = Path(__file__).resolve().parents[2]
    uv = root / ".tools" / "bin" / "uv"
    if not uv.exists():
        pytest.skip("uv is bootstrapped by make into .tools/")
    env = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, env], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", env / "bin" / "python", root / "device"],
        check=True,
    )
    listed = subprocess.run(
        [uv, "pip", "list", "--python", env / "bin" / "python"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = {line.split()[0].lower() for line in listed.splitlines()[2:]}
    assert {"iiot-device", "paho-mqtt", "httpx"} <= names
    assert not names & {"litestar", "amqtt", "iiot-server", "iiotsim", "pandas", "simpy"}
    check = subprocess.run(
        [env / "bin" / "python", "-c", "import iiot_device; print(iiot_device.DeviceClient)"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_new_messages_do_not_cut_the_reconnect_backoff_short(
    clock: ManualClock, tmp_path: Path
) -> None:
    """Offline, with clock time standing still, the device waits out its back-off: sending
    messages must not make it retry (it did once: each message woke the supervisor)."""
    platform = Platform(data_dir=tmp_path / "data", clock=clock).start()
    try:
        pt = platform.admin.create_provisioning_token("b").provisioning_token
        device = start_device(platform, clock, pt, tmp_path / "d.db", device_id="sdk-0014")
        try:
            assert wait_for(lambda: device.status is Status.CONNECTED)
            platform.stop()
            # the supervisor notices the drop, then waits out its back-off on the frozen clock
            assert wait_for(lambda: device.status is Status.OFFLINE)
            assert wait_for(lambda: clock.idle_threads >= 1)
            attempts = device.connection_attempts
            for i in range(20):
                device.send_message(f"offline {i}".encode())
                assert wait_for(lambda: clock.idle_threads >= 1)  # back to waiting
            assert device.connection_attempts == attempts
            assert device.pending_messages_count == 20
        finally:
            device.close()
    finally:
        platform.stop()


def test_a_device_told_its_network_is_back_reconnects_at_once(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path
) -> None:
    """Behind a cut link, with the clock standing still, a device waits out its back-off;
    told its network is back (``network_available``) it retries at once: while the link
    is still cut that is one refused attempt and back to waiting, and once it is up, a
    connection, all without a second of clock time passing."""
    hub = ProxyHub()
    try:
        link = hub.link(platform.mqtt_port)
        device = start_device(
            platform,
            clock,
            pt,
            tmp_path / "d.db",
            device_id="sdk-net-1",
            mqtt_address=("127.0.0.1", link.port),
            backoff=Backoff(base=300, cap=600),
        )
        try:
            assert wait_for(lambda: device.status is Status.CONNECTED)
            device.network_available()  # connected: nothing to do, and not kept for later
            hub.call(link.down())
            assert wait_for(lambda: device.status is Status.OFFLINE)
            assert wait_for(lambda: clock.idle_threads >= 1)  # in its back-off
            attempts = device.connection_attempts
            assert attempts == 1  # the signal while connected cut no back-off short
            now = clock.now()
            device.network_available()  # a false alarm: still cut
            assert wait_for(lambda: device.connection_attempts == attempts + 1)
            assert wait_for(lambda: clock.idle_threads >= 1)
            assert device.status is Status.OFFLINE
            hub.call(link.up())
            device.network_available()
            assert wait_for(lambda: device.status is Status.CONNECTED)
            assert device.connection_attempts == attempts + 2
            assert clock.now() == now
        finally:
            device.close()
    finally:
        hub.close()


def test_a_device_retrying_a_refused_broker_reads_the_environment_for_a_proxy_once(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paho looks up a proxy in the environment at every connect (urllib scans it twice:
    ~220 of the ~260 us of CPU a refused attempt cost); the device asks once per host."""
    lookups: list[str] = []
    original = urllib.request.getproxies

    def counted() -> dict[str, str]:
        lookups.append("getproxies")
        return original()

    monkeypatch.setattr(urllib.request, "getproxies", counted)
    with socket.socket() as refusing:  # bound, never listening: every connect is refused
        refusing.bind(("127.0.0.1", 0))
        device = start_device(
            platform,
            clock,
            pt,
            tmp_path / "d.db",
            device_id="sdk-proxy-1",
            mqtt_address=refusing.getsockname(),
        )
        try:
            assert run_clock_until(clock, lambda: device.connection_attempts >= 5)
            assert device.status is Status.OFFLINE
            assert isinstance(device.last_error, ConnectionRefusedError)
            assert lookups == ["getproxies"]
        finally:
            device.close()


def test_an_mqtt_proxy_in_the_environment_is_used_at_every_attempt(
    platform: Platform, clock: ManualClock, pt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked once, the proxy is still paho's choice (``mqtt_proxy``, as paho reads it),
    and every later attempt goes through it."""
    requests: list[bytes] = []
    with socket.socket() as proxy:  # an HTTP proxy that reads the CONNECT and hangs up
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        proxy.settimeout(0.2)
        monkeypatch.setenv("mqtt_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        device = start_device(platform, clock, pt, tmp_path / "d.db", device_id="sdk-proxy-2")
        try:

            def proxied_twice() -> bool:
                with contextlib.suppress(TimeoutError):
                    accepted, _ = proxy.accept()
                    with accepted:
                        accepted.settimeout(5)
                        requests.append(accepted.recv(4096))
                return len(requests) >= 2

            assert run_clock_until(clock, proxied_twice)
            port = platform.mqtt_port
            assert all(
                r.startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode()) for r in requests
            )
        finally:
            device.close()
