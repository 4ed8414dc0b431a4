"""The ``iiotsim`` command.

    iiotsim serve [--host H] [--port P] [--mqtt-port M] [--database-url URL]

``serve`` runs the platform (HTTP API and MQTT broker) in the foreground, printing its
URL and, on first start, the admin API key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from iiot_server import __main__ as server_main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iiotsim", description="IIoT provisioning platform, device SDK and fleet simulator."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the platform (HTTP API + MQTT broker) in the foreground"
    )
    server_main.add_arguments(serve)
    serve.set_defaults(run=server_main.serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
