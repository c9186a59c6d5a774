"""The operator's ``bus`` commands: ``deadletters`` lists dead letters, ``replay`` sends them back,
``operator-password`` makes the password hash of a dashboard operator.

Exit status as for every ``bus`` command: 0 success; 1 something asked for was not done (an unknown
id, a failed replay: one line each on stdout); 2 usage, configuration or connection problem.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus.audit import Entry
from bus.delivery import DeadLetter
from bus.errors import BusError, StoreError
from bus.passwords import hash_password
from bus.replay import ReplayOutcome, ReplayResult, replay
from bus.settings import Settings, load_settings
from entrypoints.bootstrap import connect_broker_once, new_publisher, open_store
from entrypoints.cli_service import _local, _table

__all__ = ["add_commands"]

EXIT_OK, EXIT_NOT_DONE, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Configuration, broker and store problems end the command with status 2 and one line saying so."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (StoreError, OSError) as exc:
            _err(f"error: cannot use the status store: {exc}")
        except BusError as exc:  # ConfigError, BrokerError
            _err(f"error: {exc}")
        return EXIT_USAGE

    return run


# -- deadletters --------------------------------------------------------------------------------------


def _as_json(item: DeadLetter) -> dict[str, Any]:
    return {
        "id": item.id,
        "dead_at": item.dead_at.isoformat(),
        "message_id": item.message_id,
        "bus_id": item.bus_id,
        "document_id": item.document_id,
        "kind": item.kind,
        "sender": item.sender,
        "recipient": item.recipient,
        "source_queue": item.source_queue,
        "reason": item.reason,
        "headers": item.headers,
        "replayed_at": item.replayed_at.isoformat() if item.replayed_at else None,
        "replay_count": item.replay_count,
    }


def _row(item: DeadLetter, *, replays: bool) -> list[str]:
    row = [
        str(item.id),
        _local(item.dead_at),
        item.document_id or "-",
        f"{item.sender or '?'} → {item.recipient or '?'}",
        item.source_queue or "-",
        " ".join(item.reason.split()),  # one line per dead letter, whatever the reason holds
    ]
    if replays:
        row.append(f"{_local(item.replayed_at)} (lần {item.replay_count})" if item.replay_count else "-")
    return row


def cmd_deadletters(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def run() -> list[DeadLetter]:
        store = open_store(settings)
        try:
            return await store.dead_letters(
                include_replayed=args.all, limit=args.limit, before_id=args.before
            )
        finally:
            await store.close()

    items = asyncio.run(run())
    if args.json:
        print(json.dumps([_as_json(i) for i in items], ensure_ascii=False, indent=2))
        return EXIT_OK
    headers = ["ID", "LÚC", "DOCUMENT ID", "NƠI GỬI → NƠI NHẬN", "HÀNG ĐỢI", "LÝ DO"]
    if args.all:
        headers.append("ĐÃ GỬI LẠI")
    print(_table(headers, [_row(i, replays=args.all) for i in items]))
    which = "dead letter(s)" if args.all else "dead letter(s) not replayed"
    _err(f"{len(items)} {which}; send one back with: bus replay --config {args.config} ID")
    if len(items) == args.limit:
        _err(f"  more may follow: --before {items[-1].id}")
    return EXIT_OK


# -- replay -------------------------------------------------------------------------------------------


def _describe(result: ReplayResult) -> str:
    if result.outcome is ReplayOutcome.REPLAYED:
        return f"{result.id}: replayed to {result.queue}"
    if result.outcome is ReplayOutcome.REPLAYED_AGAIN:
        return (
            f"{result.id}: replayed AGAIN to {result.queue} (replay {result.replay_count}; "
            f"it had been replayed at {_local(result.previously_replayed_at)})"
        )
    return f"{result.id}: {result.outcome.value.upper()}: {result.error}"


async def _replay(settings: Settings, ids: list[int]) -> list[ReplayResult]:
    store = open_store(settings)
    try:
        connection = await connect_broker_once(settings)
        try:
            publisher = await new_publisher(connection, settings)
            results = await replay(store, publisher, ids, dt.datetime.now(dt.UTC))
            if results:
                # An operator's action (issue 15): who, from which machine, what came of it.
                await store.audit_note(
                    Entry(
                        "operator.replay",
                        dt.datetime.now(dt.UTC),
                        {
                            "operator": getpass.getuser(),
                            "client": f"bus replay on {socket.gethostname()}",
                            "results": {str(r.id): r.outcome.value for r in results},
                        },
                    )
                )
            return results
        finally:
            await connection.close()
    finally:
        await store.close()


def cmd_replay(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    results = asyncio.run(_replay(settings, args.ids))
    for result in results:
        print(_describe(result))
    return EXIT_OK if all(r.ok for r in results) else EXIT_NOT_DONE


# -- operator-password --------------------------------------------------------------------------------


def _read_password() -> str:
    """Asked twice on a terminal (echo off); otherwise the first line of stdin (scripts, pipes)."""
    if sys.stdin.isatty():
        first = getpass.getpass("Mật khẩu (password): ")
        if getpass.getpass("Nhập lại (again): ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_operator_password(args: argparse.Namespace) -> int:
    try:
        hashed = hash_password(_read_password())
    except ValueError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except (EOFError, KeyboardInterrupt):
        _err("error: no password given")
        return EXIT_USAGE
    print(hashed)
    _err(
        "put it in the configuration file:\n"
        f'  [[dashboard.operators]]\n  username = "{args.username}"\n  password_hash = "{hashed}"'
    )
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register deadletters, replay and operator-password on the ``bus`` parser's subcommands."""
    listing = commands.add_parser("deadletters", help="list dead letters (newest first) with their reasons")
    listing.add_argument("--config", required=True, type=Path)
    listing.add_argument("--all", action="store_true", help="also those already replayed")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--before", type=int, metavar="ID", help="the next page: ids below ID")
    listing.set_defaults(handler=_guarded(cmd_deadletters))

    again = commands.add_parser("replay", help="send dead letters back to the queue they came from")
    again.add_argument("--config", required=True, type=Path)
    again.add_argument("ids", nargs="+", type=int, metavar="ID", help="ids from `bus deadletters`")
    again.set_defaults(handler=_guarded(cmd_replay))

    password = commands.add_parser(
        "operator-password",
        help="hash a dashboard operator's password (asked on the terminal, or the first line of stdin)",
    )
    password.add_argument(
        "--username", default="OPERATOR", help="only shown in the configuration snippet printed on stderr"
    )
    password.set_defaults(handler=cmd_operator_password)
