"""The ``iiotsim`` commands a technician or admin types against a running platform.

    iiotsim token create NAME [--device-id ID] [--max-registration-token-lifetime 1d] ...
    iiotsim token pause ID [--reason TEXT]   /   iiotsim token resume ID
    iiotsim operations [--state pending|approved|completed|cancelled|all]
    iiotsim approve CODE-or-ID [--device-id ID] [--lifetime 12h] [--infinite-lifetime]
    iiotsim cancel CODE-or-ID
    iiotsim approve-batch [--token PT_ID] [--prefix P] [--pattern GLOB] [--attribute K=V]
                          [--created-after T] [--created-before T] [--id ID] [--code CODE]
                          [--limit N] [--dry-run] [--reason TEXT] [--lifetime 12h]
    iiotsim cancel-batch  (the same filter) [--state pending|approved] [--dry-run]
    iiotsim devices
    iiotsim messages DEVICE [--stream S] [--limit N] [--after SEQ]
    iiotsim alerts [--state open|acknowledged|all] [--kind K] [--device-id ID] [--acknowledge ID]
    iiotsim admin-key create [--data-dir DIR | --database-url URL]

All but ``admin-key create`` call the platform's HTTP API through
:class:`iiotsim.admin.AdminClient`; they find it from ``--server`` / ``--api-key`` or the
environment (``IIOT_SERVER``, ``IIOT_ADMIN_KEY``), defaulting to where ``iiotsim serve``
listens by default. A refusal prints the platform's problem and exits 1, never a
traceback. ``admin-key create`` writes a new admin key straight into a platform's
database (through the server's own API-key service), for when the key ``serve`` printed
at first start is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from iiot_server.api.models import BatchOut, OperationOut
from iiot_server.domain.tokens import DeviceIdOverrideMode, LifetimeOverrideMode
from iiot_server.settings import DEFAULT_DATA_DIR, sqlite_url

from .admin import AdminClient
from .errors import PlatformError

DEFAULT_SERVER = "http://127.0.0.1:8000"
"""Where ``iiotsim serve`` listens without options (``--host 127.0.0.1 --port 8000``)."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90s``, ``15m``, ``12h``, ``1d``, ``2w`` or ``1d12h``.

    >>> [parse_duration(t) for t in ("3600", "15m", "1d", "1d12h", "1.5h")]
    [3600.0, 900.0, 86400.0, 129600.0, 5400.0]
    """
    compact = text.strip().lower().replace(" ", "")
    parts = list(_DURATION_PART.finditer(compact))
    if not compact or "".join(p.group(0) for p in parts) != compact:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: give seconds (3600) or a number with a unit "
            "s, m, h, d or w (90s, 15m, 12h, 1d, 1d12h)"
        )
    return float(sum(float(p.group(1)) * _UNIT_SECONDS[p.group(2)] for p in parts))


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``45 s``, ``12 min``, ``3.5 h``, ``2 d``; None is "none".

    >>> [format_duration(s) for s in (45, 720, 12600, 172800, None)]
    ['45 s', '12 min', '3.5 h', '2 d', 'none']
    """
    if seconds is None:
        return "none"
    if abs(seconds) < 60:
        return f"{seconds:.0f} s"
    if abs(seconds) < 3600:
        return f"{seconds / 60:.0f} min"
    if abs(seconds) < 86400:
        return f"{round(seconds / 3600, 1):g} h"
    return f"{round(seconds / 86400, 1):g} d"


