"""``bus mock-axis``: run the mock national axis, so a province's bus (or the axis's own Java SDK
example) has an axis to talk to on a developer's machine, in the demo and in CI.

Exit status: 0 stopped by SIGINT/SIGTERM; 2 configuration problem (file, database, busy port).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from bus.errors import ConfigError
from bus.logs import configure_logging
from entrypoints.bootstrap import safe_url
from mock_axis import load_mock_config, serve_mock_axis

__all__ = ["add_commands"]

EXIT_OK, EXIT_USAGE = 0, 2

log = structlog.get_logger("bus.mock_axis")


def cmd_mock_axis(args: argparse.Namespace) -> int:
    try:
        config = load_mock_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(json=args.json_logs)
    database = args.database or config.database

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with serve_mock_axis(config, database, host=args.host, port=args.port) as running:
            log.info(
                "mock_axis.listening",
                url=running.url,
                systems=[s.system_id for s in config.systems],
                database=safe_url(database),
            )
            await stop.wait()
            log.info("mock_axis.stopping")

    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register ``mock-axis`` on the ``bus`` parser's subcommands."""
    mock = commands.add_parser(
        "mock-axis", help="run a mock national axis (the SDK's wire format) for tests and demos"
    )
    mock.add_argument("--config", required=True, type=Path, help="TOML file: [[systems]], [[agencies]]")
    mock.add_argument("--port", required=True, type=int, help="TCP port (0: any free port, logged)")
    mock.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    mock.add_argument("--database", help="SQLAlchemy URL (default: the file's `database`)")
    mock.add_argument(
        "--json-logs", action="store_true", default=None, help="JSON log lines (default when not a terminal)"
    )
    mock.set_defaults(handler=cmd_mock_axis)
