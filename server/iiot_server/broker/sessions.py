"""amqtt sessions without a ``transitions.Machine`` each.

amqtt 0.12.1 builds a ``transitions.Machine`` (three states, seven transitions, two
callbacks) in every ``Session.__init__``, and its CONNECT handling makes a new Session for
every CONNECT, a reconnect included. In a 1,000-device hybrid run that construction was 14 %
of the platform's CPU (py-spy, issue 18). :class:`SessionStates` is the same machine as a
few lines: the states, the two triggers (``connect``, ``disconnect``), the refused
transition (``transitions.MachineError``, as amqtt's callers expect) and the on-enter
callbacks. ``tests/server/test_session_states.py`` checks it against amqtt's own machine
on every sequence of triggers.
"""

from __future__ import annotations

from amqtt.mqtt.protocol import broker_handler
from amqtt.session import Session
from transitions import MachineError


class SessionStates:
    """``session.transitions`` as amqtt uses it: ``state``, ``is_<state>()``,
    ``connect()``, ``disconnect()``."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = "new"

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"

    def connect(self) -> bool:
        """new or disconnected → connected; refused from connected."""
        if self.state == "connected":
            raise MachineError("Can't trigger event connect from state connected!")
        self.state = "connected"
        self._session._on_enter_connected()
        return True

    def disconnect(self) -> bool:
        """Any state → disconnected (re-entered from disconnected, as amqtt's machine does)."""
        self.state = "disconnected"
        self._session._on_enter_disconnected()
        return True


class PlatformSession(Session):
    """amqtt's Session with :class:`SessionStates` for its state machine."""

    def _init_states(self) -> None:
        self.transitions = SessionStates(self)  # type: ignore[assignment]


def install() -> None:
    """Make amqtt's CONNECT handling create :class:`PlatformSession` objects (it names
    the class inline, as it does its handler class)."""
    broker_handler.Session = PlatformSession  # type: ignore[misc]
