"""``python -m iiot_server``: run the platform server in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from .domain.errors import SettingsError
from .runner import ServerRunner
from .settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's command-line options (shared with ``iiotsim serve``)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: SQLite in ./iiot-data/; "
        "e.g. postgresql+psycopg://user:pw@host/db)",
    )
    parser.add_argument("--mqtt-port", type=int, default=1883, help="embedded MQTT broker port")
    parser.add_argument("--no-mqtt", action="store_true", help="run the HTTP API only")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iiot_server", description=__doc__)
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def _default_admin_key_hint(_: Settings) -> str:
    return (
        "Admin API key: printed at this database's first start (stored hashed, never shown "
        "again); an admin can create more (POST /api/v1/api-keys)"
    )


def serve(
    args: argparse.Namespace,
    *,
    admin_key_hint: Callable[[Settings], str] = _default_admin_key_hint,
) -> int:
    """Run the server with parsed :func:`add_arguments` options until SIGINT/SIGTERM.
    Exit code 2 (a usage error, as argparse's) when a setting is refused. On a start that
    creates no admin key (the database has one), prints ``admin_key_hint(settings)``:
    where the key went and how to get a new one."""
    try:
        settings = Settings.from_environment(
            host=args.host,
            port=args.port,
            database_url=args.database_url,
            mqtt_host=args.host,
            mqtt_port=args.mqtt_port,
            mqtt_enabled=not args.no_mqtt,
        )
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    shown: list[str] = []

    def show_admin_key(secret: str) -> None:
        shown.append(secret)
        print(f"Admin API key (shown once, keep it): {secret}", flush=True)

    runner = ServerRunner(settings, on_admin_key=show_admin_key)
    try:
        runner.start()
    except (RuntimeError, OSError) as exc:
        print(f"error: the platform could not start: {exc}", file=sys.stderr)
        return 1
    print(f"iiotsim platform listening on {runner.http_url} (OpenAPI: {runner.http_url}/schema)")
    if settings.mqtt_enabled:
        print(f"MQTT broker on {settings.mqtt_host}:{settings.mqtt_port}")
    if settings.admin_key:
        print("Admin API key: from IIOT_ADMIN_KEY")
    elif not shown:
        print(admin_key_hint(settings))
    # Ctrl+C and SIGTERM stop the platform once it says so: a handler set before the
    # prompt, not a KeyboardInterrupt caught around the wait, which missed an interrupt
    # sent right after the prompt (the process died with -2, its server not stopped).
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("Press Ctrl+C to stop.", flush=True)
    stop.wait()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C: stop now
    runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
