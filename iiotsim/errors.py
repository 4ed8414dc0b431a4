"""The one exception hierarchy of the ``iiotsim`` library (the whole tree lives here)::

    IiotsimError                  base: ``except IiotsimError`` catches every one below
    ├── PlatformError             the platform refused a call; carries its RFC 9457 problem
    ├── ScenarioError(ValueError) a scenario value is invalid; ``.field`` names it
    ├── PanelError(ValueError)    a widget refused an input before sending it
    └── HybridWorkerFailed(RuntimeError)  a hybrid run's worker died, failed or went silent

``ScenarioError`` and ``PanelError`` are also ``ValueError`` s (they report bad values,
and callers that caught ``ValueError`` before this tree existed still do). They stay
importable where they are raised: ``iiotsim.sim.ScenarioError``,
``iiotsim.widgets.PanelError``, ``iiotsim.twin.HybridWorkerFailed``.

>>> issubclass(ScenarioError, IiotsimError) and issubclass(PanelError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["HybridWorkerFailed", "IiotsimError", "PanelError", "PlatformError", "ScenarioError"]


class IiotsimError(Exception):
    """Base of every error raised by ``iiotsim``."""


class PlatformError(IiotsimError):
    """The platform refused a call; carries its RFC 9457 problem.

    >>> str(PlatformError(400, "/problems/validation", "Invalid input", "bad", "deviceId"))
    '400 Invalid input: bad (field: deviceId)'
    """

    def __init__(
        self,
        status: int,
        problem_type: str,
        title: str,
        detail: str | None = None,
        field: str | None = None,
    ) -> None:
        self.status = status
        self.problem_type = problem_type
        self.title = title
        self.detail = detail
        self.field = field
        text = f"{status} {title}"
        if detail:
            text += f": {detail}"
        if field:
            text += f" (field: {field})"
        super().__init__(text)


class ScenarioError(IiotsimError, ValueError):
    """A scenario value is invalid; ``field`` names it (dotted path).

    >>> str(ScenarioError("token.refresh_fraction", "must be in (0, 1)"))
    'token.refresh_fraction: must be in (0, 1)'
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class PanelError(IiotsimError, ValueError):
    """An input a notebook panel refused before sending it (the message names the field)."""


class HybridWorkerFailed(IiotsimError, RuntimeError):
    """A hybrid run's worker (``iiotsim.twin_worker``) died, failed or stayed silent past
    its bound; the message names the worker and its devices."""
