"""``python -m iiot_server``: run the platform server in the foreground."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .domain.errors import SettingsError
from .runner import ServerRunner
from .settings import DEFAULT_DATA_DIR, Settings, sqlite_url
from .signing_key import signing_key_in
from .tls import TLS_DIR, TlsFiles, development_certificates

MQTT_PORT = 1883
MQTTS_PORT = 8883
"""IANA's ports for MQTT and MQTT over TLS."""


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
    parser.add_argument(
        "--mqtt-port",
        type=int,
        default=None,
        help="MQTT broker port (default 1883, or 8883 with TLS: the MQTTS port, and the only "
        "one Spotflow's device SDK connects to)",
    )
    parser.add_argument("--no-mqtt", action="store_true", help="run the HTTP API only")
    parser.add_argument(
        "--broker",
        choices=("amqtt", "mosquitto"),
        default="amqtt",
        help="device-facing MQTT broker: the embedded amqtt (default) or Debian's mosquitto 2, "
        "run as a child process with its files in DATA_DIR/mosquitto/",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"directory of the SQLite database (unless --database-url) and of tls/ "
        f"(default: {DEFAULT_DATA_DIR}/, or the SQLite database's directory)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="HTTPS and MQTT over TLS on the same ports, with a development CA made at "
        "first start in DATA_DIR/tls/ca.pem (devices trust that file), unless --tls-cert "
        "and --tls-key are given",
    )
    parser.add_argument("--tls-cert", default=None, help="PEM certificate (chain) to serve")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--message-retention-days",
        type=float,
        default=None,
        help="delete device messages older than this (default: keep them all)",
    )
    parser.add_argument(
        "--connection-history-retention-days",
        type=float,
        default=None,
        help="delete devices' connection history older than this (default: keep it all)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iiot_server", description=__doc__)
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def _default_admin_key_hint(_: Settings) -> str:
    return (
        "Admin API key: printed at this database's first start (stored hashed, never shown "
        "again); an admin can create more (POST /api/v1/api-keys)"
    )


def _data_dir(args: argparse.Namespace) -> Path:
    """Where ``serve`` keeps files: ``--data-dir``, else the SQLite database's directory,
    else the default."""
    if args.data_dir is not None:
        return Path(args.data_dir)
    url = args.database_url or os.environ.get("IIOT_DATABASE_URL")
    if url and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///")).parent
    return DEFAULT_DATA_DIR


def _tls_files(args: argparse.Namespace, data_dir: Path) -> TlsFiles | None:
    """The certificate to serve: the operator's, a development one, or None (no TLS)."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SettingsError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
            if not Path(path).is_file():
                raise SettingsError(f"{option} {path}: no such file")
        return TlsFiles(cert=Path(args.tls_cert), key=Path(args.tls_key))
    if args.tls:
        return development_certificates(data_dir, (args.host,))
    return None


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
        data_dir = _data_dir(args)
        tls = _tls_files(args, data_dir)
        database_url = args.database_url
        if database_url is None and args.data_dir is not None:
            database_url = sqlite_url(data_dir)
        settings = Settings.from_environment(
            host=args.host,
            port=args.port,
            database_url=database_url,
            tls_cert_file=None if tls is None else str(tls.cert),
            tls_key_file=None if tls is None else str(tls.key),
            sas_signing_key=(
                None if os.environ.get("IIOT_SAS_SIGNING_KEY") else signing_key_in(data_dir)
            ),
            mqtt_host=args.host,
            mqtt_port=(
                (MQTTS_PORT if tls is not None else MQTT_PORT)
                if args.mqtt_port is None
                else args.mqtt_port
            ),
            mqtt_enabled=not args.no_mqtt,
            mqtt_broker=getattr(args, "broker", "amqtt"),
            mosquitto_dir=str(data_dir / "mosquitto"),
            message_retention=_days(getattr(args, "message_retention_days", None)),
            connection_history_retention=_days(
                getattr(args, "connection_history_retention_days", None)
            ),
        )
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # the data directory, or a file we cannot read
        print(f"error: the data directory {data_dir} ({TLS_DIR}/, keys): {exc}", file=sys.stderr)
        return 1

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
        over = " (MQTT over TLS)" if settings.tls else ""
        kind = "mosquitto" if settings.mqtt_broker == "mosquitto" else "MQTT broker"
        print(f"{kind} on {settings.mqtt_host}:{settings.mqtt_port}{over}")
    if tls is not None and tls.ca_cert is not None:
        print(f"Development CA (devices and clients trust this file): {tls.ca_cert.resolve()}")
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


def _days(days: float | None) -> float | None:
    return None if days is None else days * 86400.0


if __name__ == "__main__":
    sys.exit(main())
