"""Mosquitto mode's ingest connection (broker/mqtt_subscriber.py) against a real mosquitto:
its persistent session gives back what was not acknowledged, and only that."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from iiot_server.broker.mqtt_subscriber import PersistentSubscriber
from iiot_server.domain.errors import BrokerUnavailable

from .brokers import needs_mosquitto

pytestmark = [
    needs_mosquitto,
    pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto-clients"),
]

Received = tuple[str, bytes, int, int, int]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def until(condition: object, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10.0
    while not callable(condition) or not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


async def publish(port: int, lines: list[str]) -> None:
    """``mosquitto_pub`` at QoS 1, one message per line."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-p", str(port), "-q", "1", "-t", "devices/d1/messages/s", "-l",
        stdin=subprocess.PIPE,
    )  # fmt: skip
    await proc.communicate("\n".join(lines).encode() + b"\n")
    assert proc.returncode == 0


async def listening(port: int) -> None:
    """Until mosquitto (just started) takes connections."""
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("mosquitto did not listen")


async def start_subscriber(port: int, received: list[Received]) -> PersistentSubscriber:
    subscriber = PersistentSubscriber(
        "test:ingest",
        ("platform", "secret"),
        ["devices/+/messages/#"],
        lambda *message: received.append(message),
    )
    await listening(port)
    await subscriber.start("127.0.0.1", port)
    return subscriber


def test_what_is_not_acknowledged_comes_back_on_the_next_connection(mosquitto: int) -> None:
    async def main() -> None:
        received: list[Received] = []
        subscriber = await start_subscriber(mosquitto, received)
        await publish(mosquitto, ["m1", "m2", "m3", "m4", "m5"])
        await until(lambda: len(received) == 5, "five messages")
        assert [r[1] for r in received] == [b"m1", b"m2", b"m3", b"m4", b"m5"]
        first = received[0][4]
        assert {r[2] for r in received} == {1} and {r[4] for r in received} == {first}
        for _, _, _, packet_id, generation in received[:2]:  # m1 and m2 were stored
            subscriber.queue_puback(packet_id, generation)
        subscriber.flush_pubacks()
        connection = subscriber._connection
        assert connection is not None and connection.transport is not None
        connection.transport.close()  # the link drops; the subscriber connects again

        await until(lambda: len(received) == 8, "m3-m5 again")
        again = received[5:]
        assert [r[1] for r in again] == [b"m3", b"m4", b"m5"]
        (second,) = {r[4] for r in again}  # the new connection's
        assert second > first
        subscriber.queue_puback(received[2][3], first)  # the old connection's: not sent
        for _, _, _, packet_id, generation in again:
            subscriber.queue_puback(packet_id, generation)
        subscriber.flush_pubacks()
        await subscriber.stop()

        # a new process, same session: only what came after
        received.clear()
        subscriber = await start_subscriber(mosquitto, received)
        await publish(mosquitto, ["m6"])
        await until(lambda: len(received) == 1, "m6")
        assert received[0][1] == b"m6"
        await subscriber.stop()

    asyncio.run(main())


def test_a_refused_connection_is_an_error_naming_the_code(mosquitto: int) -> None:
    async def main() -> None:
        subscriber = PersistentSubscriber("", ("u", "p"), ["x/#"], lambda *m: None, timeout=5)
        # an empty client id with clean session off: MQTT 3.1.1 refuses it (code 2)
        await listening(mosquitto)
        with pytest.raises(BrokerUnavailable, match=r"refused the ingest connection \(code 2\)"):
            await subscriber.start("127.0.0.1", mosquitto)

    asyncio.run(main())


def test_a_message_that_comes_before_the_suback_is_acknowledged() -> None:
    """Mosquitto sends a session's queued messages right after CONNACK, ahead of SUBACK.
    A broker scripted to do so (SUBACK held back until the PUBACK or 5 s) must receive
    the PUBACK the platform sends once the message is stored."""

    async def main() -> None:
        sent = bytearray()  # what the platform sent after CONNECT

        async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1024)  # CONNECT
            topic = b"devices/d1/messages/s"
            body = len(topic).to_bytes(2, "big") + topic + (7).to_bytes(2, "big") + b"m"
            writer.write(b"\x20\x02\x01\x00" + bytes([0x32, len(body)]) + body)
            await writer.drain()
            while True:  # SUBSCRIBE, then (if it comes) the PUBACK
                try:
                    data = await asyncio.wait_for(reader.read(1024), 5.0)
                except TimeoutError:
                    break
                sent.extend(data)
                if b"\x40\x02\x00\x07" in sent or not data:
                    break
            writer.write(b"\x90\x03\x00\x01\x01")  # SUBACK
            await writer.drain()

        server = await asyncio.start_server(broker, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def store(topic: str, payload: bytes, qos: int, packet_id: int, generation: int) -> None:
            subscriber.queue_puback(packet_id, generation)  # stored at once
            asyncio.get_running_loop().call_soon(subscriber.flush_pubacks)

        subscriber = PersistentSubscriber("t", ("u", "p"), ["devices/+/messages/#"], store)
        await subscriber.start("127.0.0.1", port)
        await subscriber.stop()
        server.close()
        assert b"\x40\x02\x00\x07" in sent, f"no PUBACK for packet 7 in {bytes(sent)!r}"

    asyncio.run(main())


@pytest.mark.parametrize("answers_pings", [False, True])
def test_a_broker_that_stops_answering_pings_is_left_and_connected_again(
    answers_pings: bool,
) -> None:
    """A scripted broker answers CONNECT and SUBSCRIBE, then PINGREQs or nothing (a stopped
    mosquitto, a half-open link). With a 1 s keep-alive the subscriber pings every 0.5 s;
    a ping unanswered by the next tick ends the connection and a new one is made."""

    async def main() -> None:
        connections: list[bytearray] = []

        async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen = bytearray()
            connections.append(seen)
            await reader.read(1024)  # CONNECT
            writer.write(b"\x20\x02\x00\x00")  # CONNACK
            seen.extend(await reader.read(1024))  # SUBSCRIBE
            writer.write(b"\x90\x03\x00\x01\x01")  # SUBACK
            while data := await reader.read(1024):
                seen.extend(data)
                if answers_pings and b"\xc0\x00" in data:
                    writer.write(b"\xd0\x00")  # PINGRESP
            writer.close()

        server = await asyncio.start_server(broker, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        subscriber = PersistentSubscriber(
            "t", ("u", "p"), ["devices/+/messages/#"], lambda *m: None, keepalive=1
        )
        await subscriber.start("127.0.0.1", port)
        try:
            if answers_pings:
                # four ping intervals answered: still the first connection
                await until(lambda: connections[0].count(b"\xc0\x00") >= 4, "four pings")
                assert len(connections) == 1
            else:
                await until(lambda: len(connections) == 2, "a second connection")
                assert connections[0].count(b"\xc0\x00") == 1  # one ping, unanswered
        finally:
            await subscriber.stop()
            server.close()

    asyncio.run(main())
