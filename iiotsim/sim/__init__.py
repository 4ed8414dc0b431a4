"""Fleet simulator: what a token-lifetime policy costs a fleet with intermittent
connectivity (simpy + pandas). Start with :class:`Scenario` and :func:`simulate`."""

from .fit import ConnectivityFit, connection_intervals, fit_connectivity
from .model import Fleet, SimulationResult, draw_fleet, simulate
from .rollout import rollout_devices, simulate_rollout
from .scenario import (
    DAY,
    HOUR,
    Backoff,
    Connectivity,
    DeviceGroup,
    Distribution,
    Leaks,
    Messages,
    Outage,
    Outages,
    Pitfalls,
    Provisioning,
    Scenario,
    ScenarioError,
    TokenPolicy,
)
from .stats import compare_policies, summarize_sweep
from .sweep import sweep

__all__ = [
    "DAY",
    "HOUR",
    "Backoff",
    "Connectivity",
    "ConnectivityFit",
    "DeviceGroup",
    "Distribution",
    "Fleet",
    "Leaks",
    "Messages",
    "Outage",
    "Outages",
    "Pitfalls",
    "Provisioning",
    "Scenario",
    "ScenarioError",
    "SimulationResult",
    "TokenPolicy",
    "compare_policies",
    "connection_intervals",
    "draw_fleet",
    "fit_connectivity",
    "rollout_devices",
    "simulate",
    "simulate_rollout",
    "summarize_sweep",
    "sweep",
]
