"""The audit log's evidence against a forger and against hostile input (issue 15, after review): an
agency's certificate from the same CA cannot pass for the bus node's, a checkpoint's time-stamp cannot
be dropped when time-stamps are required, a hostile archive ends in a clear error, a delivery receipt
names the bytes the recipient's inbox was given, and no secret enters the start-up record."""

from __future__ import annotations

import datetime as dt
import json
import re
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bus.audit_archive import verify_archive
from bus.delivery import DeliveryState, TimelineEvent
from bus.dsig import TrustStore
from bus.jws import EvidenceError, canonical_json, sign
from bus.pki import Issued, issue_certificate, make_ca
from bus.receipts import Notary, receipts_from_records, verify_receipt
from entrypoints.audit import checkpoint_now, record_start, settings_record
from entrypoints.bootstrap import node_identity
from tests.integration.audit_helpers import (
    NODE,
    RECIPIENTS,
    AuditPki,
    Node,
    accept,
    cli,
    document,
    live,
    make_audit_pki,
    node_on,
    reported,
    rewrite_zip,
)

pytestmark = pytest.mark.asyncio

AGENCY = "000.00.01.H99"


@pytest.fixture
def audit_pki(tmp_path: Path) -> AuditPki:
    return make_audit_pki(tmp_path / "pki")


