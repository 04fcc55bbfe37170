"""The `sbc` command: run the SBC, check a configuration file without starting anything, or
ask a running SBC through its management API (calls, hangup, trunks, blocks, reload)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from sbc.api_client import COMMANDS, add_commands, run_command
from sbc.config import Config, ConfigError, load_config
from sbc.log import configure


def _version() -> str:
    try:
        return metadata.version("sbc")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sbc", description="SIP trunk gateway / session border controller"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start the SBC")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML configuration")
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error", "critical"),
        help="override log.level from the configuration",
    )
    run.add_argument(
        "--trace", action="store_true", help="print every SIP message as a ladder per call"
    )
    run.add_argument(
        "--log-format", choices=("kv", "json"), help="override log.format from the configuration"
    )

    check = commands.add_parser("check-config", help="validate configuration files and exit")
    check.add_argument("files", nargs="+", metavar="FILE")

    cdr = commands.add_parser("cdr", help="call detail records")
    cdr_commands = cdr.add_subparsers(dest="cdr_command", required=True, metavar="ACTION")
    export = cdr_commands.add_parser("export", help="print CDRs to stdout")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", metavar="FILE", help="CDR SQLite database")
    source.add_argument(
        "--dsn",
        metavar="DSN",
        help="CDR PostgreSQL database, e.g. postgresql://user@host/db "
        "(password: PGPASSWORD or ~/.pgpass)",
    )
    export.add_argument(
        "--since", required=True, type=_timestamp, metavar="ISO8601", help="started at or after"
    )
    export.add_argument("--until", type=_timestamp, metavar="ISO8601", help="started before")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    add_commands(commands)  # calls, call, hangup, trunks, blocks, unblock, reload
    return parser


def _timestamp(text: str) -> float:
    """ISO 8601 to UNIX time; without a zone the time is UTC (CDRs are stored in UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date/time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _cdr_export(args: argparse.Namespace) -> int:
    # Imported only now: the SBC itself does not need the export code to start.
    from sbc.cdr import CdrError, export_csv, export_json, open_readonly

    store: Any
    try:
        if args.dsn is not None:
            from sbc import cdr_postgres  # optional dependency: psycopg

            store = cdr_postgres.open_readonly(args.dsn)
        else:
            store = open_readonly(args.db)
    except CdrError as exc:
        print(f"sbc: {exc}", file=sys.stderr)
        return 1
    try:
        records = store.read(args.since, args.until)
        if args.format == "json":
            export_json(records, sys.stdout)
        else:
            export_csv(records, sys.stdout)
    finally:
        store.close()
    return 0


def _load(path: str) -> Config | None:
    """The configuration at `path`, or None after printing every problem to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _check_config(files: Sequence[str]) -> int:
    status = 0
    for path in files:
        if _load(path) is None:
            status = 1
        else:
            print(f"{path}: ok")
    return status


def _run(args: argparse.Namespace) -> int:
    # Everything about the configuration is settled before any socket is opened.
    config = _load(args.config)
    if config is None:
        return 1
    configure(args.log_level or config.log.level, args.log_format or config.log.format)
    if getattr(args, "trace", False):
        config = dataclasses.replace(
            config, capture=dataclasses.replace(config.capture, trace=True)
        )
    try:
        # Imported only now: it pulls in the whole stack, which check-config does not need.
        app = importlib.import_module("sbc.app")
    except ModuleNotFoundError as exc:
        if exc.name != "sbc.app":
            raise
        print(
            "sbc: the application module (sbc.app) is not available in this build", file=sys.stderr
        )
        return 1
    try:
        return int(app.run(config))
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.files)
    if args.command == "cdr":
        return _cdr_export(args)
    if args.command in COMMANDS:
        return run_command(args)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
