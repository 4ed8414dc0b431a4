"""The fleet model: what a token-lifetime policy costs a fleet whose connectivity comes
and goes.

How it stays fast: a device's network connectivity (its own on/off renewal process,
merged with outages and the reconnect delays of their storms) does not depend on its
tokens, so it is drawn up front as a matrix of segments (devices x segments), one block
of :data:`DEVICE_BLOCK` devices at a time, and the model walks the segments column by
column, vectorised over the block's devices. Between two
segment boundaries nothing can change an outcome: refreshes while online follow in
closed form (at ``refresh_fraction x lifetime`` of token age, and at once on reconnect
if that point passed offline), a lockout is decided at reconnect (token age >= lifetime),
and messages are counted per undeliverable stretch. Only lockouts meet other devices:
their approvals queue for the technicians (a simpy resource, :mod:`.technicians`).
Because a lockout's wait changes that device's later token ages, the queue and the
fleet are solved by fixed-point iteration: pass 1 waits as if a technician were free,
each next pass replays with the queue's delay (as a function of lockout time, damped
0.5) until the lockout count and mean wait settle within 1 % (or 2 lockouts / 60 s), at
most :data:`FIXED_POINT_MAX_PASSES` passes; the summary says how many and whether it
settled, and reports the final pass's own waits (approvals after the horizon censored).
The passes record lockouts only; the settled one is replayed once more with its
timeline, totals and messages.
Token rules are the platform's (``iiot_server.domain.tokens``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pandas as pd
from iiot_server.domain.tokens import usable_until
from numpy.typing import NDArray

from .distributions import equilibrium, mean, sample
from .scenario import DAY, HOUR, Connectivity, Scenario, TokenPolicy
from .storm import simulate_storm
from .technicians import QueueState, queue_state, working_delay

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
REQUEST_KINDS = ("connect", "refresh", "register", "provisioning", "twin_get", "messages")
REFRESH_KINDS = ("refresh", "register", "connect")
"""the requests of one token refresh (spread alike)"""
EVENTS_PER_DEVICE_LIMIT = 2000  # fleets up to this size get connectivity events too
FIXED_POINT_MAX_PASSES = 20
"""cap on fleet/queue passes (measured on notebook 02's year: 1 from 7 d tokens up, 5 at
3 d, 9 at 1 d, 13 at 1 h; see docs)"""
FIXED_POINT_DAMPING = 0.5
"""weight of each new pass's queue in the delays the next pass replays"""
FIXED_POINT_TOLERANCE = (0.01, 2, 60.0)
"""settled when, from one pass to the next, the lockout count changes by at most 1 % or
2 lockouts and the queue's mean wait for the pass's lockouts differs from the mean wait
the pass replayed by at most 1 % or 60 s"""


@dataclass
class SimulationResult:
    """One run: ``events`` (time, device, kind), ``devices`` (one row per device),
    ``timeline`` (per ``timeline_resolution``) and ``summary`` (the fleet's figures)."""

    scenario: Scenario
    events: pd.DataFrame
    devices: pd.DataFrame
    timeline: pd.DataFrame
    summary: pd.Series


@dataclass(frozen=True)
class RandomStreams:
    """One random generator per purpose, spawned from the scenario's seed.

    Each purpose draws from its own stream, so drawing more for one (a longer horizon,
    more leaks) leaves the others' draws unchanged. A stream is the seed's child at its
    field's position: reordering the fields, or inserting one before the last, changes
    every result for a seed (new streams go at the end).

    >>> streams = RandomStreams.from_seed(7)
    >>> float(streams.messages.uniform()) == float(RandomStreams.from_seed(7).messages.uniform())
    True
    """

    deployment: np.random.Generator
    """deployment times (``deployment_days``)"""
    connectivity: np.random.Generator
    """each device's own on/off periods"""
    outages: np.random.Generator
    """random outages: how many, when, how long, which site"""
    storms: np.random.Generator
    """the reconnect storm after each outage"""
    registration_token_leaks: np.random.Generator
    """leaked Registration Tokens: device, time, detection"""
    provisioning_token_leaks: np.random.Generator
    """leaked Provisioning Tokens: time, detection, holder"""
    replay: np.random.Generator
    """the seed of the fleet replay's approval-time draws (both passes replay alike)"""
    first_queue: np.random.Generator
    """technician service times of pass 1's queue"""
    final_queue: np.random.Generator
    """technician service times of the reported queue"""
    messages: np.random.Generator
    """message counts and the latency sample"""
    exposure: np.random.Generator
    """the devices followed and the leaks sampled to measure RT-leak exposure"""
    start: np.random.Generator
    """``start="steady"``: each device's connectivity phase and token age at t=0"""

    @classmethod
    def from_seed(cls, seed: int) -> RandomStreams:
        children = np.random.SeedSequence(seed).spawn(len(fields(cls)))
        return cls(*(np.random.default_rng(child) for child in children))


@dataclass(frozen=True)
class Fleet:
    """A fleet's drawn connectivity, as segments: ``times[d, k]`` starts segment k of
    device d, which is online iff ``online[d, k]``; ``times[d, -1]`` is the horizon
    (seconds from the start)."""

    times: NDArray[np.float64]
    online: NDArray[np.bool_]
    deploy: NDArray[np.float64]
    """deployment time of each device"""
    group: NDArray[np.int64]
    """index of each device's group in ``scenario.groups`` (0 without groups)"""
    storm_attempts: NDArray[np.float64]
    """times of the reconnect attempts of every outage's storm"""
    outages: list[tuple[float, float, int]]
    """(start, duration, group index or -1 for the broker) of each outage"""
    start_online: NDArray[np.bool_]
    """whether each device's own connectivity is online at its deployment (all True
    unless ``start="steady"``: then a device offline at t=0 did not disconnect there)"""
    start_age: NDArray[np.float64]
    """each device's token age at its deployment (0: a fresh token)"""
    start_cycle: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    """the policy-free part of ``start_age``: each device's point in its refresh cycle
    at t=0, U(0, 1), for a steady start (empty otherwise)"""
    start_offline_for: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    """the other policy-free part: how long a device offline at t=0 has been offline"""


@dataclass
class _Lockouts:
    """The lockouts of one replay: recoverable ones (device, time, wait) and permanent
    ones (device, time), in arrays per segment column."""

    lockout_device: list[NDArray[np.int64]] = field(default_factory=list)
    lockout_time: list[NDArray[np.float64]] = field(default_factory=list)
    lockout_wait: list[NDArray[np.float64]] = field(default_factory=list)
    lockout_service: list[NDArray[np.float64]] = field(default_factory=list)
    """the technician's handling time of each lockout's approval"""
    permanent_device: list[NDArray[np.int64]] = field(default_factory=list)
    permanent_time: list[NDArray[np.float64]] = field(default_factory=list)
    lockout_column: list[NDArray[np.int64]] = field(default_factory=list)
    """the segment column of each lockout (its order: column, then device)"""
    permanent_column: list[NDArray[np.int64]] = field(default_factory=list)

    def extend(self, other: _Lockouts) -> None:
        for f in fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))

    def merged(self) -> _Lockouts:
        """One array per field, in the order an unchunked replay finds them (by segment
        column, then device), whichever chunks they came from."""
        out = _Lockouts()
        for prefix in ("lockout", "permanent"):
            column = getattr(self, f"{prefix}_column")
            if not column:
                continue
            columns = np.concatenate(column)
            device = np.concatenate(getattr(self, f"{prefix}_device"))
            order = np.lexsort((device, columns))
            for f in fields(self):
                if f.name.startswith(prefix + "_"):
                    getattr(out, f.name).append(np.concatenate(getattr(self, f.name))[order])
        return out


class _Segment(NamedTuple):
    """One connectivity segment of a tracked device, as the replay saw it."""

    start: float
    age: float
    """token age at ``start`` (negative: awaiting approval for that long)"""
    duration: float
    online: bool


