"""What the audit trail's indexes cost and buy (issue 15, revision 0009).

Revision 0009 kept two of the five indexes on ``audit_events``: ``(workspace_id, id)`` for
the listing and its paging, ``(workspace_id, target_id, id)`` for a device's or token's
history. Filters by action, actor and request id now walk the workspace's rows newest
first until a page is full. This prints both sides of that trade on SQLite (WAL,
synchronous=NORMAL, as the platform runs it):

* **write**: server CPU of a flow-step-like transaction (one ``UPDATE`` of a device row,
  plus one audit row through :func:`record_audit`, committed), without a row, with a row
  and the head's two indexes, and with a row and revision 0005's five;
* **read**: :func:`list_audit_events` (one page of 100) on a trail of ``--rows`` events
  (default 1,000,000: 10,000 devices' provisioning and a month of daily refreshes),
  with the head's indexes and with the three dropped ones re-created.

    .venv/bin/python benchmarks/audit_query.py            # ~40 s
    .venv/bin/python benchmarks/audit_query.py --rows 200000

Measured 2026-11-27 07:28 (session 15, load 0.7, nothing else running), default arguments:

* write, µs of CPU per transaction (median of 3): no row 24.6, a row with the head's two
  indexes 59.5, with revision 0005's five 84.8. A provisioning flow writes four rows in
  four transactions: ~0.14 ms of CPU with two indexes, ~0.24 ms with five (a flow costs
  the server ~4 ms).
* read, one page of 100 on 1,000,000 events: newest, and a device's history, 0.7-0.9 ms
  either way; by actor, action or request id 0.23-0.78 ms with the five indexes and
  228-368 ms with two (the walk over the workspace's rows: ~0.25 µs a row). An action
  prefix (``operation.``) does not use its index in SQLite (``LIKE`` is case-insensitive):
  105 ms with it, 368 ms without. So a rare filter on a trail of ten million events
  would take ~2.5 s; a device's history stays indexed.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from iiot_server.services.audit import AuditFilter, list_audit_events, record_audit
from iiot_server.store import migrations
from iiot_server.store.database import _sqlite_pragmas
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

START = datetime(2026, 1, 1, tzinfo=UTC)
WORKSPACE = "default"
TECHNICIANS = [f"api_key:tech-{n}" for n in range(5)]
# the indexes revision 0009 dropped: {name: columns}
DROPPED: dict[str, list[str]] = migrations.script_directory().get_revision("0009").module.DROPPED


def sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", _sqlite_pragmas)
    migrations.upgrade(engine)
    return engine


def trail(rows: int, devices: int) -> Iterator[tuple[object, ...]]:
    """A fleet's trail: per device initiated, approved (by one of five technicians),
    completed, registered, then daily refreshes until ``rows`` events exist. Each event
    its own request id, as each is its own request."""
    n = 0
    per_device = max(4, rows // devices)
    for d in range(devices):
        device = f"pump-{d:05d}"
        steps = [
            ("provisioning_token:pt-1", "operation.initiated", "provisioning_operation"),
            (TECHNICIANS[d % len(TECHNICIANS)], "operation.approved", "provisioning_operation"),
            ("provisioning_token:pt-1", "operation.completed", "provisioning_operation"),
            (f"device:{device}", "device.registered", "device"),
        ] + [(f"device:{device}", "token.refreshed", "device")] * (per_device - 4)
        for k, (actor, action, kind) in enumerate(steps):
            if n == rows:
                return
            at = (START + timedelta(minutes=d, days=max(0, k - 3))).timestamp()
            target = device if kind == "device" else f"op-{d:05d}"
            yield (at, WORKSPACE, actor, action, kind, target, secrets.token_hex(8))
            n += 1


def fill(engine: Engine, rows: int, devices: int) -> list[str]:
    """Insert the trail (sorted by time, as the platform appends it); returns request ids
    of a few events spread over it."""
    events = sorted(trail(rows, devices))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO audit_events (at, workspace_id, actor, action, target_kind, target_id,"
            " request_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            events,
        )
    return [events[i][6] for i in (0, len(events) // 2, len(events) - 1)]  # type: ignore[misc]


def best_ms(call: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def write_cost(path: Path, indexes: str, transactions: int) -> float:
    """Server CPU µs per flow-step transaction: an UPDATE, optionally an audit row."""
    engine = sqlite_engine(path)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE step (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.exec_driver_sql("INSERT INTO step VALUES (1, 0)")
        if indexes == "five":
            for name, columns in DROPPED.items():
                conn.exec_driver_sql(f"CREATE INDEX {name} ON audit_events ({', '.join(columns)})")
    with engine.connect() as conn:
        t0 = time.process_time()
        for i in range(transactions):
            with conn.begin():
                conn.exec_driver_sql("UPDATE step SET n = n + 1 WHERE id = 1")
                if indexes != "no row":
                    record_audit(
                        conn,
                        action="token.refreshed",
                        target_kind="device",
                        target_id=f"pump-{i % 10_000:05d}",
                        workspace_id=WORKSPACE,
                        actor=f"device:pump-{i % 10_000:05d}",
                        after={"registrationTokenId": secrets.token_hex(8)},
                    )
        return (time.process_time() - t0) / transactions * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--transactions", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(
            f"write: {args.transactions} transactions of one UPDATE (+ one audit row), SQLite WAL"
        )
        for label in ("no row", "two", "five"):
            costs = [
                write_cost(root / f"w-{label}-{k}.db", label, args.transactions) for k in range(3)
            ]
            print(
                f"  {label:>6} {'indexes' if label != 'no row' else '       '}"
                f"  {statistics.median(costs):6.1f} µs CPU per transaction (median of 3:"
                f" {', '.join(f'{c:.1f}' for c in costs)})"
            )
        engine = sqlite_engine(root / "trail.db")
        t0 = time.perf_counter()
        requests = fill(engine, args.rows, args.devices)
        print(f"read: a trail of {args.rows:,} events, {args.devices:,} devices"
              f" (filled in {time.perf_counter() - t0:.1f} s); one page of 100, best of 5")  # fmt: skip
        queries = {
            "newest": AuditFilter(),
            "a device's history": AuditFilter(target_kind="device", target_id="pump-04242"),
            "a technician's approvals": AuditFilter(actor=TECHNICIANS[2]),
            "a device as actor": AuditFilter(actor="device:pump-04242"),
            "every approval": AuditFilter(action="operation.approved"),
            "operations (prefix)": AuditFilter(action="operation."),
            "a workspace action (none)": AuditFilter(action="workspace."),
            "a request id (newest)": AuditFilter(request_id=requests[2]),
            "a request id (middle)": AuditFilter(request_id=requests[1]),
            "a request id (oldest)": AuditFilter(request_id=requests[0]),
        }
        timings: dict[str, list[float]] = {name: [] for name in queries}
        for phase in ("two", "five"):
            if phase == "five":
                with engine.begin() as conn:
                    for name, columns in DROPPED.items():
                        conn.exec_driver_sql(
                            f"CREATE INDEX {name} ON audit_events ({', '.join(columns)})"
                        )
                    conn.exec_driver_sql("ANALYZE")
            with engine.connect() as conn:
                for name, matching in queries.items():
                    found: list[int] = []

                    def page(m: AuditFilter = matching, out: list[int] = found) -> None:
                        out[:] = [e.id for e in list_audit_events(conn, WORKSPACE, m, limit=100)]

                    timings[name].append(best_ms(page))
                    timings[name].append(len(found))
        print(f"  {'query':<28} {'rows':>5} {'2 indexes (head)':>17} {'5 indexes (0005)':>17}")
        for name, (two, rows_two, five, rows_five) in timings.items():
            assert rows_two == rows_five, name
            print(f"  {name:<28} {int(rows_two):>5} {two:>14.2f} ms {five:>14.2f} ms")
        with engine.connect() as conn:
            size = conn.execute(text("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")).scalar_one()  # fmt: skip
        print(f"  database with five indexes: {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
