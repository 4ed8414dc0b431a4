r"""``iiot-device run``: a virtual device (a program can be a device).

    iiot-device run --provisioning-token pt_... --server http://127.0.0.1:8000 --db device.db \
        --device-id pump-1

Prints the verification code for a technician, then sends a sample telemetry message
every ``--interval`` seconds and prints desired-property changes, until Ctrl+C.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .api import ProvisioningOperation
from .client import DesiredProperties, DeviceClient
from .clock import SystemClock
from .errors import DeviceError, DeviceIdRefused


def _show_operation(op: ProvisioningOperation) -> None:
    print(
        f"Verification code: {op.verification_code} (operation {op.id}, expires "
        f"{op.expires_at:%Y-%m-%d %H:%M:%S %Z}); waiting for a technician to approve...",
        flush=True,
    )


def _show_desired(desired: DesiredProperties) -> None:
    print(f"desired properties v{desired.version}: {json.dumps(desired.properties)}", flush=True)


def _run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        client = DeviceClient.start(
            args.provisioning_token,
            args.db,
            server_url=args.server,
            device_id=args.device_id,
            on_provisioning_operation=_show_operation,
            on_desired_properties=_show_desired,
            ca_cert=args.ca_cert,
        )
    except DeviceIdRefused as exc:
        hint = "" if args.device_id else " (give the device its ID: --device-id ID)"
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    except (DeviceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    clock = SystemClock()
    print(f"device {client.device_id} running; sending to stream {args.stream!r}", flush=True)
    count = 0
    try:
        with client:
            while not stop.is_set() and (args.count is None or count < args.count):
                now = clock.now()
                body = {"time": now.isoformat(), "sequence": count, "temperature": 20 + count % 7}
                client.send_message(json.dumps(body), stream=args.stream)
                count += 1
                print(
                    f"sent #{count} ({client.status}, {client.pending_messages_count} pending)",
                    flush=True,
                )
                clock.wait(args.interval, stop)
            if args.count is not None:
                client.wait_sent(args.interval * 10 + 30)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iiot-device", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a virtual device")
    run.add_argument("--provisioning-token", required=True, help="the device's PT (pt_...)")
    run.add_argument("--server", required=True, help="platform URL, e.g. http://127.0.0.1:8000")
    run.add_argument(
        "--ca-cert",
        default=None,
        help="PEM file of the CA to trust for an https:// platform (`iiotsim serve --tls` "
        "prints its path); default: the system's trust store",
    )
    run.add_argument("--db", required=True, help="the device's local SQLite database")
    run.add_argument("--device-id", help="Device ID to ask for (if the token allows)")
    run.add_argument("--stream", default="telemetry")
    run.add_argument("--interval", type=float, default=5.0, help="seconds between messages")
    run.add_argument("--count", type=int, help="stop after this many messages (default: run)")
    run.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
