"""iiotsim: the notebook-facing library (embedded platform, admin client, simulator).

The names below load on first use (PEP 562): ``import iiotsim.sim`` for a simulation
does not pay for the platform's server and HTTP models (3.1 s of 5.2 s measured with
``python -X importtime -c "import iiotsim.sim"`` when they loaded eagerly).
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from .admin import AdminClient, to_frame
    from .clock import ManualClock
    from .errors import IiotsimError, PanelError, PlatformError, ScenarioError
    from .platform import Platform

_HOMES = {
    "AdminClient": "admin",
    "to_frame": "admin",
    "ManualClock": "clock",
    "IiotsimError": "errors",
    "PanelError": "errors",
    "PlatformError": "errors",
    "ScenarioError": "errors",
    "Platform": "platform",
}

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


def __getattr__(name: str) -> _typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'iiotsim' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
