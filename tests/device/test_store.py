"""The SDK's local database on its own: outbox bounds and policies, ids, ownership."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iiot_device import Backoff, DatabaseInUse, OutboxFull, OutboxLimits
from iiot_device.store import TOKEN_KEY, LocalStore, TokenState


def test_refuse_policy_keeps_everything_stored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "d.db", limits=OutboxLimits(max_messages=3))
    for i in range(3):
        store.add_message("s", f"{i}".encode(), None)
    with pytest.raises(OutboxFull, match="3 messages"):
        store.add_message("s", b"4", None)
    assert [m.payload for m in store.next_messages(0, 10)] == [b"0", b"1", b"2"]


def test_drop_oldest_policy_by_count_and_bytes(tmp_path: Path) -> None:
    store = LocalStore(
        tmp_path / "d.db",
        limits=OutboxLimits(max_messages=3, max_bytes=10, policy="drop_oldest"),
    )
    for i in range(5):
        store.add_message("s", f"{i}".encode(), None)
    assert [m.payload for m in store.next_messages(0, 10)] == [b"2", b"3", b"4"]
    store.add_message("s", b"x" * 9, None)  # 9 of 10 bytes: only "4" (1 byte) can stay
    assert [m.payload for m in store.next_messages(0, 10)] == [b"4", b"x" * 9]
    assert store.messages_dropped == 4
    with pytest.raises(OutboxFull, match="whole capacity"):
        store.add_message("s", b"y" * 11, None)


def test_generated_message_ids_never_repeat(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "d.db")
    store.add_message("s", b"a", None)
    [first] = store.next_messages(0, 10)
    store.delete_messages([first.seq])
    store.add_message("s", b"b", None)
    [second] = store.next_messages(0, 10)
    assert first.message_id != second.message_id
    assert first.message_id.startswith(store.instance)
    store.close()
    again = LocalStore(tmp_path / "d.db")  # counts and ids survive a restart
    assert again.pending_messages == 1
    assert again.instance == store.instance


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "d.db")
    with pytest.raises(DatabaseInUse):
        LocalStore(tmp_path / "d.db")
    store.close()
    LocalStore(tmp_path / "d.db").close()


def test_bad_limits_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        OutboxLimits(max_messages=0)
    with pytest.raises(ValueError, match="'sometimes' is not a valid OverflowPolicy"):
        OutboxLimits(policy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0)


def test_full_jitter_spreads_a_fleet() -> None:
    import random

    delays = [Backoff(base=1, cap=60, rng=random.Random(seed)).next() for seed in range(200)]
    assert min(delays) < 0.1 and max(delays) > 0.9  # not lock-step
    b = Backoff(base=1, cap=8, rng=random.Random(0))
    bounds = []
    for _ in range(6):
        bounds.append(b.bound())
        b.next()
    assert bounds == [1, 2, 4, 8, 8, 8]


def test_token_state_reads_and_writes_the_stored_format(tmp_path: Path) -> None:
    # the row exactly as every SDK version so far wrote it (json.dumps of a dict)
    written_before = {
        "token": "rt_abc",
        "lifetime": 7200.0,
        "obtained_at": 1767225600.25,
        "device_id": "pump-7",
    }
    store = LocalStore(tmp_path / "d.db")
    store._conn.execute(
        "INSERT INTO state (key, value) VALUES ('rt', ?)", (json.dumps(written_before),)
    )
    state = store.registration_token()
    assert state == TokenState("rt_abc", 7200.0, 1767225600.25, "pump-7")
    assert state.expires_at == 1767232800.25

    store.set_many({TOKEN_KEY: TokenState("rt_new", None, 5.0, "pump-7").to_json()})
    [(text,)] = store._conn.execute("SELECT value FROM state WHERE key = 'rt'").fetchall()
    assert json.loads(text) == {
        "token": "rt_new",
        "lifetime": None,
        "obtained_at": 5.0,
        "device_id": "pump-7",
    }
    store.close()
    reopened = LocalStore(tmp_path / "d.db")
    assert reopened.registration_token() == TokenState("rt_new", None, 5.0, "pump-7")
    reopened.set(TOKEN_KEY, None)
    assert reopened.registration_token() is None
    reopened.close()
