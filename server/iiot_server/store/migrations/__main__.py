"""``python -m iiot_server.store.migrations``: write a revision, show the history, or show
or upgrade a database's revision (see the package docstring)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from . import alembic_config, current_revision, head_revision, upgrade


def write_revision(message: str, *, autogenerate: bool = True) -> Path:
    """Write ``versions/<next number>_<slug>.py``: what turns the head's schema into
    ``schema.py``'s (compared on a scratch SQLite database at the head), or an empty
    revision to fill in by hand."""
    with tempfile.TemporaryDirectory(prefix="iiot-revision-") as scratch:
        engine = create_engine(f"sqlite:///{scratch}/head.db", poolclass=NullPool)
        upgrade(engine)
        with engine.connect() as connection:
            script = command.revision(
                alembic_config(connection),
                message=message,
                autogenerate=autogenerate,
                rev_id=f"{int(head_revision()) + 1:04d}",
            )
        engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m iiot_server.store.migrations")
    commands = parser.add_subparsers(dest="command", required=True)
    revision = commands.add_parser("revision", help="write the next revision from schema.py")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--empty", action="store_true", help="no autogenerate")
    commands.add_parser("history", help="list the revisions")
    for name in ("current", "upgrade"):
        sub = commands.add_parser(name, help=f"{name} revision of a database")
        sub.add_argument("database_url")
    args = parser.parse_args(argv)
    if args.command == "revision":
        print(write_revision(args.message, autogenerate=not args.empty))
    elif args.command == "history":
        command.history(alembic_config())
    else:
        engine = create_engine(args.database_url, poolclass=NullPool)
        if args.command == "upgrade":
            print(f"was at {upgrade(engine)}, now at {head_revision()}")
        else:
            with engine.connect() as connection:
                print(current_revision(connection) or "none")
        engine.dispose()


if __name__ == "__main__":
    main()
