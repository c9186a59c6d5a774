"""Helpers of the audit log's integration tests (issue 15): a node PKI valid in the past (checkpoints are
back-dated to test retention and stale time-stamps), a node's store and settings with an ``[audit]``
section, documents, live verification, archives rewritten and tables changed the way an attacker would."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, insert, select, text, update

from adapters.store import StatusStore
from adapters.store.tables import audit_checkpoints, audit_records
from bus.audit import Report, sign_checkpoint
from bus.delivery import AcceptedDocument
from bus.dsig import TrustStore
from bus.jws import canonical_json
from bus.pki import Issued, issue_certificate, make_ca
from bus.settings import Settings, load_settings
from entrypoints.audit import node_chain
from entrypoints.bootstrap import node_identity, open_store
from entrypoints.cli import main
from entrypoints.cli_audit import verify_live
from tests.integration.conftest import fresh_database, write_config
from tests.integration.dashboard_seed import engine_of

NODE = "000.00.90.H99"  # the example province's node
RECIPIENTS = ("000.00.21.H99", "000.01.21.H99")


@dataclass(frozen=True, slots=True)
class AuditPki:
    dir: Path
    ca_pem: Path
    other_ca_pem: Path  # a CA that did not issue the node's certificate
    other: Issued  # a signer under the other CA: a forger's key
    node_certificate: x509.Certificate

    @property
    def trust(self) -> TrustStore:
        return TrustStore.from_pem_files([self.ca_pem])


def make_audit_pki(out: Path, *, node_expires_in: dt.timedelta | None = None) -> AuditPki:
    """``ca.pem`` and ``nodes/<node>.{key,pem}`` as ``bus pki init`` lays them out, valid from 30 days
    ago: a checkpoint back-dated by days is checked at its own time, when the certificate must be valid.
    *node_expires_in*: the node's certificate ends that soon (valid for 30 days up to then)."""
    now = dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=30)
    ca = make_ca("Audit test CA", not_before=since)
    if node_expires_in is None:
        node = issue_certificate(ca, "Trục tỉnh Mẫu", NODE, not_before=since)
    else:
        start = now + node_expires_in - dt.timedelta(days=30)
        node = issue_certificate(ca, "Trục tỉnh Mẫu", NODE, not_before=start, days=30)
    other_ca = make_ca("Another CA", not_before=since)
    (out / "nodes").mkdir(parents=True)
    pem = serialization.Encoding.PEM
    (out / "ca.pem").write_bytes(ca.certificate.public_bytes(pem))
    (out / "other-ca.pem").write_bytes(other_ca.certificate.public_bytes(pem))
    (out / "nodes" / f"{NODE}.pem").write_bytes(node.certificate.public_bytes(pem))
    (out / "nodes" / f"{NODE}.key").write_bytes(
        node.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    forger = issue_certificate(other_ca, "Trục giả", NODE, not_before=since)
    return AuditPki(out, out / "ca.pem", out / "other-ca.pem", forger, node.certificate)


def audit_config(directory: Path, pki: AuditPki, database_url: str, audit: str = "") -> Path:
    """The example province's file on *database_url*, signing with *pki*'s node key; *audit*: lines of
    its ``[audit]`` section."""
    return write_config(
        directory / f"province-{uuid.uuid4().hex[:6]}.toml",
        pki.dir,
        prefix=f"test-{uuid.uuid4().hex[:10]}",
        database_url=database_url,
        extra=f"\n[audit]\n{audit}\n",
    )


def document(n: int, at: dt.datetime | None = None) -> AcceptedDocument:
    return AcceptedDocument(
        bus_id=f"00000000-0000-4000-8000-{n:012d}",
        kind="document",
        sender="000.00.01.H99",
        document_id=f"000.00.01.H99,2026/12/01,{n}/VP",
        business_type=0,
        code=f"{n}/VP",
        subject="V/v kiểm tra nhật ký kiểm toán",
        accepted_at=at or dt.datetime.now(dt.UTC),
        envelope_sha256=hashlib.sha256(f"received {n}".encode()).hexdigest(),
    )


async def accept(store: StatusStore, *numbers: int) -> None:
    """Accept documents for both recipients: an ``envelope.accepted`` record each."""
    for n in numbers:
        assert await store.record_accepted(document(n), [(r, "local") for r in RECIPIENTS])


def checkpoint_signer(settings: Settings) -> Callable[[bytes], str]:
    identity = node_identity(settings)
    chain = node_chain(settings, identity)
    return lambda payload: sign_checkpoint(payload, identity.key, chain)


async def live(settings: Settings, pki: AuditPki, tsa: Sequence[x509.Certificate] = ()) -> Report:
    """``bus audit verify --config``'s check of the log in the database, the node's CA trusted."""
    return await verify_live(settings, pki.trust, list(tsa))


def rewrite_zip(source: Path, target: Path, member: str, change: Callable[[bytes], bytes]) -> None:
    """*source* with *member* changed by *change*, every other member copied unchanged."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            new.writestr(info.filename, change(data) if info.filename == member else data)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Node:
    """A store opened as a gateway opens it, its settings and their file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.settings: Settings = load_settings(config)
        self.store: StatusStore = open_store(self.settings)

    @property
    def chain(self) -> str:
        return self.store.audit_chain


@asynccontextmanager
async def node_on(kind: str, tmp_path: Path, pki: AuditPki, audit: str = "") -> AsyncIterator[Node]:
    async with fresh_database(kind, tmp_path) as url:
        node = Node(audit_config(tmp_path, pki, url, audit))
        await node.store.create_schema()
        try:
            yield node
        finally:
            await node.store.close()


async def records(store: StatusStore) -> list[Any]:
    """The table's rows by chain and seq (read plainly: ``audit_records()`` is under test elsewhere)."""
    async with engine_of(store).connect() as conn:
        query = select(audit_records).order_by(audit_records.c.chain_id, audit_records.c.seq)
        return [
            SimpleNamespace(chain=r.chain_id, seq=r.seq, kind=r.kind, sha256=r.sha256, data=r.record.encode())
            for r in await conn.execute(query)
        ]


async def execute(store: StatusStore, statement: Any, params: dict[str, Any] | None = None) -> None:
    """A change made behind the bus's back: straight into the tables, as a database user could."""
    async with engine_of(store).begin() as conn:
        await conn.execute(text(statement) if isinstance(statement, str) else statement, params or {})


async def cli(*argv: str | Path) -> int:
    """``bus ...`` as a command (its own event loop, so in a thread)."""
    return await asyncio.to_thread(main, [str(a) for a in argv])


def reported(report: Report, where: str, *fragments: str) -> None:
    """A problem at *where* whose text holds every fragment."""
    found = [p for p in report.problems if p.where == where and all(f in p.what for f in fragments)]
    assert found, f"nothing at {where!r} saying {fragments}:\n{report.summary()}"


def at_seq(node: Node, seq: int) -> str:
    return f"audit_records chain {node.chain} seq {seq}"


# -- tampering with the live tables: each changes them and returns the check of the report --------


async def _row(store: StatusStore, chain: str, seq: int) -> Any:
    async with engine_of(store).connect() as conn:
        return (
            await conn.execute(
                select(audit_records).where(audit_records.c.chain_id == chain, audit_records.c.seq == seq)
            )
        ).one()


def _where(chain: str, seq: int) -> Any:
    return (audit_records.c.chain_id == chain) & (audit_records.c.seq == seq)


async def _set(store: StatusStore, chain: str, seq: int, record: str, sha256: str) -> None:
    await execute(store, update(audit_records).where(_where(chain, seq)).values(record=record, sha256=sha256))


def _sha(record: str) -> str:
    return hashlib.sha256(record.encode()).hexdigest()


Tamper = Callable[[Node], Awaitable[Callable[[Report], None]]]


async def untouched(node: Node) -> Callable[[Report], None]:
    def check(report: Report) -> None:
        assert report.ok, report.summary()
        assert report.problems == []
        assert (report.records, report.checkpoints, report.uncovered) == (7, 1, 0)

    return check


async def changed_in_place(node: Node) -> Callable[[Report], None]:
    old = await _row(node.store, node.chain, 3)
    await execute(
        node.store,
        'UPDATE audit_records SET record = replace(record, \'"code":"2/VP"\', \'"code":"9/VP"\') '
        "WHERE chain_id = :chain AND seq = 3",
        {"chain": node.chain},
    )
    new = _sha((await _row(node.store, node.chain, 3)).record)
    assert new != old.sha256

    def check(report: Report) -> None:
        reported(report, at_seq(node, 3), f"hash to {new}", f"but {old.sha256} is stored", "changed")
        reported(report, at_seq(node, 4), f"(seq 3) hashes to {new}", f"its prev is {old.sha256}")

    return check


async def changed_with_its_hash(node: Node) -> Callable[[Report], None]:
    old = await _row(node.store, node.chain, 3)
    forged = old.record.replace('"code":"2/VP"', '"code":"9/VP"')
    await _set(node.store, node.chain, 3, forged, _sha(forged))

    def check(report: Report) -> None:
        assert not [p for p in report.problems if p.where == at_seq(node, 3)]  # consistent in itself
        reported(report, at_seq(node, 4), f"its prev is {old.sha256}", f"(seq 3) hashes to {_sha(forged)}")

    return check


async def last_signed_changed_with_its_hash(node: Node) -> Callable[[Report], None]:
    old = await _row(node.store, node.chain, 7)
    forged = old.record.replace('"code":"6/VP"', '"code":"9/VP"')
    await _set(node.store, node.chain, 7, forged, _sha(forged))

    def check(report: Report) -> None:
        reported(
            report, at_seq(node, 7), f"checkpoint 1 signed this record's hash as {old.sha256}", "rewritten"
        )

    return check


async def column_changed(node: Node) -> Callable[[Report], None]:
    await execute(node.store, update(audit_records).where(_where(node.chain, 5)).values(kind="delivery.done"))

    def check(report: Report) -> None:
        reported(
            report, at_seq(node, 5), "kind is 'delivery.done' beside the record, 'envelope.accepted' inside"
        )

    return check


async def deleted_in_the_middle(node: Node) -> Callable[[Report], None]:
    await execute(node.store, delete(audit_records).where(_where(node.chain, 4)))

    def check(report: Report) -> None:
        reported(report, at_seq(node, 5), "follows seq 3: records 4 to 4 are missing (deleted)")
        reported(report, at_seq(node, 5), "its prev is", "(seq 3) hashes to")

    return check


async def forged_in_place_of_another(node: Node) -> Callable[[Report], None]:
    """Seq 4 deleted and a record of the forger's own put at seq 4: right seq, right prev, and a stored
    hash that matches its bytes. Only the record after it (and the checkpoint) can tell."""
    old = await _row(node.store, node.chain, 4)
    value = json.loads(old.record)
    value["recipients"] = ["000.00.99.H99"]
    forged = canonical_json(value).decode()
    await execute(node.store, delete(audit_records).where(_where(node.chain, 4)))
    await execute(
        node.store,
        insert(audit_records).values(
            chain_id=node.chain,
            seq=4,
            at=old.at,
            kind=old.kind,
            bus_id=old.bus_id,
            sha256=_sha(forged),
            record=forged,
        ),
    )

    def check(report: Report) -> None:
        reported(report, at_seq(node, 5), f"its prev is {old.sha256}", f"(seq 4) hashes to {_sha(forged)}")

    return check


async def swapped(node: Node) -> Callable[[Report], None]:
    third, fifth = await _row(node.store, node.chain, 3), await _row(node.store, node.chain, 5)
    await _set(node.store, node.chain, 3, fifth.record, fifth.sha256)
    await _set(node.store, node.chain, 5, third.record, third.sha256)

    def check(report: Report) -> None:
        reported(report, at_seq(node, 3), "seq is 3 beside the record, 5 inside it")
        reported(report, at_seq(node, 5), "seq is 5 beside the record, 3 inside it")
        reported(report, at_seq(node, 3), "its prev is")

    return check


async def truncated(node: Node) -> Callable[[Report], None]:
    await execute(
        node.store,
        delete(audit_records).where(audit_records.c.chain_id == node.chain, audit_records.c.seq >= 6),
    )

    def check(report: Report) -> None:
        reported(
            report,
            f"chain {node.chain}",
            "checkpoint 1 signed seq 7, but the log holds records up to seq 5: records were deleted",
        )

    return check


async def tail_cut_from_the_table(node: Node) -> Callable[[Report], None]:
    """The last record deleted, ``audit_chains`` left: the chain's head no longer matches its records."""
    last = await _row(node.store, node.chain, 7)
    await execute(node.store, delete(audit_records).where(_where(node.chain, 7)))

    def check(report: Report) -> None:
        reported(
            report,
            f"chain {node.chain}",
            f"audit_chains says its head is seq 7 ({last.sha256}), but its records end at seq 6",
            "deleted or added",
        )

    return check


async def checkpoint_column_changed(node: Node) -> Callable[[Report], None]:
    """A checkpoint's payload column changed, its JWS left (what retention's anchor is read from)."""
    await execute(
        node.store,
        update(audit_checkpoints)
        .where(audit_checkpoints.c.number == 1)
        .values(payload=audit_checkpoints.c.payload + " "),
    )

    def check(report: Report) -> None:
        reported(report, "checkpoint 1", "its payload or sha256 column is not what its JWS signed")

    return check


TAMPERINGS: list[Tamper] = [
    untouched,
    changed_in_place,
    changed_with_its_hash,
    last_signed_changed_with_its_hash,
    column_changed,
    deleted_in_the_middle,
    forged_in_place_of_another,
    swapped,
    truncated,
    tail_cut_from_the_table,
    checkpoint_column_changed,
]