def _agency_of_the_same_ca(tmp_path: Path) -> tuple[TrustStore, Notary, Notary, Issued]:
    """One CA that issued both the bus node's certificate and an agency's (as ``bus pki init`` does):
    a notary for each, and the trust store of that CA."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    ca = make_ca("Province CA", not_before=since)
    node = issue_certificate(ca, "Trục tỉnh", NODE, not_before=since)
    agency = issue_certificate(ca, "Sở Tài chính", AGENCY, not_before=since)
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    trust = TrustStore.from_pem_files([path])
    notaries = Notary(NODE, node.key, [node.certificate]), Notary(AGENCY, agency.key, [agency.certificate])
    return trust, *notaries, agency


def _receipt(notary: Notary) -> dict[str, str]:
    return notary.delivered(
        bus_id="00000000-0000-4000-8000-000000000001",
        document_id=f"{AGENCY},2026/12/01,1/VP",
        sender=AGENCY,
        recipient=RECIPIENTS[0],
        state="done",
        at=dt.datetime.now(dt.UTC),
        sha256="ab" * 32,
        reason=None,
        audit={"chain": "c", "seq": 1, "record": "cd" * 32},
    )


async def test_a_receipt_an_agency_signed_does_not_pass_for_the_buss(tmp_path: Path) -> None:
    trust, bus, agency, issued = _agency_of_the_same_ca(tmp_path)
    agency_key, agency_certificate = issued.key, issued.certificate
    assert verify_receipt(_receipt(bus), trust, node=NODE).value["node"] == NODE
    forged = _receipt(agency)  # a valid signature of the same CA, by the sender itself
    with pytest.raises(EvidenceError, match=re.escape(f"signed by '{AGENCY}', not by the bus node '{NODE}'")):
        verify_receipt(forged, trust, node=NODE)
    # Without --node it checks, and says who signed it: an agency, not the bus.
    assert verify_receipt(forged, trust).value["node"] == AGENCY
    # A payload that names the bus node, signed with the agency's key: the certificate gives it away.
    value = json.loads(verify_receipt(forged, trust).payload)
    by_hand = sign(canonical_json({**value, "node": NODE}), agency_key, [agency_certificate])
    with pytest.raises(
        EvidenceError, match=f"it says node '{NODE}' signed it, but the certificate is '{AGENCY}'"
    ):
        verify_receipt(by_hand, trust)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged), encoding="utf-8")
    assert await cli("receipt", "verify", path, "--ca", tmp_path / "ca.pem", "--node", NODE) == 1
    assert await cli("receipt", "verify", path, "--ca", tmp_path / "ca.pem") == 0


async def test_a_checkpoint_without_its_time_stamp_fails_when_time_stamps_are_required(
    tmp_path: Path, audit_pki: AuditPki
) -> None:
    async with node_on("sqlite", tmp_path, audit_pki) as node:
        await accept(node.store, 1)
        assert await checkpoint_now(node.store, node.settings, node_identity(node.settings)) is not None
        relaxed = await live(node.settings, audit_pki)
        assert relaxed.ok, relaxed.summary()
        assert relaxed.unstamped == 1
        assert await cli("audit", "verify", "--config", node.config) == 0
        assert await cli("audit", "verify", "--config", node.config, "--require-timestamps") == 1
        out = tmp_path / "a.zip"
        assert await cli("audit", "export", "--config", node.config, "-o", out) == 0
    strict = verify_archive(out, audit_pki.trust, require_timestamps=True)
    reported(strict, "checkpoints.jsonl: checkpoint 1", "has no time-stamp, and time-stamps are required")
    assert verify_archive(out, audit_pki.trust, node=NODE).ok
    with pytest.raises(EvidenceError, match=r"not by the bus node '000\.00\.02\.H99'"):
        verify_archive(out, audit_pki.trust, node="000.00.02.H99")


async def _archive(node: Node, tmp_path: Path) -> Path:
    await accept(node.store, 1, 2)
    out = tmp_path / "good.zip"
    assert await cli("audit", "export", "--config", node.config, "-o", out) == 0
    return out


@pytest.mark.parametrize(
    ("member", "change", "message"),
    [
        ("records.jsonl", lambda _d: b"[" * 100_000 + b"\n", "records.jsonl line 1"),
        ("checkpoints.jsonl", lambda _d: b"[1]\n", "not a valid audit archive"),
        (
            "checkpoints.jsonl",
            lambda _d: b"{" * 50_000 + b"\n",
            "checkpoints.jsonl line 1 is not a checkpoint",
        ),
        ("manifest.jws", lambda _d: b"[]", "manifest.jws does not check"),
    ],
)
async def test_a_hostile_archive_ends_in_a_report_or_a_clear_error(
    tmp_path: Path, audit_pki: AuditPki, member: str, change: object, message: str
) -> None:
    async with node_on("sqlite", tmp_path, audit_pki) as node:
        good = await _archive(node, tmp_path)
    bad = tmp_path / "bad.zip"
    rewrite_zip(good, bad, member, change)  # type: ignore[arg-type]
    outcome = _outcome(bad, audit_pki)
    assert message in outcome
    assert "OK: the log is intact" not in outcome
    assert await cli("audit", "verify", bad, "--ca", audit_pki.ca_pem) == 1


def _outcome(path: Path, pki: AuditPki) -> str:
    """The report's text, or the error's: either way, what the expert reads."""
    try:
        report = verify_archive(path, pki.trust)
    except EvidenceError as exc:
        return f"error: {exc}"
    return report.summary()


async def test_an_archive_with_a_member_twice_is_refused(tmp_path: Path, audit_pki: AuditPki) -> None:
    async with node_on("sqlite", tmp_path, audit_pki) as node:
        good = await _archive(node, tmp_path)
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(good) as old, zipfile.ZipFile(twice, "w") as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))
        with pytest.warns(UserWarning, match="Duplicate name"):
            new.writestr("records.jsonl", b"")
    with pytest.raises(EvidenceError, match="a member name appears twice"):
        verify_archive(twice, audit_pki.trust)


async def test_a_delivery_receipt_names_the_bytes_the_recipients_inbox_was_given(
    tmp_path: Path, audit_pki: AuditPki
) -> None:
    """A retried intake seals the envelope again (other bytes); the inbox keeps the first copy. The
    receipt names what the inbox was given (its queued record), not the last seal."""
    async with node_on("postgresql", tmp_path, audit_pki) as node:
        store = node.store
        doc = document(1)
        assert await store.begin_accept(doc, [(r, "local") for r in RECIPIENTS]) is None
        await store.confirm_accept(doc, list(RECIPIENTS), delivered_sha256="11" * 32)  # the last seal
        given = "22" * 32  # what the first attempt put in the inbox
        now = dt.datetime.now(dt.UTC)
        await store.record(
            TimelineEvent(doc.bus_id, RECIPIENTS[0], DeliveryState.QUEUED, now, sha256=given),
            key=f"{doc.bus_id}|{RECIPIENTS[0]}|queued",
        )
        await store.record(
            TimelineEvent(doc.bus_id, RECIPIENTS[0], DeliveryState.DONE, now), key=f"{doc.bus_id}|done"
        )
        await store.record(
            TimelineEvent(doc.bus_id, RECIPIENTS[1], DeliveryState.DONE, now), key=f"{doc.bus_id}|done1"
        )
        identity = node_identity(node.settings)
        notary = Notary(NODE, identity.key, [identity.certificate])
        found = await store.audit_of(doc.bus_id)
        receipts = receipts_from_records(notary, [(r.chain, r.seq, r.sha256, r.data) for r in found])
        values = [verify_receipt(r, audit_pki.trust, node=NODE).value for r in receipts]
    assert [v["type"] for v in values] == [
        "bus-receipt-accepted",
        "bus-receipt-delivered",
        "bus-receipt-delivered",
    ]
    by_recipient = {v["recipient"]: v["sha256"] for v in values[1:]}
    assert by_recipient == {RECIPIENTS[0]: given, RECIPIENTS[1]: "11" * 32}
    assert [json.loads(r.data)["kind"] for r in found][:2] == ["envelope.received", "envelope.accepted"]


async def test_no_secret_enters_the_start_up_record(tmp_path: Path, audit_pki: AuditPki) -> None:
    async with node_on("sqlite", tmp_path, audit_pki) as node:
        settings = node.settings.model_copy(
            update={
                "database": node.settings.database.model_copy(
                    update={"url": "postgresql+asyncpg://bus@db.example/bus?password=hunter2hunter2"}
                )
            }
        )
        record = json.dumps(settings_record(settings))
    assert "hunter2" not in record
    assert "password=" not in record
    assert "demo-only" not in record  # the example's agency and dashboard secrets
    assert "scrypt" not in record  # operators' password hashes
    assert "**********" in record  # what was there is said to be masked, not dropped unseen


async def test_a_gateway_with_the_log_off_still_records_that_it_started_so(
    tmp_path: Path, audit_pki: AuditPki
) -> None:
    async with node_on("sqlite", tmp_path, audit_pki) as node:
        node.store.configure_audit(enabled=False, node=NODE)
        await record_start(node.store, node.settings, command="serve")
        await accept(node.store, 1)  # a state change: not recorded with the log off
        kinds = [r.kind async for r in node.store.audit_records()]
    assert kinds == ["chain.opened", "node.started"]
