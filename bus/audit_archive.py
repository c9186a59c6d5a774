"""Audit archives: a self-contained ZIP file that anyone checks offline with the CA certificate alone
(``bus audit export`` writes one, ``bus audit verify FILE`` checks it; docs/audit.md gives the format).

=====================  ===========================================================================
``manifest.json``      what the archive holds: node, period, anchor and last checkpoint, record
                       count, the SHA-256 of every other file, the SHA-256 of the archive before it
``manifest.jws``       the manifest's bytes signed by the node (flattened JWS, :mod:`bus.jws`)
``records.jsonl``      the records, one per line, each exactly the bytes that were hashed
``checkpoints.jsonl``  ``{"number", "jws", "timestamp"}`` per line: the signed checkpoints from the
                       anchor (the one before the first record) to the last, time-stamps in base64
``certificates.pem``   the node's chain and the time-stamping authority's certificates, to read
``README.txt``         how to check the archive without the bus
=====================  ===========================================================================

The records of each chain start right after the anchor's head for that chain (or at the chain's
first record), and end at the last checkpoint's head (or at the end of the log, when the period reaches
past the last checkpoint: those records are reported as not yet covered).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bus.audit import Checkpoint, Head, Report, Verifier, claimed_time, heads_of, iso, parse_iso
from bus.dsig.trust import TrustStore
from bus.jws import EvidenceError, canonical_json, check_node, verify

__all__ = ["ARCHIVE_TYPE", "ArchiveWriter", "verify_archive"]

ARCHIVE_TYPE = "bus-audit-archive"
# What an archive may hold before it is refused unread (a record is a few KB; a checkpoint lists chains).
_MAX_MEMBER_BYTES = 256 * 1024 * 1024
_MAX_RECORDS_BYTES = 1 << 40
_MAX_LINE_BYTES = 16 * 1024 * 1024
_README = """Audit archive of an inter-agency document exchange bus.

