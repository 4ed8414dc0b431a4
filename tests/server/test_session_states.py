"""The platform's light session state machine (broker/sessions.py) behaves as amqtt's
``transitions.Machine`` on every sequence of triggers."""

from __future__ import annotations

import itertools

import pytest
from amqtt.mqtt.protocol import broker_handler
from amqtt.session import Session
from iiot_server.broker.sessions import PlatformSession, install
from transitions import MachineError

TRIGGERS = ("connect", "disconnect")


def outcomes(session: Session, sequence: tuple[str, ...]) -> list[tuple[str, str, bool]]:
    """State, whether each trigger was refused, and whether the enter callbacks ran."""
    seen = []
    for trigger in sequence:
        session.last_connect_time = session.last_disconnect_time = None
        try:
            getattr(session.transitions, trigger)()
            refused = "ok"
        except MachineError:
            refused = "refused"
        entered = (session.last_connect_time is not None) or (
            session.last_disconnect_time is not None
        )
        state = session.transitions.state
        checks = (
            session.transitions.is_new(),
            session.transitions.is_connected(),
            session.transitions.is_disconnected(),
        )
        assert checks == (state == "new", state == "connected", state == "disconnected")
        seen.append((state, refused, entered))
    return seen


@pytest.mark.parametrize(
    "sequence", [s for n in range(1, 5) for s in itertools.product(TRIGGERS, repeat=n)]
)
def test_light_states_match_amqtts_machine(sequence: tuple[str, ...]) -> None:
    assert outcomes(PlatformSession(), sequence) == outcomes(Session(), sequence)


def test_install_makes_amqtt_create_platform_sessions() -> None:
    install()
    assert broker_handler.Session is PlatformSession
    assert PlatformSession().transitions.state == "new"
