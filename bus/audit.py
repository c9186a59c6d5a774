"""The audit log's format and its verification (issue 15): records in hash chains, signed checkpoints
that join the chains, and the checks that find a changed, deleted, inserted or reordered record.

**Records.** Every state change the bus makes is written, in the same transaction, as a record: a JSON
object (:func:`bus.jws.canonical_json`) with ``v`` (1), ``chain``, ``seq`` (1, 2, ...), ``prev`` (the
SHA-256, hex, of the previous record of the chain; 64 zeros for the first), ``at`` (UTC, ISO 8601),
``kind`` and the kind's own fields. A record's hash is the SHA-256 of its bytes *as stored*: a verifier
parses them and hashes them, it never has to serialise JSON the same way.

**Chains.** Each process that writes (a gateway, a command) appends to a chain of its own, so gateways
never wait on one another's lock; inside a process the writes of a transaction are appended together,
one lock per transaction, not per envelope. A chain's first record (``chain.opened``) says which node,
host and process it belongs to.

**Checkpoints.** At an interval and a record count, one gateway signs the head (last ``seq`` and hash) of
every chain, with the number and hash of the previous checkpoint: one total order over all chains, each
checkpoint linked to the one before. The signature is a JWS (:mod:`bus.jws`) by the node's key;
optionally an RFC 3161 time-stamp over the SHA-256 of the checkpoint's payload proves when.

**What verification shows.** A record changed in place no longer hashes to its stored hash, or to the
``prev`` of the next; one deleted leaves a gap in ``seq``; one inserted or moved repeats or reorders
``seq`` and breaks ``prev``; a chain rewritten from some record on, hashes and all, no longer matches the
signed head of the checkpoints after it. Records written after the last checkpoint are counted and
reported as not yet covered: until a checkpoint signs them, their tail could be cut unnoticed, which is
why checkpoints come often (docs/audit.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.dsig.trust import TrustStore
from bus.jws import EvidenceError, Signed, canonical_json, check_node, sign, unb64url, verify

__all__ = [
    "GENESIS",
    "Checkpoint",
    "Entry",
    "Head",
    "Problem",
    "Report",
    "SealedRecord",
    "Verifier",
    "checkpoint_payload",
    "claimed_time",
    "heads_of",
    "iso",
    "seal",
    "sign_checkpoint",
]

GENESIS = "0" * 64
RECORD_VERSION = 1
CHECKPOINT_TYPE = "bus-audit-checkpoint"
# A time-stamp whose time lies further than this from the checkpoint's own is refused as stale.
TIMESTAMP_TOLERANCE = dt.timedelta(minutes=10)


def iso(at: dt.datetime) -> str:
    """UTC, microseconds, ``Z``: ``2026-12-01T08:30:00.000000Z``."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a state change records: its *kind* (``envelope.accepted``, ``delivery.done``, ...), when,
    and the kind's fields (JSON values; ``bus_id`` names the document, when there is one)."""

    kind: str
    at: dt.datetime
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bus_id(self) -> str | None:
        value = self.fields.get("bus_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class SealedRecord:
    chain: str
    seq: int
    at: dt.datetime
    kind: str
    bus_id: str | None
    sha256: str
    data: bytes  # the record's bytes, as stored and hashed


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    sha256: str


def seal(chain: str, head: Head, entries: Sequence[Entry]) -> list[SealedRecord]:
    """*entries* as the records that follow *head* on *chain*."""
    sealed = []
    seq, prev = head.seq, head.sha256
    for entry in entries:
        seq += 1
        value = {
            **entry.fields,
            "v": RECORD_VERSION,
            "chain": chain,
            "seq": seq,
            "prev": prev,
            "at": iso(entry.at),
            "kind": entry.kind,
        }
        data = canonical_json(value)
        prev = hashlib.sha256(data).hexdigest()
        at = entry.at.astimezone(dt.UTC)  # the table keeps what the record says (SQLite drops offsets)
        sealed.append(SealedRecord(chain, seq, at, entry.kind, entry.bus_id, prev, data))
    return sealed


def checkpoint_payload(
    number: int, at: dt.datetime, node: str, prev: str, heads: Mapping[str, Head]
) -> bytes:
    return canonical_json(
        {
            "v": RECORD_VERSION,
            "type": CHECKPOINT_TYPE,
            "number": number,
            "at": iso(at),
            "node": node,
            "prev": prev,
            "chains": [
                {"chain": chain, "seq": head.seq, "head": head.sha256}
                for chain, head in sorted(heads.items())
            ],
            "records": sum(head.seq for head in heads.values()),
        }
    )


def sign_checkpoint(payload: bytes, key: Any, chain: Sequence[Any]) -> str:
    """The JWS of a checkpoint's payload, as the JSON text stored beside it."""
    return json.dumps(sign(payload, key, chain), sort_keys=True)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint as stored or archived: its number, the JWS (JSON text), its time-stamp token."""

    number: int
    jws: str
    timestamp: bytes | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    where: str  # "chain gw-1.4f2c seq 17" or "records.jsonl line 42 (chain …, seq 17)"
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(slots=True)
class Report:
    records: int = 0
    chains: int = 0
    checkpoints: int = 0
    timestamped: int = 0
    uncovered: int = 0  # records after the last checkpoint's heads
    unstamped: int = 0  # checkpoints without a time-stamp
    signers: set[str] = field(default_factory=set)  # the nodes (OrganIds) whose keys signed checkpoints
    problems: list[Problem] = field(default_factory=list)
    first_at: dt.datetime | None = None
    last_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        span = (
            f", {iso(self.first_at)} to {iso(self.last_at)}"
            if self.first_at is not None and self.last_at is not None
            else ""
        )
        lines = [
            f"{self.records} records in {self.chains} chains{span}; {self.checkpoints} signed checkpoints "
            f"({self.timestamped} time-stamped, {self.unstamped} without one); "
            f"{self.uncovered} records after the last checkpoint",
        ]
        if self.signers:
            lines.append(f"checkpoints signed by node {', '.join(sorted(self.signers))}")
        lines += [f"PROBLEM {p}" for p in self.problems]
        lines.append("OK: the log is intact" if self.ok else f"FAILED: {len(self.problems)} problems")
        return "\n".join(lines)


@dataclass(slots=True)
class _ChainState:
    seq: int
    head: str


class Verifier:
    """Checks records (fed in order of chain and seq) against each other and against checkpoints.

    Use: :meth:`check_checkpoints` first (they are few; it learns which record hashes they sign), then
    :meth:`record` for every record, then :meth:`finish`. *anchor*: the heads the records start from
    (the checkpoint before the first record, in an archive or after old records were removed), else
    every chain starts at its genesis."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        tsa_trust: Sequence[Any] = (),
        anchor: Mapping[str, Head] | None = None,
        max_problems: int = 1000,
        node: str | None = None,
        require_timestamps: bool = False,
    ) -> None:
        self._node = node
        self._require_timestamps = require_timestamps
        self._trust = trust
        self._tsa_trust = list(tsa_trust)
        self._start = dict(anchor or {})
        self._chains: dict[str, _ChainState] = {}
        self._signed: dict[tuple[str, int], tuple[str, int]] = {}  # (chain, seq) -> (head, checkpoint)
        self._last_heads: dict[str, Head] = {}
        self._max = max_problems
        self.report = Report()

    def problem(self, where: str, what: str) -> None:
        if len(self.report.problems) < self._max:
            self.report.problems.append(Problem(where, what))

    # -- checkpoints ------------------------------------------------------------------------------------

    def check_checkpoints(
        self, checkpoints: Iterable[Checkpoint], *, where: str = "checkpoint", expect_prev: str | None = None
    ) -> list[Signed]:
        """Each checkpoint's signature and time-stamp, their numbers and links; what they sign is
        checked against the records as they come. *expect_prev*: the hash the first must link to (an
        archive's anchor is itself the first, and links to what the archive does not hold)."""
        signed: list[Signed] = []
        prev_hash, prev_number, prev_heads = expect_prev, None, dict(self._start)
        for checkpoint in checkpoints:
            label = f"{where} {checkpoint.number}"
            try:
                jws = json.loads(checkpoint.jws)
                at = claimed_time(jws)
                result = verify(jws, self._trust, at=at)
                check_node(result, self._node)
            except (EvidenceError, ValueError, RecursionError, TypeError) as exc:
                self.problem(label, f"its signature does not check: {exc}")
                prev_hash, prev_number = None, checkpoint.number
                continue
            value = result.value
            self.report.signers.add(str(value.get("node")))
            digest = hashlib.sha256(result.payload).hexdigest()
            if value.get("type") != CHECKPOINT_TYPE or value.get("number") != checkpoint.number:
                self.problem(label, f"the signed payload is checkpoint {value.get('number')!r}, not this one")
            if prev_number is not None and checkpoint.number != prev_number + 1:
                self.problem(
                    label,
                    f"follows checkpoint {prev_number}: checkpoints {prev_number + 1} to "
                    f"{checkpoint.number - 1} are missing",
                )
            if prev_hash is None and checkpoint.number == 1:
                prev_hash = GENESIS  # the first checkpoint links to nothing
            if prev_hash is not None and value.get("prev") != prev_hash:
                self.problem(
                    label,
                    f"links to a previous checkpoint with hash {value.get('prev')}, expected {prev_hash}",
                )
            try:
                heads = heads_of(value)
            except (KeyError, TypeError, ValueError) as exc:
                self.problem(label, f"its signed payload lists its chains wrongly: {exc}")
                heads = {}
            for chain, head in heads.items():
                before = prev_heads.get(chain)
                if before is not None and head.seq < before.seq:
                    self.problem(label, f"chain {chain} goes back from seq {before.seq} to {head.seq}")
                self._signed[(chain, head.seq)] = (head.sha256, checkpoint.number)
            for chain in prev_heads.keys() - heads.keys():
                self.problem(label, f"chain {chain} of the previous checkpoint is missing")
            if checkpoint.timestamp is not None:
                self._check_timestamp(label, checkpoint.timestamp, result.payload, parse_iso(value["at"]))
            elif self._require_timestamps:
                # Asked for: a checkpoint whose token was removed (with the chains rewritten and signed
                # again by someone holding the node key) must not pass as one the TSA never answered.
                self.problem(label, "has no time-stamp, and time-stamps are required")
            else:
                self.report.unstamped += 1  # the TSA was unreachable then (or none was configured)
            self.report.checkpoints += 1
            prev_hash, prev_number, prev_heads = digest, checkpoint.number, heads
            signed.append(result)
        self._last_heads = prev_heads
        return signed

    def _check_timestamp(self, label: str, token: bytes, payload: bytes, at: dt.datetime) -> None:
        from bus.timestamp import (  # asn1crypto is loaded only to check time-stamps
            TimestampError,
            verify_token,
        )

        if not self._tsa_trust:
            self.problem(label, "is time-stamped, but no TSA CA certificate was given to check it with")
            return
        try:
            verify_token(
                token,
                digest=hashlib.sha256(payload).digest(),
                trusted=self._tsa_trust,
                not_before=at - TIMESTAMP_TOLERANCE,
                not_after=at + TIMESTAMP_TOLERANCE,
            )
        except TimestampError as exc:
            self.problem(label, f"its time-stamp does not check: {exc}")
            return
        self.report.timestamped += 1

    # -- records ------------------------------------------------------------------------------------------

    def record(
        self, where: str, chain: str, seq: int, sha256: str, data: bytes, columns: Mapping[str, Any]
    ) -> None:
        """One record as stored: *chain*, *seq*, *sha256* and *columns* (``kind``, ``at``, ``bus_id``:
        what the table keeps beside the bytes, to search by) are checked against *data*."""
        self.report.records += 1
        actual = hashlib.sha256(data).hexdigest()
        parsed: dict[str, Any] | None
        try:
            loaded = json.loads(data)
            if not isinstance(loaded, dict):
                raise ValueError("not a JSON object")
            parsed = loaded
        except (ValueError, RecursionError) as exc:
            self.problem(where, f"is not a JSON record: {exc}")
            parsed = None
        value = parsed if parsed is not None else {}
        if actual != sha256:
            self.problem(where, f"its bytes hash to {actual}, but {sha256} is stored: the record was changed")
        for name, stored in (("chain", chain), ("seq", seq), *columns.items()):
            if parsed is not None and value.get(name) != stored:
                self.problem(where, f"{name} is {stored!r} beside the record, {value.get(name)!r} inside it")
        state = self._chains.get(chain)
        if state is None:
            start = self._start.get(chain, Head(0, GENESIS))
            state = self._chains[chain] = _ChainState(start.seq, start.sha256)
        expected = state.seq + 1
        if seq != expected:
            if seq > expected:
                self.problem(
                    where, f"follows seq {state.seq}: records {expected} to {seq - 1} are missing (deleted)"
                )
            else:
                self.problem(
                    where, f"comes after seq {state.seq}: a record out of order, repeated or inserted"
                )
        if parsed is not None and value.get("prev") != state.head:
            self.problem(
                where,
                f"its prev is {value.get('prev')}, but the record before it (seq {state.seq}) hashes to "
                f"{state.head}: a record before it was changed, deleted, inserted or moved",
            )
        signed = self._signed.pop((chain, seq), None)
        if signed is not None and signed[0] != actual:
            self.problem(
                where,
                f"checkpoint {signed[1]} signed this record's hash as {signed[0]}, it is {actual}: the chain "
                "was rewritten",
            )
        state.seq, state.head = max(seq, state.seq), actual
        at = columns.get("at")
        if isinstance(at, str):
            when = parse_iso(at)
            self.report.first_at = when if self.report.first_at is None else min(self.report.first_at, when)
            self.report.last_at = when if self.report.last_at is None else max(self.report.last_at, when)

    def heads(self) -> dict[str, Head]:
        """Where each chain's records end (after :meth:`record` was fed them all)."""
        return {chain: Head(state.seq, state.head) for chain, state in self._chains.items()}

    def finish(self) -> Report:
        """Heads that checkpoints signed but no record matched; records after the last checkpoint."""
        for (chain, seq), (_, number) in sorted(self._signed.items()):
            start = self._start.get(chain)
            if start is not None and seq <= start.seq:
                continue  # before the records held here: the anchor vouches for it
            state = self._chains.get(chain)
            have = "no records" if state is None else f"records up to seq {state.seq}"
            self.problem(
                f"chain {chain}",
                f"checkpoint {number} signed seq {seq}, but the log holds {have}: records were deleted",
            )
        for chain, state in self._chains.items():
            last = self._last_heads.get(chain)
            self.report.uncovered += state.seq - (last.seq if last is not None else 0)
        self.report.chains = len(self._chains.keys() | self._last_heads.keys())
        return self.report


def heads_of(value: Mapping[str, Any]) -> dict[str, Head]:
    """A checkpoint payload's ``chains``, by chain (KeyError, TypeError or ValueError if malformed)."""
    heads = {}
    for item in value.get("chains", []):
        heads[str(item["chain"])] = Head(int(item["seq"]), str(item["head"]))
    return heads


def claimed_time(jws: Any, *fields: str) -> dt.datetime | None:
    """The time a JWS's payload says it was signed at, read before checking it (its signer's chain must
    be valid then): the first of *fields* (``at`` when none are named) it has; None if it has none."""
    try:
        value = json.loads(unb64url(jws["payload"], "the payload"))
        found = next(value[f] for f in fields or ("at",) if value.get(f))
        return parse_iso(found)
    except (KeyError, TypeError, ValueError, StopIteration, RecursionError, EvidenceError):
        return None
