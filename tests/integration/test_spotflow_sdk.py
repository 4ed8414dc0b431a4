"""The real Spotflow device SDK (``spotflow-device`` 2.1.1, a Rust core) against
``Platform(tls=True)`` (issue 13): it provisions over HTTPS, connects to MQTT over TLS on
port 8883 of ``iotHubHostName`` with the SAS from the register answer, sends, and syncs its
twin over the ``$iothub/…`` topics. It trusts the development CA through ``SSL_CERT_FILE``
(OpenSSL via native-tls, see docs/protocol.md). Real time: the SDK checks its SAS against
its own clock, so no ManualClock here; waits are bounded waits on network effects."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iiotsim.platform import SPOTFLOW_MQTT_PORT, Platform

spotflow_device = pytest.importorskip("spotflow_device")


SDK_WAIT = 30.0


def eventually(check: Callable[[], bool], within: float = SDK_WAIT) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def sdk_cloud_to_device(db: Path) -> list[tuple[bytes, str, str]]:
    """Cloud-to-device messages the SDK stored (its ``CloudToDeviceMessages`` and
    ``CloudToDeviceProperties`` tables), with their application properties (the system
    ``$.`` ones left out)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT m.content, p.key, p.value FROM CloudToDeviceMessages m"
            " JOIN CloudToDeviceProperties p ON p.message_id = m.id"
            " WHERE p.key NOT LIKE '$.%' ORDER BY m.id"
        ).fetchall()
    return [(bytes(content), key, value) for content, key, value in rows]


def test_the_real_spotflow_sdk_provisions_starts_sends_and_syncs_its_twin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spotflow_port: int,
) -> None:
    with Platform(data_dir=tmp_path / "platform", tls=True) as platform:
        assert platform.mqtt_port == SPOTFLOW_MQTT_PORT
        monkeypatch.setenv("SSL_CERT_FILE", str(platform.ca_cert_path))
        pt = platform.admin.create_provisioning_token("spotflow sdk").provisioning_token
        shown: list[tuple[str, str]] = []

        def display(operation: object) -> None:  # the SDK shows the code; a human approves
            op_id, code = operation.id, operation.verification_code  # type: ignore[attr-defined]
            shown.append((op_id, code))
            threading.Thread(
                target=platform.admin.approve_operation, args=(op_id,), daemon=True
            ).start()

        started: list[object] = []

        def start() -> None:  # retries forever on a refusal: bounded by the join below
            started.append(
                spotflow_device.DeviceClient.start(
                    device_id="spotflow-0001",
                    provisioning_token=pt,
                    db=str(tmp_path / "spotflow.db"),
                    instance=platform.http_url.removeprefix("https://"),
                    display_provisioning_operation_callback=display,
                )
            )

        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        starter.join(2 * SDK_WAIT)
        assert started, "DeviceClient.start() did not return"
        client: Any = started.pop()
        try:
            assert len(shown) == 1  # start() returned: provisioned, registered, twin answered
            assert (client.workspace_id, client.device_id) == ("default", "spotflow-0001")

            sender = client.create_stream_sender(stream_group="plant", stream="vibration")
            sender.send_message(b"0.42")
            client.wait_enqueued_messages_sent()
            assert eventually(lambda: bool(platform.admin.list_device_messages("spotflow-0001")))
            [message] = platform.admin.list_device_messages("spotflow-0001")
            assert (message.stream, message.payload) == ("vibration", "0.42")

            client.update_reported_properties({"temperature": 21})
            assert eventually(
                lambda: (
                    platform.admin.get_twin("spotflow-0001").reported.properties
                    == {"temperature": 21}
                )
            )

            platform.admin.update_desired_properties("spotflow-0001", {"setpoint": 7})
            assert eventually(lambda: client.get_desired_properties().values == {"setpoint": 7})
            assert platform.admin.get_device("spotflow-0001").connected

            # cloud-to-device: the SDK 2.1.1 keeps it in its database (no Python API reads
            # it), then acknowledges: the PUBACK is what makes it "delivered" here
            platform.admin.send_to_device("spotflow-0001", b"\x01c2d", properties={"op": "x"})
            assert eventually(
                lambda: (
                    [m.state for m in platform.admin.list_cloud_to_device_messages("spotflow-0001")]
                    == ["delivered"]
                )
            )
            assert sdk_cloud_to_device(tmp_path / "spotflow.db") == [(b"\x01c2d", "op", "x")]
        finally:
            client = None
            gc.collect()  # the SDK disconnects when dropped, before the platform stops


def test_a_revoked_spotflow_sdk_device_provisions_again_at_its_next_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spotflow_port: int,
) -> None:
    """The RT of a revoked device gets a 401 at register: at start-up the SDK then opens a
    new provisioning operation (it did not on the old 403s and retried for ever). While it
    runs, the revoked SDK logs "Registration Token is invalid" and stays disconnected."""
    with Platform(data_dir=tmp_path / "platform", tls=True) as platform:
        monkeypatch.setenv("SSL_CERT_FILE", str(platform.ca_cert_path))
        pt = platform.admin.create_provisioning_token("spotflow sdk").provisioning_token
        shown: list[str] = []

        def display(operation: object) -> None:
            op_id = operation.id  # type: ignore[attr-defined]
            shown.append(op_id)
            threading.Thread(
                target=platform.admin.approve_operation, args=(op_id,), daemon=True
            ).start()

        def start() -> Any:
            started: list[object] = []
            starter = threading.Thread(
                target=lambda: started.append(
                    spotflow_device.DeviceClient.start(
                        device_id="spotflow-0002",
                        provisioning_token=pt,
                        db=str(tmp_path / "spotflow.db"),  # the same database both times
                        instance=platform.http_url.removeprefix("https://"),
                        display_provisioning_operation_callback=display,
                    )
                ),
                daemon=True,
            )
            starter.start()
            starter.join(2 * SDK_WAIT)
            assert started, "DeviceClient.start() did not return"
            return started.pop()

        client = start()
        assert len(shown) == 1
        platform.admin.revoke_device("spotflow-0002")
        assert eventually(lambda: not platform.admin.get_device("spotflow-0002").connected)
        client = None
        gc.collect()

        client = start()
        try:
            assert len(shown) == 2 and shown[0] != shown[1]  # a new operation, approved
            client.create_stream_sender(stream="after").send_message(b"back")
            client.wait_enqueued_messages_sent()
            assert eventually(
                lambda: (
                    [m.stream for m in platform.admin.list_device_messages("spotflow-0002")]
                    == ["after"]
                )
            )
        finally:
            client = None
            gc.collect()
