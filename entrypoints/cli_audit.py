"""``bus audit`` and ``bus receipt``: check the audit log (in the database, or an archive on another
machine with only the CA certificate), export a period as an archive, sign a checkpoint now, and check
receipts. Exit status: 0 intact, 1 a problem was found (each on stdout with where and what), 2 usage,
configuration or connection error."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

from bus.audit import GENESIS, Head, Report, Verifier, iso
from bus.audit_archive import verify_archive
from bus.dsig import TrustStore, load_certificates
from bus.errors import ConfigError
from bus.jws import EvidenceError, unb64url
from bus.receipts import verify_receipt
from bus.settings import Settings, load_settings
from entrypoints.audit import checkpoint_now, export_archive
from entrypoints.bootstrap import node_identity, open_store
from entrypoints.cli_service import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, _err

__all__ = ["add_commands", "verify_live"]


def _trust(paths: list[Path] | None, settings: Settings | None) -> TrustStore:
    if paths:
        return TrustStore.from_pem_files(paths)
    if settings is not None and settings.node.trust:
        return TrustStore.from_pem_files([settings.path(p) for p in settings.node.trust])
    raise ConfigError("name the CA certificate that issued the bus's node certificate: --ca CA.pem")


def _tsa(paths: list[Path] | None, settings: Settings | None) -> list:  # type: ignore[type-arg]
    if paths:
        return [c for p in paths for c in load_certificates(p)]
    if settings is not None and settings.audit.tsa_ca is not None:
        return load_certificates(settings.path(settings.audit.tsa_ca))
    return []


def _date(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-12-01 or 2026-12-01T08:00+07:00)"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone(dt.timedelta(hours=7)))


async def verify_live(
    settings: Settings,
    trust: TrustStore,
    tsa_trust: list,  # type: ignore[type-arg]
    *,
    require_timestamps: bool = False,
) -> Report:
    """The whole log in the database: from the archived anchor (or each chain's first record) on."""
    store = open_store(settings)
    try:
        anchor = await store.audit_anchor()
        verifier = Verifier(
            trust,
            tsa_trust=tsa_trust,
            anchor=None if anchor is None else anchor.heads,
            node=str(settings.node.organ_id),  # checkpoints signed by this bus node, no other
            require_timestamps=require_timestamps,
        )
        checkpoints = await store.audit_checkpoints(first=None if anchor is None else anchor.number)
        for c in checkpoints:  # the columns beside a checkpoint must say what its JWS signed
            try:
                signed = unb64url(json.loads(c.jws)["payload"], "the payload")
            except (ValueError, KeyError, TypeError, EvidenceError):
                continue  # reported below with the signature
            if signed != c.payload or hashlib.sha256(c.payload).hexdigest() != c.sha256:
                verifier.problem(
                    f"checkpoint {c.number}", "its payload or sha256 column is not what its JWS signed"
                )
        verifier.check_checkpoints(
            [c.as_checkpoint() for c in checkpoints],
            where="checkpoint",
            expect_prev=None,
        )
        async for r in store.audit_records(after=None if anchor is None else anchor.heads):
            verifier.record(
                f"audit_records chain {r.chain} seq {r.seq}",
                r.chain,
                r.seq,
                r.sha256,
                r.data,
                {"kind": r.kind, "at": iso(r.at), "bus_id": r.bus_id},
            )
        kept = verifier.heads()
        for chain, head in sorted((await store.audit_heads()).items()):
            found = kept.get(
                chain, Head(0, GENESIS) if anchor is None else anchor.heads.get(chain, Head(0, GENESIS))
            )
            if head.seq and (found.seq, found.sha256) != (head.seq, head.sha256):
                verifier.problem(
                    f"chain {chain}",
                    f"audit_chains says its head is seq {head.seq} ({head.sha256}), but its records end at "
                    f"seq {found.seq} ({found.sha256}): records at its end were deleted or added",
                )
        return verifier.finish()
    finally:
        await store.close()


def _print(report: Report) -> int:
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_BAD_INPUT


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = load_settings(args.config) if args.config else None
    trust = _trust(args.ca, settings)
    tsa = _tsa(args.tsa_ca, settings)
    if args.archive is not None:
        try:
            report = verify_archive(
                args.archive, trust, tsa_trust=tsa, node=args.node, require_timestamps=args.require_timestamps
            )
            return _print(report)
        except EvidenceError as exc:
            print(f"FAILED: {exc}")
            return EXIT_BAD_INPUT
    if settings is None:
        raise ConfigError("name an archive to check, or --config to check the log in the database")
    # With a TSA configured, every checkpoint is expected to carry a time-stamp.
    required = args.require_timestamps or settings.audit.tsa_url is not None
    return _print(asyncio.run(verify_live(settings, trust, tsa, require_timestamps=required)))


async def _export(settings: Settings, args: argparse.Namespace) -> tuple[str, int, int | None, int | None]:
    identity = node_identity(settings)
    store = open_store(settings)
    try:
        if not args.no_checkpoint:
            await checkpoint_now(store, settings, identity)  # what the period holds is signed now
        checkpoints = await store.audit_checkpoints()
        pruned = await store.audit_anchor()
        before = [c for c in checkpoints if args.since is not None and c.at <= args.since]
        anchor = before[-1] if before else pruned
        after = [c for c in checkpoints if args.until is not None and c.at >= args.until]
        last = after[0] if after else None
        digest, count = await export_archive(
            store,
            args.output,
            settings,
            identity,
            anchor=anchor,
            last=last,
            period=(args.since, args.until),
        )
        return digest, count, None if anchor is None else anchor.number, None if last is None else last.number
    finally:
        await store.close()


def cmd_audit_export(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    digest, count, anchor, last = asyncio.run(_export(settings, args))
    print(
        f"{args.output}: {count} records, from checkpoint {anchor if anchor is not None else '(start)'} to "
        f"{last if last is not None else 'the end'}; SHA-256 {digest}"
    )
    return EXIT_OK


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def run() -> int | None:
        store = open_store(settings)
        try:
            checkpoint = await checkpoint_now(store, settings, node_identity(settings), force=args.force)
            return None if checkpoint is None else checkpoint.number
        finally:
            await store.close()

    number = asyncio.run(run())
    print("no record since the last checkpoint" if number is None else f"checkpoint {number} signed")
    return EXIT_OK


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    trust = _trust(args.ca, None)
    status = EXIT_OK
    for path in args.files:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _err(f"{path}: cannot read: {exc}")
            return EXIT_USAGE
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            print(f"{path}: INVALID: not JSON: {exc}")
            status = EXIT_BAD_INPUT
            continue
        found = loaded.get("receipts") if isinstance(loaded, dict) and "receipts" in loaded else [loaded]
        receipts: list[object] = found if isinstance(found, list) else [found]
        for index, receipt in enumerate(receipts):
            label = f"{path}" if len(receipts) == 1 else f"{path} [{index}]"
            try:
                signed = verify_receipt(receipt, trust, node=args.node)
            except EvidenceError as exc:
                print(f"{label}: INVALID: {exc}")
                status = EXIT_BAD_INPUT
                continue
            v = signed.value
            what = (
                f"accepted from {v.get('sender')} for {', '.join(v.get('recipients', []))}"
                if v["type"].endswith("accepted")
                else f"{v.get('state')} by {v.get('recipient')}"
            )
            print(
                f"{label}: OK: {v.get('bus_id')} ({v.get('document_id')}) {what} at {v.get('at')}, "
                f"SHA-256 {v.get('sha256')}; signed by node {v.get('node')} "
                f"({signed.signer.subject.rfc4514_string()})"
            )
    return status


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = commands.add_parser("audit", help="check and export the audit log").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify", help="check the log in the database (--config), or an exported archive (offline)"
    )
    verify.add_argument("archive", nargs="?", type=Path, help="an archive written by bus audit export")
    verify.add_argument("--config", type=Path)
    verify.add_argument("--ca", type=Path, action="append", help="CA certificate (PEM) of the node's key")
    verify.add_argument("--tsa-ca", type=Path, action="append", help="CA certificate (PEM) of the TSA")
    verify.add_argument(
        "--node", help="the bus node's OrganId: an archive signed by any other certificate of the CA fails"
    )
    verify.add_argument(
        "--require-timestamps",
        action="store_true",
        help="a checkpoint without a time-stamp is a problem (the default with [audit] tsa_url)",
    )
    verify.set_defaults(handler=cmd_audit_verify)
    export = audit.add_parser("export", help="write a period of the log as a self-contained signed archive")
    export.add_argument("--config", required=True, type=Path)
    export.add_argument(
        "--from", dest="since", type=_date, help="start (ISO date; Vietnam time unless given)"
    )
    export.add_argument("--to", dest="until", type=_date, help="end (ISO date; Vietnam time unless given)")
    export.add_argument("-o", "--output", required=True, type=Path)
    export.add_argument(
        "--no-checkpoint", action="store_true", help="do not sign a checkpoint of what is new first"
    )
    export.set_defaults(handler=cmd_audit_export)
    checkpoint = audit.add_parser("checkpoint", help="sign a checkpoint of the log now")
    checkpoint.add_argument("--config", required=True, type=Path)
    checkpoint.add_argument("--force", action="store_true", help="even when nothing moved")
    checkpoint.set_defaults(handler=cmd_audit_checkpoint)

    receipt = commands.add_parser("receipt", help="check receipts the bus signed").add_subparsers(
        dest="receipt_command", required=True
    )
    receipt_verify = receipt.add_parser("verify", help="check receipts (files of JSON, '-' for stdin)")
    receipt_verify.add_argument("files", nargs="+", type=Path)
    receipt_verify.add_argument("--ca", type=Path, action="append", required=True)
    receipt_verify.add_argument(
        "--node", help="the bus node's OrganId: a receipt signed by any other certificate of the CA fails"
    )
    receipt_verify.set_defaults(handler=cmd_receipt_verify)