@dataclass
class _Stretches:
    """Undeliverable stretches (offline, or online awaiting approval): device, start and
    end (``inf`` when still open at the horizon), in arrays per segment column."""

    start: list[NDArray[np.float64]] = field(default_factory=list)
    end: list[NDArray[np.float64]] = field(default_factory=list)
    device: list[NDArray[np.int64]] = field(default_factory=list)

    def arrays(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
        """(start, end, device), concatenated."""
        return (
            np.concatenate(self.start) if self.start else np.empty(0),
            np.concatenate(self.end) if self.end else np.empty(0),
            np.concatenate(self.device) if self.device else np.empty(0, dtype=np.int64),
        )


class _ServiceTimes:
    """Each lockout's approval handling time, a function of (device, which of its
    lockouts): every pass of the fixed point draws the same time for the same lockout
    (common random numbers), so passes differ only by what the queue changed."""

    def __init__(self, s: Scenario, seed: int) -> None:
        self._scenario, self._seed = s, seed
        self._tables: dict[int, NDArray[np.float64]] = {}

    def of(self, device: NDArray[np.int64], nth: NDArray[np.int64]) -> NDArray[np.float64]:
        """Handling time of ``device``'s ``nth`` lockout (0-based)."""
        out = np.empty(len(device))
        for k in np.unique(nth):
            k = int(k)
            if k not in self._tables:
                rng = np.random.default_rng([self._seed, k])
                n = self._scenario.fleet_size
                self._tables[k] = sample(self._scenario.provisioning.approval_time, rng, n)
            pick = nth == k
            out[pick] = self._tables[k][device[pick]]
        return out


def approval_handling_times(s: Scenario) -> Callable[[int, int], float]:
    """``handling(device, nth)``: the approval time the simulator draws for ``device``'s
    ``nth`` lockout (0-based) in scenario ``s``, seconds. A hybrid run's technicians
    take the same time for the same lockout (common random numbers), so the two differ
    only by which lockouts happened and by the queue, not by independent draws (with ~40
    lockouts, two independent means of exponential draws differ by over 50 % one run
    in twenty)."""
    service = _ServiceTimes(s, int(RandomStreams.from_seed(s.seed).replay.integers(2**63)))

    def handling(device: int, nth: int) -> float:
        return float(service.of(np.array([device]), np.array([nth]))[0])

    return handling


@dataclass
class _Tracked:
    """Token age and state at each segment start of the devices whose leaks are
    followed (rows: ``devices``, sorted), recorded as whole columns: following a device
    costs two small array copies per segment column, not a Python object per segment."""

    devices: NDArray[np.int64]
    """rows of the chunk (device ``lo + row`` of the fleet)"""
    times: NDArray[np.float64]
    """their rows of the chunk's ``times``"""
    age: NDArray[np.float64]
    online: NDArray[np.bool_]
    lo: int = 0

    @classmethod
    def empty(cls, devices: NDArray[np.int64], times: NDArray[np.float64], lo: int) -> _Tracked:
        shape = (len(devices), times.shape[1] - 1)
        return cls(devices, times[devices], np.zeros(shape), np.zeros(shape, dtype=bool), lo)

    def record(self, k: int, age: NDArray[np.float64], online: NDArray[np.bool_]) -> None:
        self.age[:, k] = age[self.devices]
        self.online[:, k] = online[self.devices]

    def segments(self, device: int, since: float) -> Iterator[_Segment]:
        """``device``'s segments (of positive length) from the one holding ``since``."""
        row = int(np.searchsorted(self.devices, device - self.lo))
        times = self.times[row]
        k = max(0, int(np.searchsorted(times, since, side="right")) - 1)
        for j in range(k, len(times) - 1):
            duration = float(times[j + 1] - times[j])
            if duration > 0:
                yield _Segment(
                    float(times[j]), float(self.age[row, j]), duration, bool(self.online[row, j])
                )


class _TrackedFleet:
    """The followed devices of every chunk."""

    def __init__(self) -> None:
        self.chunks: list[_Tracked] = []

    def segments(self, device: int, since: float) -> Iterator[_Segment]:
        for chunk in self.chunks:
            row = device - chunk.lo
            if row >= 0 and bool((chunk.devices == row).any()):
                return chunk.segments(device, since)
        raise KeyError(device)


class _Replay(NamedTuple):
    """What one walk over the segments found."""

    lockouts: _Lockouts
    totals: dict[str, NDArray[np.float64]]
    """per-device totals (seconds online, lockouts, refreshes, ...)"""
    tracked: _Tracked
    """the segments of the devices whose leaked tokens are followed"""
    stretches: _Stretches


class _Approvals(NamedTuple):
    """The technician queue's answer, one entry per lockout: ``wait`` is from lockout to
    approval (``nan`` when still unapproved at the horizon)."""

    device: NDArray[np.int64]
    at: NDArray[np.float64]
    wait: NDArray[np.float64]


class _Phase(NamedTuple):
    """The connectivity phase a device is in at t=0 (``start="steady"``)."""

    online: NDArray[np.bool_]
    elapsed: NDArray[np.float64]
    """time since the running period began"""
    residual: NDArray[np.float64]
    """time until it ends"""


def _steady_phase(conn: Connectivity, n: int, rng: np.random.Generator) -> _Phase:
    """The stationary phase of the alternating renewal process: online with probability
    mean(on) / (mean(on) + mean(off)), in a length-biased period split at a uniform
    point (exact for the plain process; the diurnal modulation of off periods is left
    out of this first period)."""
    p_on = mean(conn.on) / (mean(conn.on) + mean(conn.off))
    online = rng.uniform(0.0, 1.0, n) < p_on
    on_elapsed, on_residual = equilibrium(conn.on, rng, n)
    off_elapsed, off_residual = equilibrium(conn.off, rng, n)
    return _Phase(
        online,
        np.where(online, on_elapsed, off_elapsed),
        np.where(online, on_residual, off_residual),
    )


def _connectivity(
    conn: Connectivity,
    start: NDArray[np.float64],
    horizon: float,
    rng: np.random.Generator,
    steady: _Phase | None = None,
) -> list[NDArray[np.float64]]:
    """Own on/off boundaries column by column (online from ``start``, or from the end of
    the ``steady`` phase's running period, which toggles the state first)."""
    t = start.copy()
    columns: list[NDArray[np.float64]] = []
    n = len(t)
    if steady is not None:
        return _connectivity_from(conn, t + steady.residual, steady.online, horizon, rng)
    while n and t.min() < horizon:
        on = sample(conn.on, rng, n)
        off = sample(conn.off, rng, n)
        t = t + on
        if conn.diurnal_amplitude:
            phase = 2 * math.pi * ((t % DAY) / DAY - conn.diurnal_peak_hour / 24)
            off = off * (1 + conn.diurnal_amplitude * np.cos(phase))
        columns.append(t.copy())
        t = t + off
        columns.append(t.copy())
    return columns


def _connectivity_from(
    conn: Connectivity,
    first_end: NDArray[np.float64],
    was_online: NDArray[np.bool_],
    horizon: float,
    rng: np.random.Generator,
) -> list[NDArray[np.float64]]:
    """Boundaries after a first period ending at ``first_end``: devices that were
    online go off, then on; the others on, then off (the same draws per column as
    :func:`_connectivity`, so every policy meets the same weather)."""
    t = first_end.copy()
    columns: list[NDArray[np.float64]] = [t.copy()]
    n = len(t)
    while n and t.min() < horizon:
        on = sample(conn.on, rng, n)
        off = sample(conn.off, rng, n)
        if conn.diurnal_amplitude:
            off_from = np.where(was_online, t, t + on)
            phase = 2 * math.pi * ((off_from % DAY) / DAY - conn.diurnal_peak_hour / 24)
            off = off * (1 + conn.diurnal_amplitude * np.cos(phase))
        t = t + np.where(was_online, off, on)
        columns.append(t.copy())
        t = t + np.where(was_online, on, off)
        columns.append(t.copy())
    return columns


DEVICE_BLOCK = 10_000
"""Devices per random-stream block. A fleet's own connectivity and its message draws
come in blocks of this many devices, block b drawing from its own generator (block 0
from the scenario's stream, so fleets of up to this size draw exactly what they drew
before blocks existed; block b >= 1 from that stream's b-th spawned child). A block is
the unit the fleet is processed in: chunks (``simulate(..., chunk_devices=)``) are
whole blocks, so a result does not depend on the chunk size (``tests/sim/
test_chunked_fleet.py``), and a 100,000-device year needs one block's segments at a
time, not the whole fleet's (~92 MiB per 1,000 devices)."""


def _block_rng(seed: int, stream: str, block: int) -> np.random.Generator:
    """Block ``block``'s generator for ``stream`` (a :class:`RandomStreams` field):
    block 0 is the stream itself (a fresh generator in the same state), block b >= 1
    the stream's child b."""
    index = [f.name for f in fields(RandomStreams)].index(stream)
    key = (index,) if block == 0 else (index, block)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass(frozen=True)
class _Plan:
    """What a fleet draws per device (deployment, group, start phase) and per outage
    (its storm), whole-fleet and O(devices x outages); the segment matrices are drawn
    per block from it (:func:`_block_segments`)."""

    deploy: NDArray[np.float64]
    group: NDArray[np.int64]
    start_online: NDArray[np.bool_]
    start_residual: NDArray[np.float64]
    """steady start: time until the running period ends (empty otherwise)"""
    start_offline_for: NDArray[np.float64]
    start_cycle: NDArray[np.float64]
    outages: list[tuple[float, float, int]]
    out_start: NDArray[np.float64]
    out_end: NDArray[np.float64]
    storm_attempts: NDArray[np.float64]

    @property
    def size(self) -> int:
        return len(self.deploy)

    def blocks(self) -> int:
        return max(1, -(-self.size // DEVICE_BLOCK))


def _plan(s: Scenario, streams: RandomStreams) -> _Plan:
    n, horizon = s.fleet_size, s.duration
    steady = _steady_start(s)
    start_online = np.ones(n, dtype=bool)
    elapsed_off = np.zeros(n)
    residual = np.zeros(n) if steady else np.empty(0)
    deploy = (
        np.sort(streams.deployment.uniform(0, s.deployment_days * DAY, n))
        if s.deployment_days
        else np.zeros(n)
    )
    groups = s.groups or ()
    if groups:
        weights = np.array([g.weight for g in groups])
        counts = np.floor(weights / weights.sum() * n).astype(np.int64)
        counts[: n - counts.sum()] += 1
        group = np.repeat(np.arange(len(groups)), counts)
    else:
        group = np.zeros(n, dtype=np.int64)
    if steady:  # each group's start phase, in group order (as the fleet drew them)
        for g in range(max(1, len(groups))):
            members = np.flatnonzero(group == g)
            phase = _steady_phase(_group_connectivity(s, g), len(members), streams.start)
            start_online[members] = phase.online
            elapsed_off[members] = np.where(phase.online, 0.0, phase.elapsed)
            residual[members] = phase.residual
    # outages: scheduled and random, each with its storm of reconnects
    outages: list[tuple[float, float, int]] = []
    names = [g.name for g in groups]
    for sched in s.outages.scheduled:
        outages.append(
            (sched.start, sched.duration, -1 if sched.group is None else names.index(sched.group))
        )
    o = s.outages
    if o.random_per_day:
        count = streams.outages.poisson(o.random_per_day * s.duration_days)
        starts = np.sort(streams.outages.uniform(0, horizon, count))
        durations = sample(o.random_duration, streams.outages, count)
        for start, duration in zip(starts, durations, strict=True):
            scope = -1
            if o.random_scope == "site" and groups:
                scope = int(streams.outages.integers(len(groups)))
            outages.append((float(start), float(duration), scope))
    m = len(outages)
    out_start = np.full((n, m), np.inf)
    out_end = np.full((n, m), np.inf)
    attempts: list[NDArray[np.float64]] = []
    for j, (start, duration, scope) in enumerate(outages):
        hit = np.flatnonzero(((group == scope) if scope >= 0 else True) & (deploy < start))
        if not len(hit):
            continue
        storm = simulate_storm(
            len(hit), duration, s.backoff, streams.storms, o.broker_connects_per_second, horizon
        )
        out_start[hit, j] = start
        out_end[hit, j] = start + duration + storm.delays
        attempts.append(start + storm.attempt_times)
    # drawn apart from the policy (CRN), and whatever the lifetime (a cached fleet serves
    # every policy: :func:`_plan_for`)
    cycle = streams.start.uniform(0.0, 1.0, n) if steady else np.empty(0)
    return _Plan(
        deploy,
        group,
        start_online,
        residual,
        elapsed_off,
        cycle,
        outages,
        out_start,
        out_end,
        np.concatenate(attempts) if attempts else np.empty(0),
    )


def _group_connectivity(s: Scenario, g: int) -> Connectivity:
    groups = s.groups or ()
    return (groups[g].connectivity if groups and groups[g].connectivity else None) or (
        s.connectivity
    )


def _block_segments(
    s: Scenario, plan: _Plan, block: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Block ``block``'s segments: (times, online) as in :class:`Fleet`, its own
    connectivity drawn from the block's generator (group by group, column by column)
    and merged with the outages' depth."""
    lo, hi = block * DEVICE_BLOCK, min(plan.size, (block + 1) * DEVICE_BLOCK)
    nb, horizon = hi - lo, s.duration
    rng = _block_rng(s.seed, "connectivity", block)
    steady = _steady_start(s)
    group = plan.group[lo:hi]
    deploy = plan.deploy[lo:hi]
    start_online = plan.start_online[lo:hi]
    per_group: list[tuple[NDArray[np.int64], list[NDArray[np.float64]]]] = []
    for g in range(max(1, len(s.groups or ()))):
        rows = np.flatnonzero(group == g)
        phase = (
            _Phase(start_online[rows], np.empty(0), plan.start_residual[lo + rows])
            if steady
            else None
        )
        per_group.append(
            (rows, _connectivity(_group_connectivity(s, g), deploy[rows], horizon, rng, phase))
        )
    width = max(len(cols) for _, cols in per_group)
    m = len(plan.outages)
    # merge: own toggles and outage depth, sorted per device
    times = np.full((nb, 1 + width + 2 * m), np.inf)
    times[:, 0] = deploy
    for rows, cols in per_group:
        for j, column in enumerate(cols):
            times[rows, 1 + j] = column
    del per_group
    if m:
        times[:, 1 + width : 1 + width + m] = plan.out_start[lo:hi]
        times[:, 1 + width + m :] = plan.out_end[lo:hi]
        own_toggle = np.zeros(times.shape, dtype=np.int8)
        own_toggle[:, 1 : 1 + width] = 1
        depth = np.zeros(times.shape, dtype=np.int8)
        depth[:, 1 + width : 1 + width + m] = 1
        depth[:, 1 + width + m :] = -1
        order = np.argsort(times, axis=1, kind="stable")
        times = np.take_along_axis(times, order, axis=1)
        toggles = np.cumsum(np.take_along_axis(own_toggle, order, axis=1), axis=1, dtype=np.int32)
        del own_toggle
        in_outage = np.cumsum(np.take_along_axis(depth, order, axis=1), axis=1, dtype=np.int32) > 0
        del depth, order
    else:
        # own times are sorted per device already (a stable sort would leave them): the
        # k-th column follows k own toggles
        toggles = np.broadcast_to(np.arange(times.shape[1], dtype=np.int32), times.shape)
        in_outage = None
    own_on = ((toggles + ~start_online[:, None]) % 2) == 0
    del toggles
    online = own_on if in_outage is None else own_on & ~in_outage
    np.minimum(times, horizon, out=times)
    # drop columns that start at the horizon for every device
    keep = max(1, int((times < horizon).sum(axis=1).max())) if nb else 1
    # column-major: the replay walks the columns, each then contiguous
    trimmed = np.empty((nb, keep + 1), order="F")
    trimmed[:, :keep] = times[:, :keep]
    trimmed[:, keep] = horizon
    return trimmed, np.asfortranarray(online[:, :keep])


def _pad(
    parts: list[tuple[NDArray[np.float64], NDArray[np.bool_]]], horizon: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Blocks' segments as one matrix: narrower blocks end in empty segments (at the
    horizon, offline), which no step of the replay counts."""
    if len(parts) == 1:
        return parts[0]
    width = max(t.shape[1] for t, _ in parts)
    times = np.concatenate(
        [np.pad(t, ((0, 0), (0, width - t.shape[1])), constant_values=horizon) for t, _ in parts]
    )
    online = np.concatenate(
        [np.pad(o, ((0, 0), (0, width - 1 - o.shape[1])), constant_values=False) for _, o in parts]
    )
    return np.asfortranarray(times), np.asfortranarray(online)


class _Chunk(NamedTuple):
    """Devices ``lo`` to ``lo + len(times)`` (whole blocks from ``first_block``)."""

    lo: int
    first_block: int
    times: NDArray[np.float64]
    online: NDArray[np.bool_]


class _Segments:
    """A fleet's segments chunk by chunk: blocks kept when the fleet is small enough
    (:data:`FLEET_CACHE_BYTES`), else drawn again for each pass of the fixed point
    (their generators restart, so every pass sees the same fleet)."""

    def __init__(self, s: Scenario, plan: _Plan) -> None:
        self.scenario, self.plan = s, plan
        self.kept: dict[int, tuple[NDArray[np.float64], NDArray[np.bool_]]] = {}
        self.keep = True

    def block(self, b: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        if b in self.kept:
            return self.kept[b]
        times, online = _block_segments(self.scenario, self.plan, b)
        if times.nbytes * self.plan.blocks() > 1.25 * FLEET_CACHE_BYTES:
            self.keep = False  # too large to keep: do not hold blocks until it shows
        if self.keep and sum(t.nbytes for t, _ in self.kept.values()) + times.nbytes <= (
            FLEET_CACHE_BYTES
        ):
            times.setflags(write=False)
            online.setflags(write=False)
            self.kept[b] = (times, online)
        else:
            self.keep = False
            self.kept.clear()
        return times, online

    def chunks(self, chunk_devices: int | None) -> Iterator[_Chunk]:
        per_chunk = max(1, -(-(chunk_devices or DEVICE_BLOCK) // DEVICE_BLOCK))
        blocks = self.plan.blocks()
        for first in range(0, blocks, per_chunk):
            parts = [self.block(b) for b in range(first, min(blocks, first + per_chunk))]
            times, online = _pad(parts, self.scenario.duration)
            del parts
            yield _Chunk(first * DEVICE_BLOCK, first, times, online)


def draw_fleet(scenario: Scenario) -> Fleet:
    """The connectivity :func:`simulate` draws for ``scenario`` (seed included): hybrid
    runs apply it to real devices to compare them with the simulator's prediction.

    >>> from iiotsim.sim import Scenario
    >>> fleet = draw_fleet(Scenario(fleet_size=3, duration_days=1, seed=5))
    >>> fleet.times.shape[0], bool((fleet.times[:, -1] == 86400).all())
    (3, True)
    """
    s = scenario
    plan = _plan(s, RandomStreams.from_seed(s.seed))
    times, online = _pad([_block_segments(s, plan, b) for b in range(plan.blocks())], s.duration)
    steady = _steady_start(s)
    return Fleet(
        times,
        online,
        plan.deploy,
        plan.group,
        plan.storm_attempts,
        plan.outages,
        plan.start_online,
        _start_age(s, plan.start_offline_for, plan.start_cycle)
        if steady
        else np.zeros(s.fleet_size),
        plan.start_cycle,
        plan.start_offline_for,
    )


def _steady_start(s: Scenario) -> bool:
    """Does ``s`` start in its steady state? Only a fleet deployed at t=0: devices
    deployed over time start fresh at their deployment (real, not an artefact)."""
    return s.start == "steady" and not s.deployment_days


def _start_age(
    s: Scenario, elapsed_off: NDArray[np.float64], cycle: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Token ages at t=0 of a fleet in its steady state (an approximation): the age of a
    token refreshed on time, U(0, refresh_fraction x lifetime), plus, for a device
    offline at t=0, the time it has been offline. Devices awaiting approval at t=0 are
    not represented (they start with a token); the measured effect is in the docs."""
    lifetime = s.token.lifetime
    if lifetime is None:
        return np.zeros(len(elapsed_off))  # never refreshed, never expires
    return cycle * lifetime * s.token.refresh_fraction + elapsed_off


FLEET_CACHE_BYTES = 512 * 2**20
"""fleets up to this size (segment times) are kept for the next run in the process"""
_last_fleet: dict[bytes, _Segments] = {}


def _segments_for(s: Scenario, streams: RandomStreams) -> _Segments:
    """The fleet of ``s``, reusing the previous run's in this process when the two
    scenarios differ only in their token policy: a sweep's policies share one
    repetition's connectivity (common random numbers), so it is drawn once per
    repetition and worker, not per run (1.6-2.7 s of a 10,000-device year). The streams
    the fleet draws from are used by nothing else, so skipping them changes no other
    draw; only the start ages depend on the policy (computed by the caller)."""
    key = msgspec.json.encode(msgspec.structs.replace(s, token=TokenPolicy()))
    segments = _last_fleet.get(key)
    if segments is None:
        _last_fleet.clear()
        segments = _Segments(s, _plan(s, streams))
        _last_fleet[key] = segments
    segments.scenario = s
    return segments


def _add(target: NDArray[np.float64], index: NDArray[np.int64], values: Any) -> None:
    """``np.add.at`` via bincount (an order of magnitude faster)."""
    if not len(index):
        return
    weights = np.broadcast_to(np.asarray(values, dtype=np.float64), index.shape)
    target += np.bincount(index, weights=weights, minlength=len(target))[: len(target)]


class _Bins:
    """Time-series accumulators at the scenario's resolution (difference arrays)."""

    def __init__(self, horizon: float, resolution: float) -> None:
        self.resolution = resolution
        self.count = math.ceil(horizon / resolution)
        self.level = {
            k: np.zeros(self.count + 1)
            for k in ("online", "awaiting_approval", "offline", "locked_out")
        }
        self.rate = {k: np.zeros(self.count + 1) for k in REQUEST_KINDS}
        self.events = {k: np.zeros(self.count + 1) for k in REQUEST_KINDS}
        self.backlog_slope = np.zeros(self.count + 2)
        self.backlog_step = np.zeros(self.count + 2)
        # calls are buffered and applied in bulk: one bincount per kind, not per column
        self._pending: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        self._buffered = 0

    def _defer(self, method: str, kind: str, *arrays: Any, times: int = 1) -> None:
        self._pending.setdefault((method, kind), []).append(arrays)
        self._buffered += times * len(arrays[0])
        if self._buffered > 4_000_000:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending, self._buffered = self._pending, {}, 0
        for (method, kind), calls in pending.items():
            columns = [np.concatenate(parts) for parts in zip(*calls, strict=True)]
            getattr(self, f"_{method}")(kind, *columns)

    def interval(self, kind: str, a: NDArray[np.float64], b: NDArray[np.float64]) -> None:
        """Devices in state ``kind`` over [a, b) (time-weighted per bin)."""
        if len(a):
            self._defer("interval", kind, a, b)

    def spread(
        self,
        kind: str | tuple[str, ...],
        a: NDArray[np.float64],
        b: NDArray[np.float64],
        per_second: NDArray[np.float64] | float,
    ) -> None:
        """Requests at a steady rate over [a, b) (of each kind, when several: computed
        once)."""
        if len(a):
            rate = np.broadcast_to(np.asarray(per_second, dtype=np.float64), a.shape)
            kinds = (kind,) if isinstance(kind, str) else kind
            self._defer("spread", "|".join(kinds), a, b, rate, times=len(kinds))

    def at(
        self, kind: str, t: NDArray[np.float64], weight: NDArray[np.float64] | float = 1.0
    ) -> None:
        """Discrete requests at times t."""
        if len(t):
            w = np.broadcast_to(np.asarray(weight, dtype=np.float64), t.shape)
            self._defer("at", kind, t, w)

    def backlog(
        self, start: NDArray[np.float64], end: NDArray[np.float64], rate: float, cap: float
    ) -> None:
        """Expected outbox backlog of undeliverable stretches (see ``_backlog``)."""
        if rate > 0 and len(start):
            self._defer("backlog", f"{rate!r}|{cap!r}", start, end)

    def _bin(self, t: NDArray[np.float64]) -> NDArray[np.int64]:
        return np.clip((t / self.resolution).astype(np.int64), 0, self.count)

    def _interval(self, kind: str, a: NDArray[np.float64], b: NDArray[np.float64]) -> None:
        keep = b > a
        a, b = a[keep], b[keep]
        if not len(a):
            return
        arr = self.level[kind]
        # time-weighted: spread per second of state, exact at bin resolution
        r = self.resolution
        ia, ib = self._bin(a), self._bin(b)
        same = ia == ib
        _add(arr, ia[same], (b[same] - a[same]) / r)
        d = ~same
        _add(arr, ia[d], ((ia[d] + 1) * r - a[d]) / r)
        _add(arr, ib[d], (b[d] - ib[d] * r) / r)
        full_a, full_b = ia[d] + 1, ib[d]
        span = full_b > full_a
        if span.any():
            cover = np.zeros(self.count + 2)
            _add(cover, full_a[span], 1.0)
            _add(cover, full_b[span], -1.0)
            arr += np.cumsum(cover)[: self.count + 1]

    def _spread(
        self, kind: str, a: NDArray[np.float64], b: NDArray[np.float64], rate: NDArray[np.float64]
    ) -> None:
        keep = b > a
        rate = rate[keep]
        a, b = a[keep], b[keep]
        if not len(a):
            return
        cover = np.zeros(self.count + 2)
        r = self.resolution
        ia, ib = self._bin(a), self._bin(b)
        # approximate within the first and last bin by the share of the bin covered
        _add(cover, ia, rate * (1 - (a - ia * r) / r))
        _add(cover, ia + 1, rate * (a - ia * r) / r)
        _add(cover, ib, -rate * (1 - (b - ib * r) / r))
        _add(cover, ib + 1, -rate * (b - ib * r) / r)
        level = np.cumsum(cover)[: self.count + 1]
        for one in kind.split("|"):
            self.rate[one] += level

    def _at(self, kind: str, t: NDArray[np.float64], w: NDArray[np.float64]) -> None:
        _add(self.events[kind], self._bin(t), w)

    def _backlog(self, key: str, start: NDArray[np.float64], end: NDArray[np.float64]) -> None:
        """Backlog at bin edges: it grows at ``rate`` from ``start`` up to ``cap`` and is
        gone at ``end``."""
        rate, cap = (float(v) for v in key.split("|"))
        r, top = self.resolution, self.count + 1
        full = np.minimum(end, start + cap / rate)
        i0 = np.clip(np.floor(start / r).astype(np.int64) + 1, 0, top)
        i1 = np.clip(np.floor(full / r).astype(np.int64) + 1, 0, top)
        i2 = np.clip(np.ceil(end / r).astype(np.int64), 0, top)
        ramp = i1 > i0
        _add(self.backlog_slope, i0[ramp], rate)
        _add(self.backlog_slope, i1[ramp], -rate)
        _add(self.backlog_step, i0[ramp], -rate * start[ramp])
        _add(self.backlog_step, i1[ramp], rate * start[ramp])
        flat = i2 > i1
        _add(self.backlog_step, i1[flat], cap)
        _add(self.backlog_step, i2[flat], -cap)

    def frame(self) -> pd.DataFrame:
        self._flush()
        idx = pd.Index(np.arange(self.count) * self.resolution / HOUR, name="hours")
        data: dict[str, NDArray[np.float64]] = {}
        for k, v in self.level.items():
            data[k] = v[: self.count]
        for k in REQUEST_KINDS:
            data[f"{k}_per_s"] = (
                self.rate[k][: self.count] + self.events[k][: self.count] / self.resolution
            )
        edges = np.arange(self.count + 2) * self.resolution
        level = np.cumsum(self.backlog_slope) * edges + np.cumsum(self.backlog_step)
        data["backlog"] = np.maximum(0.0, level[: self.count])
        return pd.DataFrame(data, index=idx)


def _columns(matrix: NDArray[Any], block: int = 64) -> Iterator[NDArray[Any]]:
    """The columns of a row-major matrix as contiguous arrays, ``block`` at a time
    (cache-friendly: 10,000 x 1,460 times in 0.10 s instead of 0.19 s column by column);
    of a column-major one (the fleet's blocks) as they are."""
    if matrix.flags.f_contiguous:
        for k in range(matrix.shape[1]):
            yield matrix[:, k]
        return
    for start in range(0, matrix.shape[1], block):
        yield from np.ascontiguousarray(matrix[:, start : start + block].T)


def _replay(
    s: Scenario,
    chunk: _Chunk,
    start_age: NDArray[np.float64],
    delays: _Delays,
    service: _ServiceTimes,
    pt_revoked: NDArray[np.float64],
    bins: _Bins | None,
    track: NDArray[np.int64],
) -> _Replay:
    """Walk the segments: lockouts, per-device totals, tracked devices' segments and
    undeliverable stretches. Without ``bins`` (a fixed-point pass that is not reported)
    only what the next pass needs is computed: token ages and the lockouts; the totals
    are partial and no stretches or tracked segments are recorded (2-3x faster).

    The walk covers one chunk (devices ``chunk.lo`` on); what it returns names devices
    by their index in the fleet (totals: the chunk's rows)."""
    report = bins is not None
    times, online, lo = chunk.times, chunk.online, chunk.lo
    n = len(times)
    horizon = s.duration
    L = math.inf if s.token.lifetime is None else float(s.token.lifetime)
    fL = L * s.token.refresh_fraction
    steady = _steady_start(s)
    age = start_age[lo : lo + n].copy()
    pt_revoked = pt_revoked[lo : lo + n]
    permanent = np.zeros(n, dtype=bool)
    prev_on = np.ones(n, dtype=bool)
    undeliv_start = np.full(n, np.nan)
    tot = {
        k: np.zeros(n)
        for k in (
            "online",
            "delivering",
            "awaiting",
            "lockouts",
            "operations",
            "refreshes",
            "connects",
            "max_backlog",
            "lost",
            "produced_offline",
        )
    }
    result = _Lockouts()
    lockout_count = np.zeros(n, dtype=np.int64)
    mine = (track >= lo) & (track < lo + n)
    tracked = _Tracked.empty(track[mine] - lo, times, lo)
    stretches = _Stretches()
    lam = s.messages.rate_per_hour / HOUR
    cap = float(s.messages.outbox_capacity)
    # columns as contiguous arrays, transposed a block at a time (a column of the
    # row-major matrix is a strided gather that every use below would pay again)
    time_columns, online_columns = _columns(times), _columns(online)
    t1 = next(time_columns)
    for k in range(online.shape[1]):
        t0 = t1  # column k's end is column k+1's start
        t1 = next(time_columns)
        dur = t1 - t0
        on = next(online_columns) & ~permanent
        live = dur > 0
        # reconnect: offline before, online now
        back = on & ~prev_on & live
        if k == 0:
            back = np.zeros(n, dtype=bool)
        if back.any():
            tot["connects"][back] += 1
            if bins is not None:
                bins.at("connect", t0[back])
                bins.at("twin_get", t0[back])
            expired = back & (age >= L)
            if expired.any():
                idx = np.flatnonzero(expired)
                stuck = (t0[idx] >= pt_revoked[idx]) | s.token.wipe_store_on_expiry
                for_good = idx[stuck]
                if len(for_good):
                    permanent[for_good] = True
                    on[for_good] = False
                    result.permanent_device.append(for_good + lo)
                    result.permanent_time.append(t0[for_good])
                    result.permanent_column.append(np.full(len(for_good), k))
                recover = idx[~stuck]
                if len(recover):
                    # the queue's delay at the lockout's time, then its handling
                    handling = service.of(recover + lo, lockout_count[recover])
                    w = delays.of(t0[recover]) + handling
                    age[recover] = -w
                    lockout_count[recover] += 1
                    tot["lockouts"][recover] += 1
                    tot["operations"][recover] += 1 + np.floor(w / s.provisioning.operation_expiry)
                    result.lockout_device.append(recover + lo)
                    result.lockout_column.append(np.full(len(recover), k))
                    result.lockout_time.append(t0[recover].copy())
                    result.lockout_wait.append(w)
                    result.lockout_service.append(handling)
                    if bins is not None:
                        bins.at(
                            "provisioning",
                            t0[recover],
                            1 + np.floor(w / s.provisioning.operation_expiry),
                        )
                        bins.spread(
                            "provisioning",
                            t0[recover],
                            np.minimum(t0[recover] + w, horizon),
                            1 / s.provisioning.poll_interval,
                        )
                        done = t0[recover] + w
                        inside = done < horizon
                        bins.at("register", done[inside])
        # online segments: refreshes in closed form; awaiting approval while age < 0
        a = age
        if math.isfinite(L):
            r0 = np.maximum(0.0, fL - a)
            # a refresh due exactly at the horizon is after the run (a fresh start whose
            # horizon is a multiple of f x L put one there for every device in phase)
            fires = on & live & ((r0 < dur) | ((r0 == dur) & (t1 < horizon)))
            count = np.where(fires, 1 + np.floor((dur - r0) / fL), 0.0)
            # nor is a later one due exactly at the horizon: a device online from a fresh
            # start to a horizon that is a multiple of f x L refreshed there too (the
            # hybrid run found it: 112 refreshes predicted, 100 by 100 real devices a day)
            at_horizon = fires & (t1 >= horizon) & (count > 1) & ((dur - r0) == (count - 1) * fL)
            count = count - at_horizon
            new_age = np.where(fires, (dur - r0) - (count - 1) * fL, a + dur)
            if report:
                tot["refreshes"] += count
            if bins is not None and k == 0 and steady:
                # a steady start's refresh cycle is at a uniform phase (r0 ~ U(0, fL]):
                # its refreshes come at 1/fL on average from t=0 (no discrete first one,
                # which would pile the cycle's first refreshes onto the first fL)
                f = np.flatnonzero(on & live)
                bins.spread(REFRESH_KINDS, t0[f], t1[f], 1 / fL)
            elif bins is not None and fires.any():
                f = np.flatnonzero(fires)
                # the first refresh is a discrete event (often at reconnect), the rest
                # steady up to the last one (count - 1 of them: spread to the segment's
                # end, up to one too many per segment: +26 % at 1 d)
                first = t0[f] + r0[f]
                bins.at("refresh", first)
                bins.at("register", first)
                bins.at("connect", first)
                bins.spread(REFRESH_KINDS, first + 1e-9, first + (count[f] - 1) * fL, 1 / fL)
        else:
            new_age = a + dur
            r0 = np.full(n, np.inf)
        age = new_age
        if not report:
            prev_on = np.where(live, on, prev_on)
            continue
        tracked.record(k, a, on)
        waiting = np.where(on, np.clip(-a, 0, dur), 0.0)
        deliver_from = np.where(on, t0 + waiting, t1)
        tot["online"] += np.where(on, dur, 0.0)
        tot["awaiting"] += waiting
        tot["delivering"] += np.where(on, dur - waiting, 0.0)
        # undeliverable stretches (offline, or online awaiting approval)
        starts_undeliv = live & (deliver_from > t0) & np.isnan(undeliv_start)
        undeliv_start[starts_undeliv] = t0[starts_undeliv]
        ends = live & (deliver_from < t1) & ~np.isnan(undeliv_start)
        if ends.any():
            e = np.flatnonzero(ends)
            a_s, b_s = undeliv_start[e], deliver_from[e]
            stretches.start.append(a_s)
            stretches.end.append(b_s)
            stretches.device.append(e + lo)
            backlog = np.minimum(cap, lam * (b_s - a_s))
            np.maximum.at(tot["max_backlog"], e, backlog)
            if bins is not None:
                bins.backlog(a_s, b_s, lam, cap)
                bins.at("messages", b_s, backlog)
            undeliv_start[e] = np.nan
        if bins is not None:
            delivering_a = deliver_from[on & live]
            delivering_b = t1[on & live]
            bins.interval("online", delivering_a, delivering_b)
            bins.spread("messages", delivering_a, delivering_b, lam)
            w_on = on & live & (waiting > 0)
            bins.interval("awaiting_approval", t0[w_on], t0[w_on] + waiting[w_on])
            off = live & ~on & ~permanent
            bins.interval("offline", t0[off], t1[off])
        prev_on = np.where(live, on, prev_on)
    # open stretches at the horizon: backlog still waiting (not lost)
    still = np.flatnonzero(~np.isnan(undeliv_start))
    if len(still):
        a_s = undeliv_start[still]
        np.maximum.at(tot["max_backlog"], still, np.minimum(cap, lam * (horizon - a_s)))
        if bins is not None:
            bins.backlog(a_s, np.full(len(a_s), horizon + 2 * bins.resolution), lam, cap)
    if bins is not None and result.permanent_device:
        gone = np.concatenate(result.permanent_time)
        bins.interval("locked_out", gone, np.full(len(gone), horizon))
    if len(still):
        stretches.start.append(undeliv_start[still])
        stretches.end.append(np.full(len(still), np.inf))  # open at the horizon
        stretches.device.append(still + lo)
    return _Replay(result, tot, tracked, stretches)


def _queue(s: Scenario, p: _Lockouts) -> tuple[_Approvals, QueueState]:
    """The technicians' waits for one replay's lockouts, with the replay's handling times."""
    dev = np.concatenate(p.lockout_device) if p.lockout_device else np.empty(0, dtype=np.int64)
    at = np.concatenate(p.lockout_time) if p.lockout_time else np.empty(0)
    handling = np.concatenate(p.lockout_service) if p.lockout_service else np.empty(0)
    state = queue_state(at, handling, s.provisioning)
    return _Approvals(dev, at, state.done - at), state


class _Delays:
    """The delay before a technician starts on a lockout at time t, as the fixed point's
    current guess: at first the wait for working hours alone (a technician free), then
    each pass's queue blended in with weight :data:`FIXED_POINT_DAMPING` (undamped, the
    passes oscillate near saturation: 7,843 -> 1,052 -> 5,824 -> 1,268 lockouts)."""

    def __init__(self, hours: tuple[float, float] | None) -> None:
        self.hours = hours
        self.base = 1.0
        self.parts: list[tuple[float, QueueState]] = []

    def of(self, t: NDArray[np.float64]) -> NDArray[np.float64]:
        out = self.base * working_delay(t, self.hours)
        for weight, state in self.parts:
            out += weight * state.delay(t)
        return out

    def blend(self, state: QueueState, weight: float) -> None:
        self.base *= 1 - weight
        self.parts = [(w * (1 - weight), q) for w, q in self.parts] + [(weight, state)]


def _settled(previous: int, used: NDArray[np.float64], queued: NDArray[np.float64]) -> bool:
    """Has the fixed point settled (:data:`FIXED_POINT_TOLERANCE`)? ``previous`` is the
    previous pass's lockout count (-1 before the first); ``used`` the waits this pass
    replayed, ``queued`` the queue's waits for the same lockouts."""
    if not len(used):
        return True  # nothing met the queue: one pass is exact
    relative, lockouts, seconds = FIXED_POINT_TOLERANCE
    if previous >= 0 and abs(len(used) - previous) > max(relative * previous, lockouts):
        return False
    a, b = float(used.mean()), float(queued.mean())
    return abs(a - b) <= max(relative * b, seconds)


def _leak_exposure(s: Scenario, segs: Iterable[_Segment], leak: float, detected: float) -> float:
    """How long a Registration Token leaked at ``leak`` stays usable (the platform's
    ``usable_until`` with the device's refresh that supersedes it and the revocation)."""
    L = math.inf if s.token.lifetime is None else float(s.token.lifetime)
    fL = L * s.token.refresh_fraction
    issued = None
    superseded = None
    for t0, a, dur, on in segs:
        if issued is None:
            if t0 + dur <= leak:
                continue
            # the segment holding the leak: token age at the leak
            x = leak - t0
            if on and math.isfinite(L):
                r0 = max(0.0, fL - a)
                if x >= r0:
                    age = (x - r0) % fL
                    nxt = t0 + r0 + (math.floor((x - r0) / fL) + 1) * fL
                else:
                    age, nxt = a + x, t0 + r0
                if age < 0:
                    return 0.0  # no token yet (awaiting approval): nothing to leak
                issued = leak - age
                if nxt < t0 + dur:
                    superseded = nxt
                    break
            else:
                age = a + x
                if age < 0:
                    return 0.0
                issued = leak - age
            continue
        if on and math.isfinite(L):
            r0 = max(0.0, fL - a)
            if a >= L:
                break  # expired while offline: a lockout, the leaked token is dead
            if r0 <= dur:
                superseded = t0 + r0
                break
    if issued is None:
        return 0.0
    until = usable_until(
        expires_at=None if not math.isfinite(L) else EPOCH + timedelta(seconds=issued + L),
        revoked_at=None if not math.isfinite(detected) else EPOCH + timedelta(seconds=detected),
        superseded_at=None if superseded is None else EPOCH + timedelta(seconds=superseded),
        grace_period=s.token.grace_period,
    )
    if until is None:
        return math.inf
    return max(0.0, (until - EPOCH).total_seconds() - leak)


class _Report(NamedTuple):
    """A reported pass: the replay of every chunk with its timeline, the devices'
    totals, and the messages of its undeliverable stretches (drawn per block)."""

    lockouts: _Lockouts
    totals: dict[str, NDArray[np.float64]]
    tracked: _TrackedFleet
    bins: _Bins
    produced: NDArray[np.int64]
    lost: NDArray[np.float64]
    waiting_at_end: NDArray[np.float64]
    latencies: list[tuple[NDArray[np.float64], float]]
    """per block: a sample of delivery latencies and the messages it stands for"""
    connectivity_events: list[pd.DataFrame]


LATENCY_SAMPLES = 200_000
"""delivery latencies sampled per fleet (per block: its share of the devices)"""


def _report(
    s: Scenario,
    segments: _Segments,
    chunk_devices: int | None,
    start_age: NDArray[np.float64],
    delays: _Delays,
    service: _ServiceTimes,
    pt_revoked: NDArray[np.float64],
    track: NDArray[np.int64],
) -> _Report:
    n, horizon, plan = s.fleet_size, s.duration, segments.plan
    bins = _Bins(horizon, s.timeline_resolution)
    lam = s.messages.rate_per_hour / HOUR
    cap = s.messages.outbox_capacity
    blocks = plan.blocks()
    # messages: Poisson counts per device (block 0's stream first, as before blocks)
    first_rng = _block_rng(s.seed, "messages", 0)
    produced = first_rng.poisson(lam * (horizon - plan.deploy))
    lost, waiting_at_end = np.zeros(n), np.zeros(n)
    lockouts, tracked = _Lockouts(), _TrackedFleet()
    totals: dict[str, NDArray[np.float64]] = {}
    latencies: list[tuple[NDArray[np.float64], float]] = []
    connectivity: list[pd.DataFrame] = []
    for chunk in segments.chunks(chunk_devices):
        replay = _replay(s, chunk, start_age, delays, service, pt_revoked, bins, track)
        lockouts.extend(replay.lockouts)
        tracked.chunks.append(replay.tracked)
        size = len(chunk.times)
        for key, values in replay.totals.items():
            totals.setdefault(key, np.zeros(n))[chunk.lo : chunk.lo + size] = values
        if n <= EVENTS_PER_DEVICE_LIMIT:
            connectivity += _connectivity_events(chunk, plan.start_online)
        # each block's stretches (in the order a replay of the block alone finds them)
        sa, sb, sd = replay.stretches.arrays()
        del replay
        chunk_blocks = range(
            chunk.first_block, min(blocks, chunk.first_block + -(-size // DEVICE_BLOCK))
        )
        block_of = sd // DEVICE_BLOCK if len(chunk_blocks) > 1 else None
        for b in chunk_blocks:
            if block_of is None:
                a, e, d = sa, sb, sd
            else:
                pick = np.flatnonzero(block_of == b)
                a, e, d = sa[pick], sb[pick], sd[pick]
            rng = first_rng if b == 0 else _block_rng(s.seed, "messages", b)
            open_end = ~np.isfinite(e)
            length = np.where(open_end, horizon - a, e - a)
            in_stretch = rng.poisson(lam * np.maximum(length, 0))
            over = np.maximum(0, in_stretch - cap)
            lost += np.bincount(d[~open_end], weights=over[~open_end], minlength=n)
            waiting_at_end += np.bincount(
                d[open_end], weights=np.minimum(in_stretch, cap)[open_end], minlength=n
            )
            # not lost yet
            waiting_at_end += np.bincount(d[open_end], weights=over[open_end], minlength=n)
            closed = ~open_end
            first, last = b * DEVICE_BLOCK, min(n, (b + 1) * DEVICE_BLOCK)
            delivering = totals["delivering"][first:last].sum()
            samples = (
                LATENCY_SAMPLES if blocks == 1 else round(LATENCY_SAMPLES * (last - first) / n)
            )
            latencies.append(
                _latencies(
                    a[closed], e[closed], in_stretch[closed], cap, delivering * lam, rng, samples
                )
            )
    return _Report(
        lockouts.merged(),
        totals,
        tracked,
        bins,
        produced,
        lost,
        waiting_at_end,
        latencies,
        connectivity,
    )


def _lean_pass(
    s: Scenario,
    segments: _Segments,
    chunk_devices: int | None,
    start_age: NDArray[np.float64],
    delays: _Delays,
    service: _ServiceTimes,
    pt_revoked: NDArray[np.float64],
    track: NDArray[np.int64],
) -> _Lockouts:
    """A fixed-point pass: the lockouts only (no timeline, totals or stretches)."""
    lockouts = _Lockouts()
    for chunk in segments.chunks(chunk_devices):
        replay = _replay(s, chunk, start_age, delays, service, pt_revoked, None, track)
        lockouts.extend(replay.lockouts)
    return lockouts.merged()


def simulate(scenario: Scenario, *, chunk_devices: int | None = None) -> SimulationResult:
    """Run one scenario; identical scenarios (seed included) give identical results.

    The fleet is processed in chunks of ``chunk_devices`` devices (rounded up to whole
    blocks of :data:`DEVICE_BLOCK`; default one block), which bounds the memory: the
    results do not depend on it (the timeline's sums up to float rounding)."""
    s = scenario
    streams = RandomStreams.from_seed(s.seed)
    segments = _segments_for(s, streams)
    plan = segments.plan
    n, horizon = s.fleet_size, s.duration
    start_age = (
        _start_age(s, plan.start_offline_for, plan.start_cycle) if _steady_start(s) else np.zeros(n)
    )
    # leaks (drawn before the replay: PT revocations change who can re-provision)
    lk = s.leaks
    rt_rng, pt_rng = streams.registration_token_leaks, streams.provisioning_token_leaks
    rt_dev = rt_rng.integers(0, n, lk.registration_tokens)
    rt_time = np.maximum(plan.deploy[rt_dev], rt_rng.uniform(0, horizon, lk.registration_tokens))
    rt_detect = rt_time + np.where(
        rt_rng.uniform(size=lk.registration_tokens) < lk.detection_probability,
        sample(lk.detection_delay, rt_rng, lk.registration_tokens),
        np.inf,
    )
    pt_time = pt_rng.uniform(0, horizon, lk.provisioning_tokens)
    pt_detect = pt_time + np.where(
        pt_rng.uniform(size=lk.provisioning_tokens) < lk.detection_probability,
        sample(lk.detection_delay, pt_rng, lk.provisioning_tokens),
        np.inf,
    )
    pt_revoked = np.full(n, np.inf)
    if lk.provisioning_tokens:
        if s.token.shared_provisioning_token:
            pt_revoked[:] = pt_detect.min()
        else:
            pt_dev = pt_rng.integers(0, n, lk.provisioning_tokens)
            np.minimum.at(pt_revoked, pt_dev, pt_detect)
    # RT-leak exposure is measured on the leak events and, to reach the stated standard
    # error, further leaks on a random sample of followed devices (:func:`_exposures`)
    exposure_devices = _exposure_devices(s, streams.exposure)
    track = np.unique(np.concatenate([rt_dev, exposure_devices]))
    # the fleet/queue fixed point: pass 1 waits as if a technician were free; each next
    # pass replays with the queue's waits for the previous pass's lockouts, until settled
    service = _ServiceTimes(s, int(streams.replay.integers(2**63)))
    delays = _Delays(s.provisioning.working_hours)
    passes, converged, previous = 0, False, -1
    args = (s, segments, chunk_devices, start_age)
    while True:
        # only the reported pass needs a timeline, totals and messages (it costs 5-10
        # lean passes): the passes are lean, and the settled one is replayed in full
        lockouts = _lean_pass(*args, delays, service, pt_revoked, track)
        passes += 1
        queue, state = _queue(s, lockouts)
        used = np.concatenate(lockouts.lockout_wait) if lockouts.lockout_wait else np.empty(0)
        converged = _settled(previous, used, queue.wait)
        if converged or passes >= FIXED_POINT_MAX_PASSES:
            break
        previous = len(used)
        delays.blend(state, FIXED_POINT_DAMPING)
    # the settled pass once more, in full (replays are exact: the same lockouts)
    report = _report(*args, delays, service, pt_revoked, track)
    second, tot, tracked, bins = report.lockouts, report.totals, report.tracked, report.bins
    # reported: the final pass's lockouts with the waits that pass replayed (its timeline
    # shows them); approvals after the horizon are censored (still waiting at the end)
    dev, at = queue.device, queue.at
    wait = np.where(at + used <= horizon, used, np.nan)
    approved = at + wait
    # storms' attempts and duplicate-ID pairs (steady reconnect rates)
    bins.at("connect", plan.storm_attempts)
    pairs = s.pitfalls.duplicate_id_pairs
    dup_rate = 0.0
    if pairs:
        b = s.backoff
        delay = b.base if b.reset == "connect" else b.cap
        if b.kind == "full_jitter":
            delay /= 2
        dup_rate = 2 * pairs / delay  # each takeover sends the other device back
        bins.rate["connect"] += dup_rate
    produced, lost = report.produced, report.lost
    delivered = np.maximum(0, produced - lost - report.waiting_at_end)
    # leaks: the platform's rules may revoke sooner than the external detection
    rt_detect = _rule_detection(s, tracked, rt_dev, rt_time, rt_detect)
    exposures = _exposures(
        s, tracked, plan.deploy, rt_dev, rt_time, rt_detect, exposure_devices, streams.exposure
    )
    # frames
    events = _events(
        s,
        plan,
        report.connectivity_events,
        dev,
        at,
        approved,
        second,
        rt_dev,
        rt_time,
        rt_detect,
        pt_time,
        pt_detect,
    )
    device_days = float((horizon - plan.deploy).sum() / DAY)
    permanent = np.zeros(n, dtype=bool)
    if second.permanent_device:
        permanent[np.concatenate(second.permanent_device)] = True
    approvals = np.bincount(dev[np.isfinite(wait)], minlength=n)  # within the run
    devices = pd.DataFrame(
        {
            "group": [s.groups[g].name for g in plan.group] if s.groups else "fleet",
            "online_fraction": tot["delivering"] / np.maximum(horizon - plan.deploy, 1e-9),
            "lockouts": tot["lockouts"].astype(np.int64),
            "provisioning_operations": tot["operations"].astype(np.int64),
            "technician_approvals": approvals,
            "refreshes": tot["refreshes"].astype(np.int64),
            "connects": tot["connects"].astype(np.int64),
            "messages_produced": produced,
            "messages_delivered": delivered.astype(np.int64),
            "messages_lost": lost.astype(np.int64),
            "max_backlog": tot["max_backlog"],
            "permanently_locked_out": permanent,
        },
        index=pd.Index(np.arange(n), name="device"),
    )
    timeline = bins.frame()
    recover = wait[np.isfinite(wait)]
    summary = pd.Series(
        {
            "devices": n,
            "device_days": device_days,
            "lockouts": int(tot["lockouts"].sum()),
            "lockouts_per_1000_device_days": 1000 * tot["lockouts"].sum() / device_days,
            "permanent_lockouts": int(permanent.sum()),
            "lockout_recovery_mean_h": float(recover.mean() / HOUR) if len(recover) else 0.0,
            "lockout_recovery_p95_h": _rank(recover, 0.95) / HOUR,
            "technician_requests_per_day": len(dev) / s.duration_days,
            "technician_approvals_per_day": int(np.isfinite(wait).sum()) / s.duration_days,
            "unapproved_at_end": int(np.isnan(approved).sum()),
            "fixed_point_passes": passes,
            "fixed_point_converged": converged,
            "rt_leak_exposure_mean_h": float(np.mean(exposures) / HOUR) if len(exposures) else 0.0,
            "rt_leak_exposure_p95_h": _rank(exposures, 0.95) / HOUR,
            "rt_leak_exposure_samples": len(exposures),
            "rt_leak_exposure_mean_rse": _relative_se(exposures),
            "pt_leak_exposure_mean_h": float(np.mean(pt_detect - pt_time) / HOUR)
            if len(pt_time)
            else 0.0,
            "online_fraction": float(
                tot["delivering"].sum() / max(1e-9, (horizon - plan.deploy).sum())
            ),
            "refreshes_per_device_day": float(tot["refreshes"].sum() / device_days),
            "duplicate_id_connects_per_s": dup_rate,
            "messages_produced": int(produced.sum()),
            "messages_delivered": int(delivered.sum()),
            "messages_lost": int(lost.sum()),
            "message_latency_p50_s": _latency_rank(report.latencies, 0.50),
            "message_latency_p99_s": _latency_rank(report.latencies, 0.99),
            **{f"peak_{k}_per_s": float(timeline[f"{k}_per_s"].max()) for k in REQUEST_KINDS},
            **{f"mean_{k}_per_s": float(timeline[f"{k}_per_s"].mean()) for k in REQUEST_KINDS},
        },
        name="summary",
    )
    return SimulationResult(s, events, devices, timeline, summary)


EXPOSURE_DEVICES = 256
"""devices followed (beside the leak events' own) to sample leaks for the exposure"""
EXPOSURE_BATCH = 500
"""leaks sampled per round until the exposure's relative standard error is reached"""


def _exposure_devices(s: Scenario, rng: np.random.Generator) -> NDArray[np.int64]:
    if s.leaks.exposure_relative_se is None:
        return np.empty(0, dtype=np.int64)
    n = s.fleet_size
    return np.sort(rng.choice(n, min(n, EXPOSURE_DEVICES), replace=False)).astype(np.int64)


def _relative_se(values: NDArray[np.float64]) -> float:
    """Standard error of the mean over the mean (``nan`` when undefined: fewer than two
    values, a zero mean, or an infinite exposure)."""
    if len(values) < 2 or not np.isfinite(values).all() or values.mean() <= 0:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(len(values)) / values.mean())


def _exposures(
    s: Scenario,
    tracked: _TrackedFleet,
    deploy: NDArray[np.float64],
    rt_dev: NDArray[np.int64],
    rt_time: NDArray[np.float64],
    rt_detect: NDArray[np.float64],
    followed: NDArray[np.int64],
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Exposure of every leak event, then of further leaks sampled the same way (a
    random followed device, a uniform time after its deployment, the same detection) in
    batches of :data:`EXPOSURE_BATCH` until the standard error of the mean is at most
    ``leaks.exposure_relative_se`` of it, or ``leaks.exposure_max_samples`` leaks."""
    lk = s.leaks

    def measure(
        dev: NDArray[np.int64], t: NDArray[np.float64], det: NDArray[np.float64]
    ) -> list[float]:
        return [
            _leak_exposure(s, tracked.segments(int(d), float(x)), float(x), float(y))
            for d, x, y in zip(dev, t, det, strict=True)
        ]

    values = measure(rt_dev, rt_time, rt_detect)
    target = lk.exposure_relative_se
    while target is not None and len(followed) and len(values) < lk.exposure_max_samples:
        current = np.asarray(values)
        rse = _relative_se(current)
        if len(values) >= 2 and not (rse > target):  # met, or undefined (inf / 0 / constant)
            break
        size = min(EXPOSURE_BATCH, lk.exposure_max_samples - len(values))
        dev = followed[rng.integers(0, len(followed), size)]
        t = np.maximum(deploy[dev], rng.uniform(0, s.duration, size))
        det = t + np.where(
            rng.uniform(size=size) < lk.detection_probability,
            sample(lk.detection_delay, rng, size),
            np.inf,
        )
        values += measure(dev, t, _rule_detection(s, tracked, dev, t, det))
    return np.asarray(values, dtype=np.float64)


def _rule_detection(
    s: Scenario,
    tracked: _TrackedFleet,
    dev: NDArray[np.int64],
    leak: NDArray[np.float64],
    detected: NDArray[np.float64],
) -> NDArray[np.float64]:
    """The revocation times of leaked RTs with the platform's leak rules
    (``Leaks.detection_rules``): an ``"online"`` thief holds a session from the leak on, so
    rule (a) (one credential, two addresses: ``iiot_server.domain.leaks.shared_credential``)
    fires at the device's first online instant at or after the leak, and the response
    follows ``response_delay`` later; the earlier of that and ``detected`` (the external
    detection). A rule firing after the token died changes nothing (``usable_until``)."""
    lk = s.leaks
    if not lk.detection_rules or lk.thief != "online" or not len(dev):
        return detected
    caught = np.array(
        [
            _first_online(tracked.segments(int(d), float(t)), float(t))
            for d, t in zip(dev, leak, strict=True)
        ]
    )
    return np.minimum(detected, caught + lk.response_delay)


def _first_online(segs: Iterable[_Segment], since: float) -> float:
    """The first instant at or after ``since`` the device is online (inf: never again)."""
    for t0, _age, dur, on in segs:
        if t0 + dur <= since:
            continue
        if on:
            return max(t0, since)
    return math.inf


def _rank(values: NDArray[np.float64], q: float) -> float:
    """The nearest-rank quantile (well-defined with infinite values); 0 when empty."""
    if not len(values):
        return 0.0
    ordered = np.sort(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


def _latencies(
    sa: NDArray[np.float64],
    sb: NDArray[np.float64],
    counts: NDArray[np.int64] | NDArray[np.float64],
    cap: int,
    online_messages: float,
    rng: np.random.Generator,
    samples: int = LATENCY_SAMPLES,
) -> tuple[NDArray[np.float64], float]:
    """A sample of delivery latencies: messages sent while delivering go at once (0 s);
    one produced u seconds into an undeliverable stretch of length D waits D - u (the
    oldest beyond the outbox capacity are dropped, so only the newest ``cap`` stay).
    Returned with the number of delivered messages the sample stands for."""
    kept = np.minimum(counts, cap).astype(np.float64)
    total = online_messages + kept.sum()
    if total <= 0:
        return np.empty(0), 0.0
    n_off = round(samples * kept.sum() / total)
    out = np.zeros(samples)
    if n_off and kept.sum() > 0:
        pick = rng.choice(len(sa), n_off, p=kept / kept.sum())
        length = sb[pick] - sa[pick]
        window = np.where(counts[pick] > cap, length * cap / np.maximum(counts[pick], 1), length)
        out[:n_off] = rng.uniform(0, 1, n_off) * window
    return out, float(total)


def _latency_rank(samples: list[tuple[NDArray[np.float64], float]], q: float) -> float:
    """The nearest-rank quantile of the blocks' latency samples, each sample value
    weighted by the messages it stands for (one block: :func:`_rank` of its sample)."""
    if len(samples) == 1:
        return _rank(samples[0][0], q)
    values = np.concatenate([v for v, _ in samples])
    if not len(values):
        return 0.0
    weights = np.concatenate([np.full(len(v), w / len(v)) for v, w in samples if len(v)])
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    i = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(values[order][min(i, len(values) - 1)])


def _events(
    s: Scenario,
    plan: _Plan,
    connectivity: list[pd.DataFrame],
    dev: NDArray[np.int64],
    at: NDArray[np.float64],
    approved: NDArray[np.float64],
    p: _Lockouts,
    rt_dev: NDArray[np.int64],
    rt_time: NDArray[np.float64],
    rt_detect: NDArray[np.float64],
    pt_time: NDArray[np.float64],
    pt_detect: NDArray[np.float64],
) -> pd.DataFrame:
    parts: list[pd.DataFrame] = []

    def add(t: NDArray[np.float64], d: NDArray[np.int64] | int, kind: str) -> None:
        t = np.asarray(t, dtype=np.float64)
        keep = np.isfinite(t) & (t <= s.duration)
        dd = np.broadcast_to(np.asarray(d, dtype=np.int64), t.shape)
        parts.append(pd.DataFrame({"time": t[keep], "device": dd[keep], "kind": kind}))

    add(at, dev, "lockout")
    add(approved, dev, "approved")
    if p.permanent_device:
        add(
            np.concatenate(p.permanent_time),
            np.concatenate(p.permanent_device),
            "permanent_lockout",
        )
    add(rt_time, rt_dev, "rt_leak")
    add(rt_detect, rt_dev, "rt_revoked")
    add(pt_time, -1, "pt_leak")
    add(pt_detect, -1, "pt_revoked")
    for start, duration, _scope in plan.outages:
        add(np.array([start]), -1, "outage_start")
        add(np.array([start + duration]), -1, "outage_end")
    parts += connectivity
    frame = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["time", "device", "kind"])
    )
    frame["kind"] = pd.Categorical(frame["kind"])
    return frame.sort_values(["time", "device", "kind"], kind="stable").reset_index(drop=True)


def _connectivity_events(chunk: _Chunk, start_online: NDArray[np.bool_]) -> list[pd.DataFrame]:
    """A chunk's reconnects and disconnects (a device offline at t=0 did not
    disconnect there)."""
    n = len(chunk.times)
    times, online = chunk.times[:, :-1], chunk.online
    first = start_online[chunk.lo : chunk.lo + n, None]
    prev = np.concatenate([first, online[:, :-1]], axis=1)
    live = chunk.times[:, 1:] > times
    parts = []
    for mask, kind in (
        (online & ~prev & live, "reconnect"),
        (~online & prev & live, "disconnect"),
    ):
        d, k = np.nonzero(mask)
        t = times[d, k]
        parts.append(
            pd.DataFrame({"time": t, "device": (d + chunk.lo).astype(np.int64), "kind": kind})
        )
    return parts
