"""The ``iiotsim`` command.

    iiotsim serve [--host H] [--port P] [--mqtt-port M] [--database-url URL] [--data-dir D]
                  [--tls | --tls-cert CERT --tls-key KEY]
    iiotsim simulate SCENARIO.json --out DIR [--processes N]
    iiotsim lab [JUPYTER ARGS...]
    iiotsim token create | operations | approve | cancel | devices | messages | admin-key create

``serve`` runs the platform (HTTP API and MQTT broker) in the foreground, printing its
URL and, on first start, the admin API key (later starts say how to make a new one).
``simulate`` runs one scenario, or a sweep
(``{"scenario": {...}, "sweep": {"token.lifetime": [3600, 86400]}, "repetitions": 2}``),
and writes Parquet and CSV tables and PNG plots to DIR. The technician/admin commands
live in :mod:`iiotsim.admin_commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from iiot_server import __main__ as server_main
from iiot_server.settings import DEFAULT_DATA_DIR, Settings, sqlite_url

from .admin_commands import add_commands as add_admin_commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iiotsim", description="IIoT provisioning platform, device SDK and fleet simulator."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the platform (HTTP API + MQTT broker) in the foreground"
    )
    server_main.add_arguments(serve)
    serve.set_defaults(run=_serve)
    simulate = commands.add_parser("simulate", help="run a fleet scenario or sweep")
    simulate.add_argument("scenario", type=Path, help="scenario (or sweep) JSON file")
    simulate.add_argument("--out", type=Path, required=True, help="output directory")
    simulate.add_argument("--processes", type=int, default=None, help="for sweeps")
    simulate.set_defaults(run=_simulate)
    lab = commands.add_parser(
        "lab", help="open JupyterLab on the notebooks (extra arguments go to jupyter lab)"
    )
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER)
    lab.set_defaults(run=_lab)
    add_admin_commands(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    return server_main.serve(args, admin_key_hint=_new_admin_key_hint)


def _new_admin_key_hint(settings: Settings) -> str:
    """What a later start of ``serve`` says instead of the key it printed at first start."""
    command = "iiotsim admin-key create"
    url = settings.database_url
    if url.startswith("sqlite:///") and url == sqlite_url(Path(url[10:]).parent):
        if url != sqlite_url(DEFAULT_DATA_DIR):
            command += f" --data-dir {Path(url[10:]).parent}"
    elif url.startswith("sqlite:///"):  # no password to hide
        command += f" --database-url {url}"
    else:
        command += " --database-url URL  (the URL this platform uses)"
    return (
        "Admin API key: printed at this database's first start (stored hashed, never shown "
        f"again); to make a new one: {command}"
    )


def _lab(args: argparse.Namespace) -> int:
    """JupyterLab on ``notebooks/`` with this environment's kernel."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    notebooks = root / "notebooks"
    if not notebooks.is_dir():
        print(f"error: no notebooks directory at {notebooks}", file=sys.stderr)
        return 1
    command = [
        sys.executable, "-m", "jupyterlab", f"--notebook-dir={notebooks}",
        "--ServerApp.ip=127.0.0.1", *args.jupyter_args,
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI run as root
    env = {**os.environ, "JUPYTER_PREFER_ENV_PATH": "1"}  # this environment's kernel first
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


def _simulate(args: argparse.Namespace) -> int:
    import json

    from .sim.cli import run_file
    from .sim.scenario import ScenarioError

    try:
        written = run_file(args.scenario, args.out, processes=args.processes)
    except (ScenarioError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "lab":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.jupyter_args = [*extra, *args.jupyter_args]
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
