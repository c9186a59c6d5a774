"""The tamper-evident audit log (issue 15) on the real databases: records written in the transaction of
their state change, one unbroken chain under concurrent writes, every kind of table tampering found
with its place, archives checked offline with the CA certificate alone, signed and time-stamped
checkpoints, and retention that archives before it removes."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from sqlalchemy import delete, event, select, text, update

from adapters.store import StatusStore
from adapters.store.tables import audit_checkpoints, documents
from adapters.tsa import request_timestamp
from bus.audit import GENESIS, Entry, Head
from bus.audit_archive import verify_archive
from bus.delivery import DeliveryState, TimelineEvent
from bus.dsig import TrustStore
from bus.errors import StoreError
from bus.jws import EvidenceError, b64url, canonical_json, sign, verify
from bus.timestamp import TimestampError
from entrypoints.audit import checkpoint_now, record_start, retain, timestamp_checkpoint
from entrypoints.bootstrap import node_identity, open_store
from tests.integration.audit_helpers import (
    NODE,
    RECIPIENTS,
    TAMPERINGS,
    AuditPki,
    Node,
    Tamper,
    accept,
    checkpoint_signer,
    cli,
    document,
    execute,
    file_sha256,
    live,
    make_audit_pki,
    node_on,
    records,
    reported,
    rewrite_zip,
    untouched,
)
from tests.integration.dashboard_seed import engine_of
from tests.tsa import LocalTsa

pytestmark = pytest.mark.asyncio
ROUTES = [(r, "local") for r in RECIPIENTS]


@pytest.fixture(scope="module")
def audit_pki(tmp_path_factory: pytest.TempPathFactory) -> AuditPki:
    return make_audit_pki(tmp_path_factory.mktemp("audit-pki"))


@pytest_asyncio.fixture
async def pg(tmp_path: Path, audit_pki: AuditPki) -> AsyncIterator[Node]:
    async with node_on("postgresql", tmp_path, audit_pki) as node:
        yield node


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def both(request: pytest.FixtureRequest, tmp_path: Path, audit_pki: AuditPki) -> AsyncIterator[Node]:
    async with node_on(request.param, tmp_path, audit_pki) as node:
        yield node


@pytest.fixture(scope="module")
def tsa() -> Iterator[LocalTsa]:
    with LocalTsa("Audit TSA") as local:
        yield local


@pytest.fixture(scope="module")
def foreign_tsa() -> Iterator[LocalTsa]:
    with LocalTsa("Foreign TSA") as local:
        yield local


# -- 1. records land in the transaction of their change -------------------------------------------------


async def test_the_store_reads_its_log_back_by_chain_and_seq(both: Node) -> None:
    """``audit_records()`` feeds ``bus audit verify``, exports and retention: every record, by chain and
    seq, from after some heads or up to others."""
    await accept(both.store, 1, 2)
    try:
        streamed = [r async for r in both.store.audit_records()]
    except StoreError as exc:
        pytest.fail(f"AuditLog.audit_records() cannot read the log: {exc}")
    assert [(r.seq, r.sha256, r.data) for r in streamed] == [
        (r.seq, r.sha256, r.data) for r in await records(both.store)
    ]
    heads = {both.chain: Head(2, streamed[1].sha256)}
    assert [r.seq async for r in both.store.audit_records(after=heads)] == [3]
    assert [r.seq async for r in both.store.audit_records(upto=heads)] == [1, 2]
    assert [r.seq async for r in both.store.audit_records(upto={})] == []


async def test_a_rolled_back_write_leaves_no_record_and_the_chain_goes_on(
    both: Node, audit_pki: AuditPki
) -> None:
    store = both.store
    await accept(store, 1)
    now = dt.datetime.now(dt.UTC)
    subject = documents.c.subject

    async def caller_fails() -> None:  # a change and its record, then the caller fails: neither stays
        async with store._begin() as conn:
            await conn.execute(update(documents).values(subject="changed"))
            store._audit(conn, [Entry("test.rolled_back", now, {"bus_id": document(1).bus_id})])
            raise RuntimeError("the caller failed")

    async def statement_fails() -> None:  # a statement fails after the record was asked for
        async with store._begin() as conn:
            store._audit(conn, [Entry("test.failed_statement", now, {})])
            await conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(RuntimeError, match="the caller failed"):
        await caller_fails()
    with pytest.raises(StoreError, match="no_such_table"):
        await statement_fails()
    async with engine_of(store).connect() as conn:
        assert (await conn.execute(select(subject))).scalar_one() == document(1).subject

    await accept(store, 2)
    kept = await records(store)
    assert [(r.seq, r.kind) for r in kept] == [
        (1, "chain.opened"),
        (2, "envelope.accepted"),
        (3, "envelope.accepted"),
    ]
    report = await live(both.settings, audit_pki)
    assert report.ok, report.summary()
    assert (report.records, report.chains) == (3, 1)


async def test_a_commit_that_fails_after_the_append_takes_the_records_with_it(
    pg: Node, audit_pki: AuditPki
) -> None:
    """The records are appended just before COMMIT; a deferred constraint fails the COMMIT itself. The
    chain (opened in that transaction) and its records go; the next write opens it again from seq 1."""
    store = pg.store
    await execute(store, "CREATE TABLE deferred_t (x integer, UNIQUE (x) DEFERRABLE INITIALLY DEFERRED)")
    appended: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "INSERT INTO audit_records" in statement:
            appended.append(statement)

    async def commit_fails() -> None:
        async with store._begin() as conn:
            store._audit(conn, [Entry("test.commit_failed", dt.datetime.now(dt.UTC), {})])
            await conn.execute(text("INSERT INTO deferred_t VALUES (1), (1)"))

    event.listen(engine_of(store).sync_engine, "before_cursor_execute", watch)
    with pytest.raises(StoreError, match="deferred_t"):
        await commit_fails()
    assert appended, "the append did not run before the commit: the test proves nothing"
    assert await records(store) == []
    async with engine_of(store).connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM audit_chains"))).scalar_one() == 0

    await accept(store, 1, 2)
    assert [(r.seq, r.kind) for r in await records(store)] == [
        (1, "chain.opened"),
        (2, "envelope.accepted"),
        (3, "envelope.accepted"),
    ]
    report = await live(pg.settings, audit_pki)
    assert report.ok, report.summary()


async def test_concurrent_writes_share_commits_and_make_one_unbroken_chain(
    both: Node, audit_pki: AuditPki
) -> None:
    store = both.store
    commits: list[int] = []
    event.listen(engine_of(store).sync_engine, "commit", lambda _conn: commits.append(1))
    outcomes = await asyncio.gather(*(store.record_accepted(document(n), ROUTES) for n in range(50)))
    assert outcomes == [True] * 50
    later = dt.datetime.now(dt.UTC)
    steps = [
        (TimelineEvent(document(n).bus_id, recipient, state, later), f"{n}|{recipient}|{state}")
        for n in range(50)
        for recipient, state in (
            (RECIPIENTS[0], DeliveryState.QUEUED),
            (RECIPIENTS[1], DeliveryState.FETCHED),
        )
    ]
    assert await asyncio.gather(*(store.record(e, key=k) for e, k in steps)) == [True] * 100
    assert len(commits) < 100, "no transaction was shared: the test does not exercise group commit"

    kept = await records(store)
    assert {r.chain for r in kept} == {both.chain}
    assert [r.seq for r in kept] == list(range(1, 152))
    assert Counter(r.kind for r in kept) == {
        "chain.opened": 1,
        "envelope.accepted": 50,
        "delivery.queued": 50,
        "delivery.fetched": 50,
    }
    async with engine_of(store).connect() as conn:
        head = (await conn.execute(text("SELECT seq, head FROM audit_chains"))).one()
    assert (head.seq, head.head) == (151, kept[-1].sha256)
    report = await live(both.settings, audit_pki)
    assert report.ok, report.summary()
    assert (report.records, report.chains, report.uncovered) == (151, 1, 151)


async def test_an_accepted_document_and_each_of_its_events_have_their_records(both: Node) -> None:
    store = both.store
    doc = document(7)
    assert await store.begin_accept(doc, ROUTES) is None
    # Received (the document and its deliveries exist), not accepted until the broker confirmed.
    [received] = await store.audit_of(doc.bus_id)
    assert received.kind == "envelope.received"
    assert json.loads(received.data)["received_sha256"] == doc.envelope_sha256
    sealed = hashlib.sha256(b"the envelope as sealed").hexdigest()
    await store.confirm_accept(doc, list(RECIPIENTS), delivered_sha256=sealed)
    await store.confirm_accept(doc, list(RECIPIENTS), delivered_sha256=sealed)  # idempotent
    at = dt.datetime.now(dt.UTC)
    first = RECIPIENTS[0]
    for state, detail in (
        (DeliveryState.QUEUED, None),
        (DeliveryState.FETCHED, None),
        (DeliveryState.STATUS, "03"),
        (DeliveryState.DONE, None),
    ):
        event_ = TimelineEvent(doc.bus_id, first, state, at, detail=detail)
        assert await store.record(event_, key=f"{doc.bus_id}|{first}|{state}")
    assert not await store.record(
        TimelineEvent(doc.bus_id, first, DeliveryState.DONE, at), key=f"{doc.bus_id}|{first}|done"
    )

    found = (await store.audit_of(doc.bus_id))[1:]  # after envelope.received
    assert [r.kind for r in found] == [
        "envelope.accepted",
        "delivery.queued",
        "delivery.fetched",
        "delivery.status",
        "delivery.done",
    ]
    accepted = json.loads(found[0].data)
    assert accepted["received_sha256"] == doc.envelope_sha256
    assert accepted["delivered_sha256"] == sealed
    assert accepted["recipients"] == sorted(RECIPIENTS)
    assert (accepted["sender"], accepted["document_id"]) == (doc.sender, doc.document_id)
    values = [json.loads(r.data) for r in found[1:]]
    assert {v["recipient"] for v in values} == {first}
    assert values[2]["detail"] == "03"
    assert [v["key"] for v in values] == [
        f"{doc.bus_id}|{first}|{s}" for s in ("queued", "fetched", "status", "done")
    ]


async def test_the_start_up_record_keeps_no_password(both: Node) -> None:
    """``node.started`` records the configuration "secrets masked" (entrypoints/audit.py); it goes into
    archives handed to auditors, so no password may be in it, not even one inside a URL."""
    settings = both.settings
    urls = [settings.amqp.url, *settings.amqp.nodes, settings.database.url]
    passwords = {p for p in (urlsplit(u).password for u in urls) if p}
    assert passwords  # the example's broker URL (and the test PostgreSQL's) carries one
    await record_start(both.store, settings, command="test")
    [started] = [r for r in await records(both.store) if r.kind == "node.started"]
    data = started.data.decode()
    assert "demo-only" not in data  # agencies' and the dashboard's secrets
    leaked = sorted(u for u in urls if any(f":{p}@" in u for p in passwords) and u in data)
    assert not leaked, f"URLs with their password in the audit log's node.started record: {leaked}"


async def test_a_commit_whose_answer_was_lost_is_followed_without_a_fork(
    both: Node, audit_pki: AuditPki
) -> None:
    """The head is kept in memory; when the database's moved without it (a commit that went through,
    its answer lost), the guard fails and the head is read again in the same transaction."""
    store = both.store
    await accept(store, 1)
    behind = store._chain.head
    await accept(store, 2)
    store._chain.head = behind  # as if the commit of document 2 had raised
    await accept(store, 3)
    assert [(r.seq, r.kind) for r in await records(store)] == [
        (1, "chain.opened"),
        (2, "envelope.accepted"),
        (3, "envelope.accepted"),
        (4, "envelope.accepted"),
    ]
    report = await live(both.settings, audit_pki)
    assert report.ok, report.summary()


# -- 2. tampering with the live tables ---------------------------------------------------------------------


@pytest.mark.parametrize("tamper", TAMPERINGS)
async def test_tampering_with_the_live_tables_is_reported_where_it_happened(
    both: Node, audit_pki: AuditPki, tamper: Tamper
) -> None:
    await accept(both.store, *range(1, 7))  # seq 1 opens the chain, 2-7 are documents 1-6
    checkpoint = await checkpoint_now(both.store, both.settings, node_identity(both.settings))
    assert checkpoint is not None
    assert checkpoint.heads[both.chain].seq == 7
    check = await tamper(both)
    check(await live(both.settings, audit_pki))
    assert await cli("audit", "verify", "--config", both.config) == (0 if tamper is untouched else 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- 3. archives, checked offline ------------------------------------------------------------------------


async def _export(node: Node, path: Path) -> Path:
    """Two chains of five records each (two gateways on one database), exported by ``bus audit export``
    (which signs a checkpoint of them first)."""
    other = open_store(node.settings)
    try:
        await accept(node.store, 1, 2, 3, 4)
        await accept(other, 5, 6, 7, 8)
    finally:
        await other.close()
    assert await cli("audit", "export", "--config", node.config, "-o", path) == 0
    return path


def _manifest(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        return dict(json.loads(archive.read("manifest.json")))


async def test_an_exported_archive_verifies_offline_with_the_ca_certificate_alone(
    both: Node, audit_pki: AuditPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = await _export(both, tmp_path / "export.zip")
    ca_only = TrustStore.from_pem_files([audit_pki.ca_pem])
    report = verify_archive(path, ca_only)
    assert report.ok, report.summary()
    assert (report.records, report.chains, report.checkpoints, report.uncovered) == (10, 2, 1, 0)
    manifest = _manifest(path)
    assert (manifest["records"], manifest["anchor"], manifest["last_checkpoint"]) == (10, None, 1)
    assert manifest["node"] == NODE
    capsys.readouterr()
    assert await cli("audit", "verify", path, "--ca", audit_pki.ca_pem) == 0
    assert "OK: the log is intact" in capsys.readouterr().out

    # Checked against another CA: the manifest's signer is not trusted.
    with pytest.raises(EvidenceError, match=r"manifest\.jws does not check"):
        verify_archive(path, TrustStore.from_pem_files([audit_pki.other_ca_pem]))
    assert await cli("audit", "verify", path, "--ca", audit_pki.other_ca_pem) == 1
    assert "FAILED" in capsys.readouterr().out

    # The manifest changed (fewer records claimed), its signature left.
    fewer = tmp_path / "fewer.zip"
    rewrite_zip(path, fewer, "manifest.json", lambda data: data.replace(b'"records":10', b'"records":9'))
    with pytest.raises(EvidenceError, match=r"manifest\.json is not what manifest\.jws signed"):
        verify_archive(fewer, ca_only)
    assert await cli("audit", "verify", fewer, "--ca", audit_pki.ca_pem) == 1

    # ... and signed again by a key the CA did not certify.
    forger = audit_pki.other
    resigned = tmp_path / "resigned.zip"
    forged = canonical_json({**manifest, "records": 9})
    rewrite_zip(
        fewer,
        resigned,
        "manifest.jws",
        lambda _: canonical_json(sign(forged, forger.key, [forger.certificate])),
    )
    rewrite_zip(resigned, fewer, "manifest.json", lambda _: forged)
    with pytest.raises(EvidenceError, match=r"manifest\.jws does not check.*not trusted"):
        verify_archive(fewer, ca_only)


def _change(lines: list[bytes]) -> list[bytes]:
    value = json.loads(lines[2])  # seq 3: the record after it (line 4) no longer links to it
    value["code"] = "9/VP"
    return [*lines[:2], canonical_json(value), *lines[3:]]


def _insert(lines: list[bytes]) -> list[bytes]:
    value = json.loads(lines[3])  # a forged seq 4, linked to line 3 as the real one is
    value["recipients"] = ["000.00.99.H99"]
    return [*lines[:3], canonical_json(value), *lines[3:]]


LINE_TAMPERING: dict[str, tuple[Callable[[list[bytes]], list[bytes]], list[tuple[int, str]]]] = {
    "changed": (_change, [(4, "(seq 3) hashes to")]),
    "deleted": (lambda lines: [*lines[:2], *lines[3:]], [(3, "follows seq 2: records 3 to 3 are missing")]),
    "inserted": (_insert, [(5, "comes after seq 4: a record out of order"), (5, "its prev is")]),
    "swapped": (
        lambda lines: [*lines[:2], lines[3], lines[2], *lines[4:]],
        [(3, "follows seq 2: records 3 to 3 are missing"), (4, "comes after seq 4")],
    ),
}


@pytest.mark.parametrize("case", sorted(LINE_TAMPERING))
async def test_a_tampered_line_of_an_archive_is_found_by_its_line(
    tmp_path: Path, audit_pki: AuditPki, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with node_on("sqlite", tmp_path, audit_pki) as node:  # the file is under test, not the database
        path = await _export(node, tmp_path / "export.zip")
    with zipfile.ZipFile(path) as archive:
        original = archive.read("records.jsonl").splitlines()
    assert len(original) == 10
    chain = json.loads(original[0])["chain"]
    change, expected = LINE_TAMPERING[case]
    changed = change(original)
    tampered = tmp_path / f"{case}.zip"
    rewrite_zip(path, tampered, "records.jsonl", lambda _: b"".join(line + b"\n" for line in changed))

    report = verify_archive(tampered, TrustStore.from_pem_files([audit_pki.ca_pem]))
    reported(report, "records.jsonl", "the signed manifest says", "the file was changed")
    for line, what in expected:
        seq = json.loads(changed[line - 1])["seq"]
        reported(report, f"records.jsonl line {line} (chain {chain}, seq {seq})", what)
    if len(changed) != len(original):
        reported(report, "records.jsonl", f"holds {len(changed)} records, the signed manifest says 10")
    capsys.readouterr()
    assert await cli("audit", "verify", tampered, "--ca", audit_pki.ca_pem) == 1
    assert f"PROBLEM records.jsonl line {expected[0][0]} " in capsys.readouterr().out


# -- 4. checkpoints and their time-stamps ----------------------------------------------------------------


async def test_checkpoints_sign_every_chain_and_link_to_the_one_before(
    both: Node, audit_pki: AuditPki, capsys: pytest.CaptureFixture[str]
) -> None:
    store, settings = both.store, both.settings
    identity = node_identity(settings)
    other = open_store(settings)
    try:
        await asyncio.gather(accept(store, 1, 2), accept(other, 3))
        first = await checkpoint_now(store, settings, identity)
        assert first is not None
        assert {c: h.seq for c, h in first.heads.items()} == {both.chain: 3, other.audit_chain: 2}
        assert await checkpoint_now(store, settings, identity) is None  # nothing moved
        await accept(other, 4)
        second = await checkpoint_now(store, settings, identity)
        forced = await checkpoint_now(store, settings, identity, force=True)
    finally:
        await other.close()
    assert second is not None
    assert forced is not None
    assert {c: h.seq for c, h in second.heads.items()} == {both.chain: 3, other.audit_chain: 3}
    assert forced.heads == second.heads
    stored = await store.audit_checkpoints()
    assert [c.number for c in stored] == [1, 2, 3]
    assert [json.loads(c.payload)["prev"] for c in stored] == [GENESIS, first.sha256, second.sha256]
    for checkpoint in stored:
        signed = verify(json.loads(checkpoint.jws), audit_pki.trust)
        assert signed.payload == checkpoint.payload
        assert hashlib.sha256(signed.payload).hexdigest() == checkpoint.sha256

    report = await live(settings, audit_pki)
    assert report.ok, report.summary()
    assert (report.records, report.chains, report.checkpoints, report.uncovered) == (6, 2, 3, 0)
    await accept(store, 5)
    assert (await live(settings, audit_pki)).uncovered == 1  # written after the last checkpoint
    capsys.readouterr()
    assert await cli("audit", "checkpoint", "--config", both.config) == 0
    assert "checkpoint 4 signed" in capsys.readouterr().out
    assert (await live(settings, audit_pki)).uncovered == 0


async def _replace_jws(
    store: StatusStore, number: int, jws: dict[str, str], payload: bytes | None = None
) -> None:
    values: dict[str, Any] = {"jws": json.dumps(jws)}
    if payload is not None:
        values |= {"payload": payload.decode(), "sha256": hashlib.sha256(payload).hexdigest()}
    await execute(
        store, update(audit_checkpoints).where(audit_checkpoints.c.number == number).values(**values)
    )


@pytest.mark.parametrize("forgery", ["payload-changed", "signed-by-another-ca", "deleted", "table-only"])
async def test_a_forged_checkpoint_is_reported(both: Node, audit_pki: AuditPki, forgery: str) -> None:
    store, settings = both.store, both.settings
    for n in (1, 2, 3):
        await accept(store, n)
        assert await checkpoint_now(store, settings, node_identity(settings)) is not None
    number = 3 if forgery == "table-only" else 2
    [stored] = await store.audit_checkpoints(first=number, last=number)
    value = json.loads(stored.payload)
    value["chains"][0]["seq"] -= 1  # the forger wants the last record outside the checkpoint
    forged = canonical_json(value)
    what: tuple[str, ...]
    if forgery == "payload-changed":  # in the table and in the JWS, the signature left
        await _replace_jws(store, 2, {**json.loads(stored.jws), "payload": b64url(forged)}, forged)
        where, what = "checkpoint 2", ("its signature does not check", "the payload was changed")
    elif forgery == "signed-by-another-ca":
        key, certificate = audit_pki.other.key, audit_pki.other.certificate
        await _replace_jws(store, 2, sign(forged, key, [certificate]), forged)
        where, what = "checkpoint 2", ("its signature does not check", "not trusted")
    elif forgery == "deleted":
        await execute(store, delete(audit_checkpoints).where(audit_checkpoints.c.number == 2))
        where, what = "checkpoint 3", ("checkpoints 2 to 2 are missing",)
    else:  # the last one's payload and hash in the table, its JWS left: the next links to the forgery
        await _replace_jws(store, 3, json.loads(stored.jws), forged)
        assert await checkpoint_now(store, settings, node_identity(settings), force=True) is not None
        forged_sha = hashlib.sha256(forged).hexdigest()
        where, what = "checkpoint 4", (f"with hash {forged_sha}, expected {stored.sha256}",)
    reported(await live(settings, audit_pki), where, *what)


async def test_a_time_stamped_checkpoint_verifies_with_the_tsa_ca(
    db_kind: str, tmp_path: Path, audit_pki: AuditPki, tsa: LocalTsa, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = f'tsa_url = "{tsa.url}"\ntsa_ca = "{tsa.ca_pem_path}"'
    async with node_on(db_kind, tmp_path, audit_pki, audit) as node:
        await accept(node.store, 1)
        requests = tsa.requests
        checkpoint = await checkpoint_now(node.store, node.settings, node_identity(node.settings))
        assert checkpoint is not None
        assert tsa.requests == requests + 1
        [stored] = await node.store.audit_checkpoints()
        assert stored.timestamp is not None
        report = await live(node.settings, audit_pki, [tsa.ca_certificate])
        assert report.ok, report.summary()
        assert report.timestamped == 1
        # Without the TSA's CA, the token cannot be checked: said so, not passed over.
        reported(await live(node.settings, audit_pki), "checkpoint 1", "no TSA CA certificate was given")
        capsys.readouterr()
        assert await cli("audit", "verify", "--config", node.config) == 0  # tsa_ca from the settings
        assert "(1 time-stamped, 0 without one)" in capsys.readouterr().out
        path = tmp_path / "stamped.zip"
        assert await cli("audit", "export", "--config", node.config, "-o", path) == 0
    trust = TrustStore.from_pem_files([audit_pki.ca_pem])
    offline = verify_archive(path, trust, tsa_trust=[tsa.ca_certificate])
    assert offline.ok, offline.summary()
    assert offline.timestamped == 1


async def test_a_stale_time_stamp_is_refused(pg: Node, audit_pki: AuditPki, tsa: LocalTsa) -> None:
    await accept(pg.store, 1)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    checkpoint = await pg.store.write_checkpoint(past, NODE, checkpoint_signer(pg.settings))
    assert checkpoint is not None
    with pytest.raises(TimestampError, match=r"stale time-stamp: genTime \S+ is after the latest accepted"):
        await timestamp_checkpoint(pg.store, checkpoint, tsa.url, [tsa.ca_certificate], timeout_s=10)
    [stored] = await pg.store.audit_checkpoints()
    assert stored.timestamp is None  # refused, not kept
    report = await live(pg.settings, audit_pki, [tsa.ca_certificate])
    # A checkpoint the TSA did not stamp stands on its signature, and is counted as such.
    assert report.ok, report.summary()
    assert (report.timestamped, report.unstamped) == (0, 1)


async def test_a_checkpoint_stands_unstamped_when_the_tsa_cannot_be_reached(
    tmp_path: Path, audit_pki: AuditPki, tsa: LocalTsa
) -> None:
    audit = f'tsa_url = "http://127.0.0.1:9/tsa"\ntsa_ca = "{tsa.ca_pem_path}"\ntsa_timeout_s = 2'
    async with node_on("sqlite", tmp_path, audit_pki, audit) as node:
        await accept(node.store, 1)
        checkpoint = await checkpoint_now(node.store, node.settings, node_identity(node.settings))
        assert checkpoint is not None
        [stored] = await node.store.audit_checkpoints()
        assert stored.timestamp is None
        report = await live(node.settings, audit_pki, [tsa.ca_certificate])
    assert report.checkpoints == 1
    assert report.ok, report.summary()
    assert (report.timestamped, report.unstamped) == (0, 1)


@pytest.mark.parametrize("source", ["other-data", "untrusted-tsa"])
async def test_a_foreign_time_stamp_in_the_table_is_reported(
    both: Node, audit_pki: AuditPki, tsa: LocalTsa, foreign_tsa: LocalTsa, source: str
) -> None:
    await accept(both.store, 1)
    checkpoint = await checkpoint_now(both.store, both.settings, node_identity(both.settings))
    assert checkpoint is not None
    if source == "other-data":
        token = await request_timestamp(tsa.url, hashlib.sha256(b"another payload").digest())
        what = "a foreign time-stamp"
    else:
        token = await request_timestamp(foreign_tsa.url, hashlib.sha256(checkpoint.payload).digest())
        what = "does not check"
        with pytest.raises(TimestampError):  # the bus itself would not have kept it
            await timestamp_checkpoint(
                both.store, checkpoint, foreign_tsa.url, [tsa.ca_certificate], timeout_s=10
            )
    await both.store.set_checkpoint_timestamp(checkpoint.number, token)
    report = await live(both.settings, audit_pki, [tsa.ca_certificate])
    reported(report, "checkpoint 1", "its time-stamp does not check", what)
    assert report.timestamped == 0


# -- 5. retention --------------------------------------------------------------------------------


async def test_retention_archives_then_removes_and_the_archives_chain(
    db_kind: str, tmp_path: Path, audit_pki: AuditPki
) -> None:
    archives = tmp_path / "archives"
    async with node_on(
        db_kind, tmp_path, audit_pki, f'retention_days = 1\narchive_dir = "{archives}"'
    ) as node:
        store, settings = node.store, node.settings
        identity = node_identity(settings)
        sign_ = checkpoint_signer(settings)
        now = dt.datetime.now(dt.UTC)
        await accept(store, 1, 2, 3)  # seq 1-4
        assert await store.write_checkpoint(now - dt.timedelta(days=3), NODE, sign_) is not None
        await accept(store, 4, 5)  # seq 5-6
        assert await store.write_checkpoint(now - dt.timedelta(days=2), NODE, sign_) is not None
        await accept(store, 6)  # seq 7, under no checkpoint yet

        assert await retain(store, settings, identity) == 6
        first = archives / f"audit-{NODE}-00000000-00000002.zip"
        assert sorted(p.name for p in archives.iterdir()) == [first.name]
        assert [r.seq for r in await records(store)] == [7]
        assert [c.number for c in await store.audit_checkpoints()] == [2]  # the anchor stays
        assert await store.last_audit_archive() == (first.name, file_sha256(first), 2)
        report = await live(settings, audit_pki)
        assert report.ok, report.summary()
        assert (report.records, report.uncovered) == (1, 1)
        offline = verify_archive(first, TrustStore.from_pem_files([audit_pki.ca_pem]))
        assert offline.ok, offline.summary()
        assert (offline.records, offline.checkpoints) == (6, 2)
        assert _manifest(first)["previous_archive"] is None
        assert await retain(store, settings, identity) == 0  # nothing newer is old enough

        await accept(store, 7)  # seq 8
        assert await store.write_checkpoint(now - dt.timedelta(hours=36), NODE, sign_) is not None
        await accept(store, 8)  # seq 9
        assert await checkpoint_now(store, settings, identity) is not None
        assert await retain(store, settings, identity) == 2
        second = archives / f"audit-{NODE}-00000002-00000003.zip"
        manifest = _manifest(second)
        assert manifest["previous_archive"] == file_sha256(first)
        assert (manifest["anchor"], manifest["last_checkpoint"], manifest["records"]) == (2, 3, 2)
        offline = verify_archive(second, TrustStore.from_pem_files([audit_pki.ca_pem]))
        assert offline.ok, offline.summary()
        assert [r.seq for r in await records(store)] == [9]
        report = await live(settings, audit_pki)
        assert report.ok, report.summary()
        assert (report.records, report.checkpoints, report.uncovered) == (1, 2, 0)


async def test_an_archive_still_checks_once_the_node_certificate_expired(tmp_path: Path) -> None:
    """An archive outlives the certificate that signed it: ``manifest.jws`` is checked at the archive's
    ``created_at`` and the checkpoints at their own ``at``, so it still checks after the expiry."""
    pki = make_audit_pki(tmp_path / "pki", node_expires_in=dt.timedelta(seconds=3))
    async with node_on("sqlite", tmp_path, pki) as node:
        path = await _export(node, tmp_path / "export.zip")
    report = verify_archive(path, pki.trust)
    assert report.ok, report.summary()
    expired = pki.node_certificate.not_valid_after_utc
    await asyncio.sleep(max(0.0, (expired - dt.datetime.now(dt.UTC)).total_seconds()) + 1.1)
    assert dt.datetime.now(dt.UTC) > expired
    after = verify_archive(path, pki.trust)
    assert after.ok, after.summary()
