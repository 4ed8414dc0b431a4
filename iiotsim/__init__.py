"""iiotsim: the notebook-facing library (embedded platform, admin client, simulator)."""

from .admin import AdminClient, to_frame
from .clock import ManualClock
from .errors import IiotsimError, PanelError, PlatformError, ScenarioError
from .platform import Platform

__all__ = [
    "AdminClient",
    "IiotsimError",
    "ManualClock",
    "PanelError",
    "Platform",
    "PlatformError",
    "ScenarioError",
    "to_frame",
]
