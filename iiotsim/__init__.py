"""iiotsim: the notebook-facing library (embedded platform, admin client, simulator)."""

from .admin import AdminClient, to_frame
from .clock import ManualClock
from .errors import IiotsimError, PlatformError
from .platform import Platform

__all__ = ["AdminClient", "IiotsimError", "ManualClock", "Platform", "PlatformError", "to_frame"]