def _time(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, the header in capitals."""
    header = [name.upper() for name in header]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (header, *rows)]  # fmt: skip
    return "\n".join(lines)


# Connection to the platform -----------------------------------------------------------


class _CommandError(Exception):
    """A command cannot go on; its message is printed as ``error: ...`` (exit 1)."""


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("platform")
    group.add_argument(
        "--server",
        default=None,
        help=f"platform URL (default: $IIOT_SERVER, else {DEFAULT_SERVER}, where "
        "`iiotsim serve` listens by default)",
    )
    group.add_argument(
        "--api-key",
        default=None,
        help="API key ak_... (default: $IIOT_ADMIN_KEY; `iiotsim serve` prints one at "
        "first start, `iiotsim admin-key create` makes a new one)",
    )
    group.add_argument(
        "--ca-cert",
        default=None,
        help="PEM file of the CA to trust for an https:// platform (default: $IIOT_CA_CERT, "
        "else the system's trust store; `iiotsim serve --tls` prints its development CA)",
    )
    group.add_argument(
        "--workspace",
        default=None,
        help="the workspace to act in (default: $IIOT_WORKSPACE, else `default`); a "
        "workspace's API key acts in its own only",
    )
    return options


def _client(args: argparse.Namespace) -> AdminClient:
    server = args.server or os.environ.get("IIOT_SERVER") or DEFAULT_SERVER
    key = args.api_key or os.environ.get("IIOT_ADMIN_KEY")
    if not key:
        raise _CommandError(
            "no API key: pass --api-key ak_... or set IIOT_ADMIN_KEY (`iiotsim serve` "
            "printed the admin key at its first start; `iiotsim admin-key create` makes "
            "a new one)"
        )
    ca_cert = args.ca_cert or os.environ.get("IIOT_CA_CERT") or None
    workspace = args.workspace or os.environ.get("IIOT_WORKSPACE") or None
    return AdminClient(server, key, timeout=30.0, ca_cert=ca_cert, workspace=workspace)


def _run_against_platform(
    command: Callable[[AdminClient, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """``command`` with a client, the platform's refusals and unreachable servers turned
    into one ``error:`` line and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            with _client(args) as admin:
                try:
                    return command(admin, args)
                except httpx.TransportError as exc:
                    raise _CommandError(
                        f"cannot reach the platform at {admin.base_url} ({exc}); is "
                        "`iiotsim serve` running there? (--server or IIOT_SERVER)"
                    ) from None
        except PlatformError as exc:
            message = f"{exc.title}: {exc.detail}" if exc.detail else exc.title
            if exc.field:
                message += f" (field: {exc.field})"
            if exc.status == 401:
                message += " (check --api-key or IIOT_ADMIN_KEY)"
            print(f"error: {message}", file=sys.stderr)
            return 1
        except _CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


# Commands ---------------------------------------------------------------------------------


def _token_create(admin: AdminClient, args: argparse.Namespace) -> int:
    created = admin.create_provisioning_token(
        args.name,
        device_id=args.device_id,
        device_id_override=args.device_id_override,
        max_registration_token_lifetime=args.max_registration_token_lifetime,
        registration_token_lifetime_override=args.registration_token_lifetime_override,
        allow_infinite_lifetime=args.allow_infinite_lifetime,
    )
    mode = DeviceIdOverrideMode(created.device_id_override)
    if created.device_id is not None:
        who = f"{created.device_id} (override: {mode.value})"
    elif mode.device_must_choose:
        who = f"the device gives it at init, e.g. --device-id pump-1 ({mode.value})"
    else:
        who = f"({mode.value})"
    print(f"Created Provisioning Token {created.name!r} (id {created.id})")
    print(f"  Device ID:                        {who}")
    print(
        "  Max Registration Token lifetime:  "
        f"{format_duration(created.max_registration_token_lifetime)}"
        f"{'; infinite allowed' if created.allow_infinite_lifetime else ''}"
        f" (override at approval: {created.registration_token_lifetime_override})"
    )
    print("The Provisioning Token (shown once, keep it):")
    print(created.provisioning_token, flush=True)
    return 0


def _token_pause(admin: AdminClient, args: argparse.Namespace) -> int:
    token = admin.pause_token(args.id, reason=args.reason)
    why = f" ({token.paused_reason})" if token.paused_reason else ""
    print(f"Paused Provisioning Token {token.name!r} (id {token.id}){why}: it opens no new")
    print(f"operations until resumed (iiotsim token resume {token.id})", flush=True)
    return 0


def _token_resume(admin: AdminClient, args: argparse.Namespace) -> int:
    token = admin.resume_token(args.id)
    print(f"Resumed Provisioning Token {token.name!r} (id {token.id})", flush=True)
    return 0


def _operations(admin: AdminClient, args: argparse.Namespace) -> int:
    state = None if args.state == "all" else args.state
    operations = admin.list_operations(state=state)
    if not operations:
        print(f"No {'' if state is None else state + ' '}Provisioning Operations.")
        return 0
    now = admin.server_time()
    print(_table(
        ("code", "device id", "state", "age", "expires in", "operation id"),
        [_operation_row(op, now) for op in operations],
    ))  # fmt: skip
    return 0


def _operation_row(op: OperationOut, now: datetime | None) -> list[str]:
    age = "-" if now is None else format_duration((now - op.created_at).total_seconds())
    if op.state not in ("pending", "approved"):
        expires = "-"
    elif now is None:
        expires = _time(op.expires_at)
    else:
        left = (op.expires_at - now).total_seconds()
        expires = format_duration(left) if left > 0 else "expired"
    return [op.verification_code, op.device_id or "(at approval)", str(op.state), age, expires,
            op.id]  # fmt: skip


def _approve(admin: AdminClient, args: argparse.Namespace) -> int:
    op = admin.approve_operation(
        args.code_or_id,
        device_id=args.device_id,
        registration_token_lifetime=args.lifetime,
        infinite_lifetime=args.infinite_lifetime,
        reason=args.reason,
    )
    print(
        f"Approved {op.verification_code} (operation {op.id}): device {op.device_id}; it "
        "receives its Registration Token at its next poll."
    )
    return 0


def _cancel(admin: AdminClient, args: argparse.Namespace) -> int:
    op = admin.cancel_operation(args.code_or_id, reason=args.reason)
    print(f"Cancelled {op.verification_code} (operation {op.id}, device {op.device_id or '-'}).")
    return 0


def _batch_filter(args: argparse.Namespace) -> dict[str, Any]:
    attributes = {}
    for pair in args.attribute or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _CommandError(f"--attribute {pair!r}: give KEY=VALUE, e.g. site=hall-3")
        attributes[key] = value
    selection = {
        "provisioningTokenId": args.token,
        "deviceIdPrefix": args.prefix,
        "deviceIdPattern": args.pattern,
        "attributes": attributes or None,
        "createdAfter": args.created_after,
        "createdBefore": args.created_before,
        "ids": args.id,
        "verificationCodes": args.code,
        "state": getattr(args, "state", None),
    }
    return {k: v for k, v in selection.items() if v is not None}


def _print_batch(answer: BatchOut, verb: str) -> int:
    """The table of results, a summary line; exit 1 when some failed or were left out."""
    if answer.results:
        print(_table(
            ("code", "device id", "result", "reason", "operation id"),
            [[r.verification_code or "-", r.device_id or "-", r.result,
              (r.problem or {}).get("detail") or r.reason or "", r.provisioning_operation_id or "-"]
             for r in answer.results],
        ))  # fmt: skip
    counts = ", ".join(f"{n} {result}" for result, n in sorted(answer.counts.items()))
    print(f"{'Dry run: ' if answer.dry_run else ''}{answer.matched} matched"
          f"{': ' + counts if counts else ''}.")  # fmt: skip
    status = 0
    if answer.truncated:
        print(
            f"warning: only the first {len(answer.results)} of {answer.matched} were "
            f"{'looked at' if answer.dry_run else verb}; run the command again for the rest",
            file=sys.stderr,
        )
        status = 1
    if answer.counts.get("failed"):
        print(f"warning: {answer.counts['failed']} failed (see REASON)", file=sys.stderr)
        status = 1
    return status


def _approve_batch(admin: AdminClient, args: argparse.Namespace) -> int:
    answer = admin.approve_operations(
        _batch_filter(args),
        dry_run=args.dry_run,
        reason=args.reason,
        limit=args.limit,
        registration_token_lifetime=args.lifetime,
        infinite_lifetime=args.infinite_lifetime,
    )
    return _print_batch(answer, "approved")


def _cancel_batch(admin: AdminClient, args: argparse.Namespace) -> int:
    answer = admin.cancel_operations(
        _batch_filter(args), dry_run=args.dry_run, reason=args.reason, limit=args.limit
    )
    return _print_batch(answer, "cancelled")


def _devices(admin: AdminClient, args: argparse.Namespace) -> int:
    convergence = getattr(args, "convergence", None)
    devices = admin.devices(
        convergence=convergence, desired_property=getattr(args, "property", None)
    )
    if not devices:
        if convergence:
            print(f"No device has a desired property {convergence}.")
        else:
            print("No devices yet: approve a Provisioning Operation (`iiotsim operations`).")
        return 0
    rows = [
        [
            d.device_id,
            "yes" if d.connected else "no",
            _time(d.provisioned_at),
            _time(d.last_connected_at),
            d.registration_token_status or "-",
            _time(d.registration_token_expires_at),
        ]
        for d in devices
    ]
    print(_table(
        ("device id", "connected", "provisioned", "last connected", "token", "token expires"),
        rows,
    ))  # fmt: skip
    return 0


def _provenance(admin: AdminClient, args: argparse.Namespace) -> int:
    twin = admin.get_twin(args.device_id)
    found = admin.twin_provenance(args.device_id).properties
    if not found:
        print(f"{args.device_id} has no desired properties.")
        return 0
    rows = []
    for name, p in found.items():
        state = twin.convergence.get(name)
        by = f"{p.configuration_id} (priority {p.priority})" if p.configuration_id else p.source
        others = ", ".join(
            f"{c.configuration_id}={json.dumps(c.value)}" + ("" if c.applies else " (not yet)")
            for c in p.configurations
        )
        rows.append([
            name, json.dumps(p.value)[:40], by, _time(p.set_at),
            state.state if state else "-", others or "-",
        ])  # fmt: skip
    print(_table(
        ("property", "value", "set by", "set at", "convergence", "configurations setting it"),
        rows,
    ))  # fmt: skip
    return 0


_PAYLOAD_WIDTH = 60


def _messages(admin: AdminClient, args: argparse.Namespace) -> int:
    messages = admin.list_device_messages(
        args.device_id, stream=args.stream, after=args.after, limit=args.limit
    )
    if not messages:
        print(
            f"No messages from {args.device_id}{' after ' + str(args.after) if args.after else ''}."
        )
        return 0
    rows = []
    for m in messages:
        payload = m.payload if m.encoding == "utf-8" else f"(base64) {m.payload}"
        if len(payload) > _PAYLOAD_WIDTH:
            payload = payload[: _PAYLOAD_WIDTH - 1] + "…"
        rows.append([str(m.seq), _time(m.received_at), m.stream, f"{m.size} B", payload])
    print(_table(("seq", "received", "stream", "size", "payload"), rows))
    if len(messages) == args.limit:
        print(f"(more: --after {messages[-1].seq})")
    return 0


def _alerts(admin: AdminClient, args: argparse.Namespace) -> int:
    if args.acknowledge:
        alert = admin.acknowledge_alert(args.acknowledge)
        print(f"Alert {alert.id} acknowledged at {_time(alert.acknowledged_at)}.")
        return 0
    alerts = admin.alerts(
        kind=args.kind,
        severity=args.severity,
        device_id=args.device_id,
        state=None if args.state == "all" else args.state,
        limit=args.limit,
    )
    if not alerts:
        print("No alerts.")
        return 0
    rows = [
        [
            a.id,
            _time(a.at),
            a.severity,
            a.kind,
            a.device_id or f"PT {a.provisioning_token_id}",
            str(a.occurrences),
            a.response or "-",
            a.state,
        ]
        for a in alerts
    ]
    print(_table(
        ("id", "raised", "severity", "kind", "subject", "seen", "response", "state"), rows
    ))  # fmt: skip
    return 0


def _audit(admin: AdminClient, args: argparse.Namespace) -> int:
    events = admin.audit(
        action=args.action,
        actor=args.actor,
        device_id=args.device,
        target_id=args.target,
        request_id=args.request_id,
        limit=args.limit,
    )
    if not events:
        print("No audit events.")
        return 0
    rows = [
        [
            str(e.id),
            _time(e.at),
            e.action,
            f"{e.target_kind} {e.target_id}",
            e.actor if e.actor_role is None else f"{e.actor} ({e.actor_role})",
            e.reason or "-",
            e.request_id or "-",
        ]
        for e in events
    ]
    print(_table(("id", "at", "action", "target", "actor", "reason", "request"), rows))
    return 0


def _admin_key_create(args: argparse.Namespace) -> int:
    """A new admin key in the platform's database: the server's own
    :class:`~iiot_server.services.api_keys.ApiKeyService`, so it is stored as the platform
    stores every key (hashed). A running platform accepts it at once."""
    from iiot_server.clock import SystemClock
    from iiot_server.services.api_keys import ApiKeyService
    from iiot_server.store.database import Database, sync_url

    url = args.database_url or (
        sqlite_url(args.data_dir) if args.data_dir else os.environ.get("IIOT_DATABASE_URL")
    ) or sqlite_url(DEFAULT_DATA_DIR)  # fmt: skip
    parsed = sync_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            print("error: an in-memory database has no keys to add to", file=sys.stderr)
            return 1
        if not Path(parsed.database).is_file():
            print(
                f"error: no platform database at {parsed.database}: give the data directory "
                "`iiotsim serve` uses (--data-dir DIR, or --database-url URL); it is created "
                "at its first start",
                file=sys.stderr,
            )
            return 1

    async def create() -> str:
        db = await asyncio.get_running_loop().run_in_executor(None, Database.open, url)
        try:
            created = await ApiKeyService(db, SystemClock()).create(args.name, args.role)
            return created.secret
        finally:
            db.close()

    try:
        secret = asyncio.run(create())
    except Exception as exc:  # a database that cannot be opened or written: say which
        print(f"error: could not create the key in {parsed!r}: {exc}", file=sys.stderr)
        return 1
    print(f"New {args.role} API key {args.name!r} (shown once, keep it):")
    print(secret, flush=True)
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the technician/admin commands on the ``iiotsim`` parser's subcommands."""
    connection = _connection_options()

    token = commands.add_parser("token", help="Provisioning Tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create",
        parents=[connection],
        help="create a Provisioning Token; prints its secret (pt_...) once",
        description="Create a Provisioning Token and print its secret once. Without "
        "--device-id the device names itself at init (iiot-device run --device-id ...).",
    )
    create.add_argument("name", help="a name for the token, e.g. the production line")
    create.add_argument("--device-id", help="the Device ID devices with this token get")
    create.add_argument(
        "--device-id-override",
        choices=[m.value for m in DeviceIdOverrideMode],
        help="who may choose the Device ID (default: enforced_at_init without --device-id, "
        "disabled with it)",
    )
    create.add_argument(
        "--max-registration-token-lifetime",
        type=parse_duration,
        metavar="DURATION",
        help="longest Registration Token lifetime: seconds or 90s, 15m, 12h, 1d, 2w "
        "(default: no maximum)",
    )
    create.add_argument(
        "--registration-token-lifetime-override",
        choices=[m.value for m in LifetimeOverrideMode],
        default=LifetimeOverrideMode.DISABLED.value,
        help="whether the technician may (or must) choose the lifetime at approval",
    )
    create.add_argument(
        "--allow-infinite-lifetime",
        action="store_true",
        help="allow Registration Tokens that never expire",
    )
    create.set_defaults(run=_run_against_platform(_token_create))
    pause = token_commands.add_parser(
        "pause",
        parents=[connection],
        help="pause a Provisioning Token: devices cannot start provisioning with it until "
        "it is resumed (reversible, unlike revocation)",
    )
    pause.add_argument("id", help="the token's id (not its secret)")
    pause.add_argument("--reason", help="why, kept on the token and in the audit trail")
    pause.set_defaults(run=_run_against_platform(_token_pause))
    resume = token_commands.add_parser(
        "resume", parents=[connection], help="resume a paused Provisioning Token"
    )
    resume.add_argument("id", help="the token's id (not its secret)")
    resume.set_defaults(run=_run_against_platform(_token_resume))

    operations = commands.add_parser(
        "operations",
        parents=[connection],
        help="Provisioning Operations (pending ones, with their verification codes)",
    )
    operations.add_argument(
        "--state",
        choices=["pending", "approved", "completed", "cancelled", "all"],
        default="pending",
    )
    operations.set_defaults(run=_run_against_platform(_operations))

    approve = commands.add_parser(
        "approve",
        parents=[connection],
        help="approve an operation by the code the device shows (or its id)",
    )
    approve.add_argument("code_or_id", metavar="CODE-or-ID", help="e.g. WDJB-MJHT or wdjbmjht")
    approve.add_argument("--device-id", help="the Device ID, where the token lets you choose")
    approve.add_argument(
        "--lifetime",
        type=parse_duration,
        metavar="DURATION",
        help="Registration Token lifetime, where the token lets you choose (e.g. 12h)",
    )
    approve.add_argument(
        "--infinite-lifetime", action="store_true", help="a token that never expires"
    )
    approve.add_argument("--reason", help="why (kept in the audit trail)")
    approve.set_defaults(run=_run_against_platform(_approve))

    cancel = commands.add_parser(
        "cancel", parents=[connection], help="cancel an operation by its code (or its id)"
    )
    cancel.add_argument("code_or_id", metavar="CODE-or-ID")
    cancel.add_argument("--reason", help="why (kept in the audit trail)")
    cancel.set_defaults(run=_run_against_platform(_cancel))

    audit = commands.add_parser(
        "audit", parents=[connection], help="the audit trail, newest first (admin key)"
    )
    audit.add_argument("--action", help="e.g. operation.approved, or a prefix: operation.")
    audit.add_argument("--actor", help="e.g. api_key:<id>, device:<Device ID>, system")
    audit.add_argument("--device", metavar="DEVICE_ID", help="events on this device")
    audit.add_argument("--target", metavar="ID", help="events on this id (token, operation, ...)")
    audit.add_argument("--request-id", help="events of this request (its X-Request-Id)")
    audit.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    audit.set_defaults(run=_run_against_platform(_audit))

    selection = argparse.ArgumentParser(add_help=False)
    matching = selection.add_argument_group(
        "which operations (every option given must hold; at least one)"
    )
    matching.add_argument("--token", metavar="PT_ID", help="started with this Provisioning Token")
    matching.add_argument("--prefix", help="Device ID starts with this (case-sensitive)")
    matching.add_argument("--pattern", metavar="GLOB", help="Device ID glob: * any, ? one")
    matching.add_argument(
        "--attribute", action="append", metavar="KEY=VALUE", help="attribute equals (repeat)"
    )
    matching.add_argument("--created-after", metavar="ISO_TIME", help="e.g. 2026-11-27T08:00Z")
    matching.add_argument("--created-before", metavar="ISO_TIME")
    matching.add_argument("--id", action="append", help="this operation id (repeat)")
    matching.add_argument("--code", action="append", help="this verification code (repeat)")
    batch_options = selection.add_argument_group("batch")
    batch_options.add_argument(
        "--dry-run", action="store_true", help="show what would happen, change nothing"
    )
    batch_options.add_argument("--reason", help="why (kept in the audit trail)")
    batch_options.add_argument(
        "--limit", type=int, help="at most this many (default and most: 1000 per call)"
    )

    approve_batch = commands.add_parser(
        "approve-batch",
        parents=[connection, selection],
        help="approve every pending operation that matches (e.g. --token PT_ID --prefix "
        "line3-), one result per operation; --dry-run first",
    )
    approve_batch.add_argument(
        "--lifetime",
        type=parse_duration,
        metavar="DURATION",
        help="Registration Token lifetime, where the tokens let you choose (e.g. 12h)",
    )
    approve_batch.add_argument(
        "--infinite-lifetime", action="store_true", help="tokens that never expire"
    )
    approve_batch.set_defaults(run=_run_against_platform(_approve_batch))

    cancel_batch = commands.add_parser(
        "cancel-batch",
        parents=[connection, selection],
        help="cancel every pending or approved operation that matches",
    )
    cancel_batch.add_argument(
        "--state", choices=["pending", "approved"], help="only these (default: both)"
    )
    cancel_batch.set_defaults(run=_run_against_platform(_cancel_batch))

    devices = commands.add_parser("devices", parents=[connection], help="provisioned devices")
    devices.add_argument(
        "--convergence",
        choices=("pending", "converged", "drifted", "failed"),
        help="only devices with a desired property in this state",
    )
    devices.add_argument("--property", help="with --convergence: this desired property")
    devices.set_defaults(run=_run_against_platform(_devices))

    provenance = commands.add_parser(
        "provenance",
        parents=[connection],
        help="who set each desired property of a device (configuration or manual patch)",
    )
    provenance.add_argument("device_id", metavar="DEVICE")
    provenance.set_defaults(run=_run_against_platform(_provenance))

    messages = commands.add_parser(
        "messages", parents=[connection], help="a device's stored messages, oldest first"
    )
    messages.add_argument("device_id", metavar="DEVICE")
    messages.add_argument("--stream", help="only this stream (default: all)")
    messages.add_argument("--limit", type=int, default=20, help="at most this many (20)")
    messages.add_argument("--after", type=int, default=0, help="after this seq (paging)")
    messages.set_defaults(run=_run_against_platform(_messages))

    alerts = commands.add_parser(
        "alerts", parents=[connection], help="leak-detection alerts, newest first"
    )
    alerts.add_argument(
        "--state", choices=["open", "acknowledged", "all"], default="open", help="(open)"
    )
    alerts.add_argument(
        "--kind",
        choices=[
            "shared_credential",
            "token_replay",
            "provisioning_rate",
            "provisioning_device_ids",
            "connection_flapping",
        ],
    )
    alerts.add_argument("--severity", choices=["low", "medium", "high"])
    alerts.add_argument("--device-id", help="only this device's alerts")
    alerts.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    alerts.add_argument("--acknowledge", metavar="ALERT-ID", help="acknowledge this alert")
    alerts.set_defaults(run=_run_against_platform(_alerts))

    admin_key = commands.add_parser("admin-key", help="admin API keys")
    admin_key_commands = admin_key.add_subparsers(dest="admin_key_command", required=True)
    key_create = admin_key_commands.add_parser(
        "create",
        help="create a new admin API key in a platform's database (the first one is "
        "printed only at the first start of `iiotsim serve`)",
    )
    where = key_create.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        type=Path,
        help=f"the data directory `iiotsim serve` uses (default: ./{DEFAULT_DATA_DIR}/)",
    )
    where.add_argument(
        "--database-url", help="the --database-url given to `iiotsim serve` (or IIOT_DATABASE_URL)"
    )
    key_create.add_argument("--name", default="admin (iiotsim admin-key create)")
    key_create.add_argument("--role", choices=["admin", "technician"], default="admin")
    key_create.set_defaults(run=_admin_key_create)