Check it offline:  bus audit verify THIS-FILE --ca CA.pem [--tsa-ca TSA-CA.pem]
Without the bus: manifest.jws is a JSON Web Signature (RFC 7515) over manifest.json; manifest.json
gives the SHA-256 of every file; each line of records.jsonl is one record whose SHA-256 (over the
line's bytes, without the newline) is the "prev" of the next record of its chain; checkpoints.jsonl
holds the signed heads of every chain. docs/audit.md of the bus describes every field.
"""


class ArchiveWriter:
    """Writes an archive a record at a time (bounded memory, however many records)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self._records = self._zip.open("records.jsonl", "w", force_zip64=True)
        self._hash = hashlib.sha256()
        self.records = 0

    def add_record(self, data: bytes) -> None:
        line = data + b"\n"
        self._records.write(line)
        self._hash.update(line)
        self.records += 1

    def finish(
        self,
        *,
        node: str,
        period: tuple[dt.datetime | None, dt.datetime | None],
        anchor: int | None,
        checkpoints: Sequence[Checkpoint],
        certificates: Sequence[x509.Certificate],
        previous_archive: str | None,
        sign: Callable[[bytes], dict[str, str]],
        created_at: dt.datetime,
    ) -> str:
        """Write the rest and close; the archive file's SHA-256 (the next archive names it)."""
        self._records.close()
        files = {"records.jsonl": self._hash.hexdigest()}
        lines = b"".join(
            canonical_json(
                {
                    "number": c.number,
                    "jws": json.loads(c.jws),
                    "timestamp": None if c.timestamp is None else base64.b64encode(c.timestamp).decode(),
                }
            )
            + b"\n"
            for c in checkpoints
        )
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
        for name, data in (("checkpoints.jsonl", lines), ("certificates.pem", pem)):
            self._zip.writestr(name, data)
            files[name] = hashlib.sha256(data).hexdigest()
        manifest = canonical_json(
            {
                "v": 1,
                "type": ARCHIVE_TYPE,
                "node": node,
                "created_at": iso(created_at),
                "from": None if period[0] is None else iso(period[0]),
                "to": None if period[1] is None else iso(period[1]),
                "anchor": anchor,
                "last_checkpoint": checkpoints[-1].number if checkpoints else None,
                "records": self.records,
                "files": files,
                "previous_archive": previous_archive,
            }
        )
        self._zip.writestr("manifest.json", manifest)
        self._zip.writestr("manifest.jws", canonical_json(sign(manifest)))
        self._zip.writestr("README.txt", _README)
        self._zip.close()
        digest = hashlib.sha256()
        with self.path.open("rb") as written:
            for block in iter(lambda: written.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def abort(self) -> None:
        self._records.close()
        self._zip.close()
        self.path.unlink(missing_ok=True)


def _member_sha256(archive: zipfile.ZipFile, name: str) -> str:
    digest = hashlib.sha256()
    with archive.open(name) as member:
        for block in iter(lambda: member.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_archive(
    path: Path,
    trust: TrustStore,
    *,
    tsa_trust: Sequence[x509.Certificate] = (),
    node: str | None = None,
    require_timestamps: bool = False,
) -> Report:
    """Check an archive: its signed manifest, each file's digest, the checkpoints and every record.
    Problems name the file and line; :class:`EvidenceError` only when it is not an archive at all. An
    archive is untrusted input: whatever it holds ends in a report or that error, never a crash."""
    try:
        return _verify_archive(
            path, trust, tsa_trust=tsa_trust, node=node, require_timestamps=require_timestamps
        )
    except EvidenceError:
        raise
    except (
        AttributeError,
        TypeError,
        KeyError,
        ValueError,
        RecursionError,
        NotImplementedError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
    ) as exc:
        raise EvidenceError(f"{path} is not a valid audit archive: {type(exc).__name__}: {exc}") from exc


def _verify_archive(
    path: Path,
    trust: TrustStore,
    *,
    tsa_trust: Sequence[x509.Certificate],
    node: str | None,
    require_timestamps: bool,
) -> Report:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise EvidenceError(f"{path} is not an audit archive (a ZIP file): {exc}") from exc
    with archive:
        listed = archive.namelist()
        names = set(listed)
        if len(names) != len(listed):  # two members of one name: which would an expert have read?
            raise EvidenceError(f"{path}: a member name appears twice; an archive of the bus has each once")
        for info in archive.infolist():
            limit = _MAX_RECORDS_BYTES if info.filename == "records.jsonl" else _MAX_MEMBER_BYTES
            if info.file_size > limit:
                raise EvidenceError(f"{path}: {info.filename} declares {info.file_size} bytes, over {limit}")
        missing = {"manifest.json", "manifest.jws", "records.jsonl", "checkpoints.jsonl"} - names
        if missing:
            raise EvidenceError(f"{path} is not an audit archive: {', '.join(sorted(missing))} missing")
        manifest_bytes = archive.read("manifest.json")
        try:
            # The node's chain must have been valid when the archive was signed (its created_at), not
            # today: an archive outlives the certificate that signed it.
            created = json.loads(manifest_bytes).get("created_at")
            signed = verify(
                json.loads(archive.read("manifest.jws")),
                trust,
                at=parse_iso(created) if isinstance(created, str) else None,
            )
        except (ValueError, EvidenceError) as exc:
            raise EvidenceError(f"{path}: manifest.jws does not check: {exc}") from exc
        try:
            check_node(signed, node)
        except EvidenceError as exc:
            raise EvidenceError(f"{path}: manifest.jws: {exc}") from exc
        if signed.payload != manifest_bytes:
            raise EvidenceError(f"{path}: manifest.json is not what manifest.jws signed: it was changed")
        manifest: dict[str, Any] = signed.value
        if manifest.get("type") != ARCHIVE_TYPE:
            raise EvidenceError(f"{path}: a signed {manifest.get('type')!r}, not an audit archive")
        checkpoints = _checkpoints(archive.read("checkpoints.jsonl"))
        anchor_number = manifest.get("anchor")
        anchor: dict[str, Head] = {}
        if anchor_number is not None:
            first = next((c for c in checkpoints if c.number == anchor_number), None)
            if first is None:
                raise EvidenceError(f"{path}: the anchor, checkpoint {anchor_number}, is not in the archive")
            try:
                jws = json.loads(first.jws)
                value = verify(jws, trust, at=claimed_time(jws)).value
            except (ValueError, EvidenceError) as exc:
                raise EvidenceError(f"{path}: the anchor checkpoint does not check: {exc}") from exc
            anchor = heads_of(value)
        verifier = Verifier(
            trust,
            tsa_trust=tsa_trust,
            anchor=anchor,
            node=signed.value.get("node"),
            require_timestamps=require_timestamps,
        )
        for name, expected in sorted(manifest.get("files", {}).items()):
            if name not in names:
                verifier.problem(name, "is missing from the archive")
            elif (actual := _member_sha256(archive, name)) != expected:
                verifier.problem(
                    name,
                    f"its SHA-256 is {actual}, the signed manifest says {expected}: the file was changed",
                )
        verifier.check_checkpoints(checkpoints, where="checkpoints.jsonl: checkpoint")
        with archive.open("records.jsonl") as records:
            for number, line in enumerate(iter(lambda: records.readline(_MAX_LINE_BYTES), b""), start=1):
                if not line.endswith(b"\n") and len(line) == _MAX_LINE_BYTES:
                    raise EvidenceError(
                        f"{path}: records.jsonl line {number} is over {_MAX_LINE_BYTES} bytes"
                    )
                data = line.rstrip(b"\n")
                try:
                    value = json.loads(data)
                    chain, seq = str(value["chain"]), int(value["seq"])
                except (ValueError, KeyError, TypeError, RecursionError) as exc:
                    verifier.problem(f"records.jsonl line {number}", f"is not a record: {exc}")
                    continue
                where = f"records.jsonl line {number} (chain {chain}, seq {seq})"
                verifier.record(where, chain, seq, hashlib.sha256(data).hexdigest(), data, {})
        report = verifier.finish()
        if report.records != manifest.get("records"):
            verifier.problem(
                "records.jsonl",
                f"holds {report.records} records, the signed manifest says {manifest.get('records')}",
            )
        return report


def _checkpoints(data: bytes) -> list[Checkpoint]:
    checkpoints = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            value = json.loads(line)
            token = value.get("timestamp")
            checkpoints.append(
                Checkpoint(
                    int(value["number"]),
                    json.dumps(value["jws"]),
                    None if token is None else base64.b64decode(token, validate=True),
                )
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise EvidenceError(f"checkpoints.jsonl line {number} is not a checkpoint: {exc}") from exc
    return checkpoints
