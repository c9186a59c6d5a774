"""``bus status``: a document's per-recipient state and timeline, read from the store (an operator's
command; ``--watch`` redraws until every recipient is final)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from bus.checks import VN_TZ
from bus.model import StatusCode
from bus.settings import Settings, load_settings
from entrypoints.bootstrap import open_store
from entrypoints.cli_service import EXIT_BAD_INPUT, EXIT_OK, _err, _local, _table

__all__ = ["add_commands", "document_status", "is_final", "render_status"]


async def document_status(settings: Settings, document_id: str) -> list[dict[str, Any]]:
    """Every document whose DocumentId (or bus id) is *document_id*, with recipients and timeline."""
    store = open_store(settings)
    try:
        found = [d for d in await store.find(document_id) if d.kind == "document"] or await store.find(
            document_id
        )
        names = {str(a.organ_id): a.name for a in settings.agencies}
        for agency in settings.agencies:
            names.update({str(alias): f"{agency.name} (mã cũ)" for alias in agency.aliases})
        result = []
        for doc in found:
            rows = await store.deliveries(doc.bus_id)
            timeline = await store.timeline(doc.bus_id)
            result.append(
                {
                    "bus_id": doc.bus_id,
                    "kind": doc.kind,
                    "document_id": doc.document_id,
                    "business_type": doc.business_type,
                    "code": doc.code,
                    "subject": doc.subject,
                    "sender": doc.sender,
                    "accepted_at": doc.accepted_at.isoformat(),
                    "recipients": [
                        {
                            "organ_id": r.recipient,
                            "name": names.get(r.recipient, "(ngoài tỉnh)"),
                            "route": r.route,
                            "state": r.state.value,
                            "label": r.state.label,
                            "business_status": r.business_status,
                            "updated_at": r.updated_at.isoformat(),
                        }
                        for r in rows
                    ],
                    "timeline": [
                        {
                            "recipient": e.recipient,
                            "state": e.state.value,
                            "label": e.state.label,
                            "at": e.at.isoformat(),
                            "detail": e.detail,
                        }
                        for e in timeline
                    ],
                }
            )
        return result
    finally:
        await store.close()


def _business(code: str | None) -> str:
    if not code:
        return "-"
    try:
        return f"{code} {StatusCode(code).label}"
    except ValueError:
        return code


def render_status(documents: list[dict[str, Any]]) -> str:
    blocks = []
    for doc in documents:
        head = (
            f"Văn bản {doc['code'] or '-'} — {doc['subject'] or doc['kind']}\n"
            f"  DocumentId {doc['document_id']}  ·  bus id {doc['bus_id']}\n"
            f"  Nơi gửi {doc['sender']}  ·  trục nhận lúc {_local(doc['accepted_at'])}"
        )
        rows = [
            [
                r["organ_id"],
                r["name"],
                r["route"],
                r["label"],
                _business(r["business_status"]),
                _local(r["updated_at"]),
            ]
            for r in doc["recipients"]
        ]
        table = _table(["NƠI NHẬN", "TÊN", "TUYẾN", "TRẠNG THÁI", "NGHIỆP VỤ", "CẬP NHẬT"], rows)
        blocks.append(f"{head}\n{table}")
    return "\n\n".join(blocks)


# States after which nothing more happens to a delivery on this axis: acknowledged by the recipient,
# failed for good, or handed to the national axis (what happens there comes back as statuses).
_FINAL_STATES = {"done", "fail", "failed", "dead-lettered"}
_FINAL_BUSINESS = {"02", "06", "16"}  # refused, completed, refused the change


def is_final(recipient: dict[str, Any]) -> bool:
    return (
        recipient["state"] in _FINAL_STATES
        or recipient["business_status"] in _FINAL_BUSINESS
        or (recipient["route"] == "outbound" and recipient["state"] == "sent-to-axis")
    )


def _watch(settings: Settings, document_id: str, interval_s: float) -> int:
    """Redraw the table every *interval_s* until every recipient is final (on a terminal the screen is
    redrawn; otherwise a table is printed only when something changed)."""
    terminal = sys.stdout.isatty()
    shown = ""
    while True:
        documents = asyncio.run(document_status(settings, document_id))
        if not documents:
            _err(f"error: no document {document_id!r} in the store")
            return EXIT_BAD_INPUT
        recipients = [r for d in documents for r in d["recipients"]]
        waiting = [r for r in recipients if not is_final(r)]
        now = dt.datetime.now(VN_TZ).strftime("%d/%m/%Y %H:%M:%S")
        table = render_status(documents)
        footer = f"{len(recipients) - len(waiting)}/{len(recipients)} nơi nhận đã xong" + (
            "" if not waiting else f" · cập nhật {now}, mỗi {interval_s:g} giây · Ctrl-C để dừng"
        )
        if terminal:
            print("\033[H\033[J" + table + "\n\n" + footer, flush=True)
        elif table != shown:
            print(table + "\n" + footer + "\n", flush=True)
        shown = table
        if not waiting:
            return EXIT_OK
        time.sleep(interval_s)


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.watch:
        try:
            return _watch(settings, args.document_id, args.interval)
        except KeyboardInterrupt:
            return 130
    documents = asyncio.run(document_status(settings, args.document_id))
    if not documents:
        _err(f"error: no document {args.document_id!r} in {settings.database.url.split('://')[0]} store")
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(documents, ensure_ascii=False, indent=2))
    else:
        print(render_status(documents))
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register status on the ``bus`` parser's subcommands."""
    status = commands.add_parser("status", help="per-recipient delivery state of a document")
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("document_id", metavar="DOCUMENT_ID", help="edXML DocumentId or bus id")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--watch", action="store_true", help="refresh until every recipient reaches a final state"
    )
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (--watch)")
    status.set_defaults(handler=cmd_status)
