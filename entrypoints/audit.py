"""The audit log's work outside a transaction (issue 15; docs/audit.md): the start-up record of the
configuration, signed checkpoints and their time-stamps, archives (``bus audit export`` and retention),
and the receipts' notary. One gateway at a time writes checkpoints and archives (its leadership)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509

from adapters.store import StatusStore, StoredCheckpoint
from adapters.tsa import request_timestamp
from bus.audit import TIMESTAMP_TOLERANCE, Entry, sign_checkpoint
from bus.audit_archive import ArchiveWriter
from bus.dsig import load_certificates
from bus.errors import BusError, ConfigError
from bus.intake import NodeIdentity
from bus.jws import canonical_json, sign
from bus.receipts import Notary
from bus.settings import Settings
from bus.timestamp import TimestampError, token_certificates, verify_token

__all__ = [
    "audit_job",
    "export_archive",
    "node_chain",
    "notary",
    "record_start",
    "settings_record",
    "timestamp_checkpoint",
]

log = structlog.get_logger("bus.audit")

# Never in a record: an operator's scrypt hash would be copied to every archive given to an expert.
_SECRET_KEYS = frozenset({"password_hash", "secret", "session_secret", "management_password"})
_RETAIN_EVERY_S = 3600.0  # retention archives what aged out once an hour: one archive per hour at most


def node_chain(settings: Settings, identity: NodeIdentity) -> list[x509.Certificate]:
    """The node's certificate and what follows it in its file (intermediates): a signature's ``x5c``."""
    path = settings.node.certificate
    chain = load_certificates(settings.path(path)) if path is not None else []
    return chain or [identity.certificate]


def notary(settings: Settings, identity: NodeIdentity) -> Notary:
    return Notary(str(identity.organ_id), identity.key, node_chain(settings, identity))


def signer(settings: Settings, identity: NodeIdentity) -> Callable[[bytes], dict[str, str]]:
    chain = node_chain(settings, identity)
    return lambda payload: sign(payload, identity.key, chain)


def settings_record(settings: Settings) -> dict[str, Any]:
    """The configuration a process started with, secrets masked, and its SHA-256: two starts with other
    settings differ in the digest (and the record shows which section)."""
    dumped = _without_passwords(settings.model_dump(mode="json"))  # SecretStr values come out masked
    digest = hashlib.sha256(canonical_json(dumped)).hexdigest()
    agencies = dumped.pop("agencies", [])
    dumped.pop("agency_secrets", None)
    dumped.pop("amqp_passwords", None)
    return {
        "settings_sha256": digest,
        "agencies": len(agencies),
        "agencies_sha256": hashlib.sha256(canonical_json(agencies)).hexdigest(),
        "settings": dumped,
    }


def _without_passwords(value: Any) -> Any:
    """*value* with the password of every URL in it masked (``amqp://guest:***@host``): a record cannot
    be cleaned afterwards without breaking its chain, so no secret may ever enter one."""
    if isinstance(value, dict):
        return {k: "**********" if k in _SECRET_KEYS else _without_passwords(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_passwords(v) for v in value]
    if isinstance(value, str) and "://" in value:
        parts = urllib.parse.urlsplit(value)
        masked = parts
        if parts.query and "password" in parts.query.lower():
            masked = masked._replace(query="***")  # a DSN's ?password=…
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            masked = masked._replace(netloc=f"{parts.username or ''}:***@{host}")
        return value if masked == parts else urllib.parse.urlunsplit(masked)
    return value


async def record_start(store: StatusStore, settings: Settings, *, command: str) -> None:
    await store.audit_note(
        Entry("node.started", dt.datetime.now(dt.UTC), {"command": command, **settings_record(settings)})
    )


def _tsa_roots(settings: Settings) -> list[x509.Certificate]:
    path = settings.audit.tsa_ca
    if path is None:
        return []
    roots = load_certificates(settings.path(path))
    if not roots:
        raise ConfigError(f"audit.tsa_ca {path}: no certificate in the file")
    return roots


async def timestamp_checkpoint(
    store: StatusStore,
    checkpoint: StoredCheckpoint,
    url: str,
    roots: Sequence[x509.Certificate],
    *,
    timeout_s: float,
) -> bytes:
    """Get an RFC 3161 token over the checkpoint's payload, check it (ours: our digest and nonce; fresh:
    its time within the tolerance of the checkpoint's; from the trusted TSA), keep it."""
    digest = hashlib.sha256(checkpoint.payload).digest()
    nonce = secrets.randbits(63)
    token = await request_timestamp(url, digest, timeout_s=timeout_s, nonce=nonce)
    verify_token(
        token,
        digest=digest,
        trusted=roots,
        nonce=nonce,
        not_before=checkpoint.at - TIMESTAMP_TOLERANCE,
        not_after=checkpoint.at + TIMESTAMP_TOLERANCE,
    )
    await store.set_checkpoint_timestamp(checkpoint.number, token)
    return token


async def checkpoint_now(
    store: StatusStore, settings: Settings, identity: NodeIdentity, *, force: bool = False
) -> StoredCheckpoint | None:
    """Sign a checkpoint (and time-stamp it when a TSA is configured); None when nothing moved."""
    chain = node_chain(settings, identity)
    at = dt.datetime.now(dt.UTC)
    checkpoint = await store.write_checkpoint(
        at, str(identity.organ_id), lambda payload: sign_checkpoint(payload, identity.key, chain), force=force
    )
    if checkpoint is None:
        return None
    log.info(
        "audit.checkpoint", number=checkpoint.number, records=sum(h.seq for h in checkpoint.heads.values())
    )
    audit = settings.audit
    if audit.tsa_url is not None:
        try:
            await timestamp_checkpoint(
                store, checkpoint, audit.tsa_url, _tsa_roots(settings), timeout_s=audit.tsa_timeout_s
            )
        except TimestampError as exc:  # the checkpoint stands, signed; verify reports it unstamped
            log.error("audit.timestamp_failed", number=checkpoint.number, error=str(exc))
    return checkpoint


async def audit_job(store: StatusStore, settings: Settings, identity: NodeIdentity) -> None:
    """Checkpoints every ``checkpoint_interval_s`` (or ``checkpoint_records``), and retention."""
    audit = settings.audit
    poll_s = min(audit.checkpoint_interval_s, 2.0)
    retained = -float("inf")
    while True:
        await asyncio.sleep(poll_s)
        try:
            total, last = await store.audit_progress()
            covered = 0 if last is None else sum(h.seq for h in last.heads.values())
            waiting = total - covered
            age = None if last is None else dt.datetime.now(dt.UTC) - last.at
            if waiting >= audit.checkpoint_records or (
                waiting > 0 and (age is None or age.total_seconds() >= audit.checkpoint_interval_s)
            ):
                await checkpoint_now(store, settings, identity)
            if audit.retention_days and time.monotonic() - retained >= _RETAIN_EVERY_S:
                retained = time.monotonic()
                await retain(store, settings, identity)
        except BusError as exc:  # the database is down: the next round tries again
            log.error("audit.job_failed", error=str(exc))
        except Exception:  # a full disk, an unreadable archive_dir: logged, tried again, never silent
            log.exception("audit.job_failed")


async def export_archive(
    store: StatusStore,
    path: Path,
    settings: Settings,
    identity: NodeIdentity,
    *,
    anchor: StoredCheckpoint | None,
    last: StoredCheckpoint | None,
    period: tuple[dt.datetime | None, dt.datetime | None] = (None, None),
    previous_archive: str | None = None,
) -> tuple[str, int]:
    """Write the records after *anchor* up to *last* (to the end when None) and the checkpoints from
    *anchor* to *last*, as an archive at *path*; its SHA-256 and record count."""
    first_number = anchor.number if anchor is not None else None
    checkpoints = await store.audit_checkpoints(
        first=first_number, last=None if last is None else last.number
    )
    certificates = list(node_chain(settings, identity))
    for checkpoint in checkpoints:
        if checkpoint.timestamp is not None:
            certificates += [c for c in token_certificates(checkpoint.timestamp) if c not in certificates]
    writer = ArchiveWriter(path)
    try:
        async for record in store.audit_records(
            after=None if anchor is None else anchor.heads, upto=None if last is None else last.heads
        ):
            writer.add_record(record.data)
        digest = writer.finish(
            node=str(identity.organ_id),
            period=period,
            anchor=first_number,
            checkpoints=[c.as_checkpoint() for c in checkpoints],
            certificates=certificates,
            previous_archive=previous_archive,
            sign=signer(settings, identity),
            created_at=dt.datetime.now(dt.UTC),
        )
    except BaseException:
        writer.abort()
        raise
    with path.open("rb") as written:
        os.fsync(written.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the archive's name too, before retention deletes what it holds
    finally:
        os.close(directory)
    return digest, writer.records


async def retain(store: StatusStore, settings: Settings, identity: NodeIdentity) -> int:
    """Archive, then remove, the records under the newest checkpoint older than the retention period."""
    audit = settings.audit
    if audit.archive_dir is None:  # the settings refuse retention_days without it
        raise ConfigError("audit.retention_days needs audit.archive_dir")
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=audit.retention_days)
    anchor = await store.audit_anchor()
    old = [c for c in await store.audit_checkpoints() if c.at < cutoff]
    if not old or (anchor is not None and old[-1].number <= anchor.number):
        return 0
    upto = old[-1]
    previous = await store.last_audit_archive()
    directory = settings.path(audit.archive_dir)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"audit-{identity.organ_id}-{0 if anchor is None else anchor.number:08d}-{upto.number:08d}.zip"
    digest, count = await export_archive(
        store,
        directory / name,
        settings,
        identity,
        anchor=anchor,
        last=upto,
        period=(None if anchor is None else anchor.at, upto.at),
        previous_archive=None if previous is None else previous[1],
    )
    removed = await store.prune_audit(upto, (name, digest))
    log.info("audit.archived", archive=str(directory / name), sha256=digest, records=count, removed=removed)
    return removed
