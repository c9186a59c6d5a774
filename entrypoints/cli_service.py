"""The ``bus`` commands that run or talk to a bus node: serve, send, inbox, status.

Exit status as for every ``bus`` command: 0 success; 1 the bus refused the input (the reason on
stderr); 2 usage, configuration, authentication or connection problem.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from adapters.http.client import AgencyClient, ApiFailure, EnvelopeFile
from bus.checks import VN_TZ
from bus.errors import ConfigError
from bus.logs import configure_logging
from bus.organ_id import OrganId
from bus.settings import Settings, load_settings

__all__ = ["add_commands"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _local(value: str | dt.datetime | None) -> str:
    if value is None:
        return "-"
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return moment.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M:%S")


def _width(text: str) -> int:
    # Vietnamese in NFD has combining marks that take no column.
    return sum(0 if unicodedata.combining(ch) else 1 for ch in text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([_width(h), *(_width(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


# -- serve -------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from entrypoints.runtime import Node  # imports the server stack only for this command

    settings = load_settings(args.config)
    configure_logging(json=args.json_logs)

    async def run() -> None:
        node = await Node.start(settings, workers=not args.no_workers)
        try:
            await node.serve(http=not args.no_http)
        finally:
            await node.stop()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(run())
    else:
        uvloop.run(run())
    return EXIT_OK


# -- agency commands ---------------------------------------------------------------------------------


def _client(settings: Settings, agency_text: str, url: str | None) -> AgencyClient:
    organ = OrganId.parse(agency_text)
    agency = settings.topology.agency(organ)
    if agency is None:
        raise ConfigError(f"{agency_text} is not an agency of {settings.province}")
    secret = settings.secret_of(agency)
    if secret is None:
        raise ConfigError(f"{agency.organ_id} has no API secret in the configuration")
    base = url or f"http://{settings.http.host}:{settings.http.port}"
    return AgencyClient(base, str(agency.organ_id), secret)


def _api_failure(exc: ApiFailure) -> int:
    _err(f"error: {exc}")
    for problem in exc.payload.get("problems", []):
        _err(f"  line {problem.get('line') or 0}: {problem.get('path')}: {problem.get('message')}")
    if exc.status == 409 and exc.payload.get("bus_id"):
        _err(f"  already accepted as {exc.payload['bus_id']}")
    return EXIT_USAGE if exc.status in (401, 404, 405) or exc.status >= 500 else EXIT_BAD_INPUT


def cmd_send(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        body = EnvelopeFile.of(args.envelope)  # hashed now, sent as it is read: any size, little memory
    except OSError as exc:
        raise ConfigError(f"{args.envelope}: cannot read: {exc.strerror}") from exc

    async def run() -> dict[str, Any]:
        async with _client(settings, args.agency, args.url) as client:
            return await client.send(body, retries=args.retries)

    try:
        accepted = asyncio.run(run())
    except ApiFailure as exc:
        return _api_failure(exc)
    except httpx.HTTPError as exc:
        _err(f"error: cannot reach the bus: {exc!r} (is `bus serve` running?)")
        return EXIT_USAGE
    print(accepted["bus_id"])
    for recipient in accepted.get("recipients", []):
        _err(f"  → {recipient['organ_id']} ({recipient['route']})")
    return EXIT_OK


def cmd_inbox(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.ack == "fail" and not args.reason:
        raise ConfigError("--ack fail needs --reason")

    async def run() -> int:
        async with _client(settings, args.agency, args.url) as client:
            items = await client.inbox(pending=not args.all, limit=args.limit)
            rows = [
                [
                    str(i["id"]),
                    _local(i["received_at"]),
                    i["sender"],
                    i["kind"],
                    i["document_id"],
                    i["ack_state"] or "-",
                ]
                for i in items
            ]
            print(_table(["ID", "NHẬN LÚC", "NƠI GỬI", "LOẠI", "DOCUMENT ID", "TRẠNG THÁI"], rows))
            _err(f"{len(items)} envelope(s) in the inbox of {client.agency}")
            if args.fetch is not None:
                args.fetch.mkdir(parents=True, exist_ok=True)
            for index, item in enumerate(items, start=1):
                if args.fetch is not None:
                    target = args.fetch / f"{item['id']}-{item['bus_id']}.edxml"
                    await client.fetch_to(int(item["id"]), target)  # streamed to the file
                    _err(f"[{index}/{len(items)}] fetched {target}")
                if args.ack is not None:
                    await client.acknowledge(int(item["id"]), args.ack, args.reason)
                    _err(f"[{index}/{len(items)}] acknowledged {item['id']} as {args.ack}")
        return EXIT_OK

    try:
        return asyncio.run(run())
    except ApiFailure as exc:
        return _api_failure(exc)
    except httpx.HTTPError as exc:
        _err(f"error: cannot reach the bus: {exc!r} (is `bus serve` running?)")
        return EXIT_USAGE


def add_commands(commands: Any) -> None:
    """Register serve, send and inbox on the ``bus`` parser's subcommands (status is in
    :mod:`entrypoints.cli_status`)."""
    serve = commands.add_parser("serve", help="run the bus: HTTP API and inbox workers")
    serve.add_argument("--config", required=True, type=Path)
    serve.add_argument("--no-http", action="store_true", help="workers only")
    serve.add_argument("--no-workers", action="store_true", help="HTTP API only")
    serve.add_argument(
        "--json-logs", action="store_true", default=None, help="JSON log lines (default when not a terminal)"
    )
    serve.set_defaults(handler=cmd_serve)

    send = commands.add_parser("send", help="send an envelope as an agency; prints its bus id")
    send.add_argument("--config", required=True, type=Path)
    send.add_argument("--as", dest="agency", required=True, metavar="ORGANID")
    send.add_argument("--url", help="the bus's API (default: from the configuration's [http])")
    send.add_argument(
        "--retries", type=int, default=3, help="retries when the bus is unreachable (default 3)"
    )
    send.add_argument("envelope", type=Path, metavar="ENVELOPE")
    send.set_defaults(handler=cmd_send)

    inbox = commands.add_parser("inbox", help="list, fetch and acknowledge an agency's received envelopes")
    inbox.add_argument("--config", required=True, type=Path)
    inbox.add_argument("--as", dest="agency", required=True, metavar="ORGANID")
    inbox.add_argument("--url")
    inbox.add_argument("--fetch", type=Path, metavar="DIR", help="save each listed envelope in DIR")
    inbox.add_argument(
        "--ack", choices=("processing", "done", "fail"), help="acknowledge each listed envelope"
    )
    inbox.add_argument("--reason", help="reason for --ack fail")
    inbox.add_argument("--all", action="store_true", help="also envelopes already acknowledged")
    inbox.add_argument("--limit", type=int, default=100)
    inbox.set_defaults(handler=cmd_inbox)
