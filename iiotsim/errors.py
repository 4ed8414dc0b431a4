"""The one exception hierarchy of the ``iiotsim`` library."""

from __future__ import annotations


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
