"""Data for the dashboard's tests and bench.

:func:`seed_documents`: many documents, with deliveries, events and inbox rows, written fast into a
PostgreSQL status store (``COPY``, not the store's methods): the query-plan test, bench/bench_dashboard.py.
:func:`record_sample`: a few documents through the store's own methods, as the bus writes them.

The numbers look like a province: some 420 agencies, 1-4 recipients a document, most deliveries done,
a few failed or dead-lettered, a year of traffic. Deterministic for a given seed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import SecretStr
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.store import StatusStore
from bus.delivery import AcceptedDocument, DeadLetter, DeliveryState, InboxItem, TimelineEvent
from bus.passwords import hash_password
from bus.settings import DashboardSettings, Operator, Settings

__all__ = [
    "Sample",
    "Seeded",
    "asyncpg_dsn",
    "dashboard_settings",
    "engine_of",
    "explain",
    "record_sample",
    "seed_documents",
]

NOTATIONS = ("UBND-VP", "UBND-KGVX", "UBND-KT", "SNV-TCCB", "STC-NS", "SKHCN-QLKH", "UBND-NC", "VP-TH")
# (state, weight per thousand deliveries, the states its timeline went through): failures are rare
_STATES = (
    ("done", 880, ("accepted", "queued", "fetched", "done")),
    ("fetched", 40, ("accepted", "queued", "fetched")),
    ("processing", 20, ("accepted", "queued", "fetched", "processing")),
    ("queued", 20, ("accepted", "queued")),
    ("sent-to-axis", 30, ("accepted", "sent-to-axis")),
    ("retrying", 4, ("accepted", "retrying")),
    ("failed", 2, ("accepted", "retrying", "failed")),
    ("dead-lettered", 2, ("accepted", "queued", "dead-lettered")),
    ("replayed", 2, ("accepted", "queued", "dead-lettered", "replayed")),
)
_COLUMNS = {
    "documents": "bus_id kind sender document_id business_type code subject accepted_at envelope_sha256 "
    "dedupe_key confirmed related_bus_id",
    "deliveries": "bus_id recipient route state updated_at business_status",
    "events": "bus_id recipient state at detail event_key",
    "inbox": "message_id agency addressed_to bus_id sender kind document_id body received_at fetched_at "
    "ack_state acked_at",
}
_PENDING = {"queued": None, "fetched": None, "processing": "processing"}


@dataclass(frozen=True, slots=True)
class Seeded:
    """Values the searches look for, picked from what was written."""

    documents: int
    deliveries: int
    events: int
    document_id: str
    code: str
    agency: str
    day: dt.date  # a day (Asia/Ho_Chi_Minh) with traffic
    newest: dt.datetime


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://...`` (SQLAlchemy) -> ``postgresql://...`` (asyncpg)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def engine_of(store: StatusStore) -> AsyncEngine:
    """The store's engine, which no code outside adapters/store uses: tests and benchmarks EXPLAIN the
    store's statements on it, and make a database as an older version left it."""
    return store._engine


async def explain(engine: AsyncEngine, statement: Select[Any]) -> str:
    """PostgreSQL's plan for *statement*, with its parameters' values (a custom plan, as asyncpg's first
    executions get)."""
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    async with engine.connect() as conn:
        positional = tuple(params[name] for name in compiled.positiontup or ())
        rows = await conn.exec_driver_sql("EXPLAIN " + compiled.string, positional)
        return "\n".join(row[0] for row in rows)


def agencies() -> list[str]:
    departments = [f"000.00.{y:02d}.H99" for y in range(1, 20)]
    communes = [f"000.{z:02d}.{y:02d}.H99" for y in range(21, 41) for z in range(20)]
    return departments + communes


async def seed_documents(url: str, count: int, *, seed: int = 5, end: dt.datetime | None = None) -> Seeded:
    """Write *count* documents into the (already created, empty) tables at *url*, then ANALYZE."""
    rnd = random.Random(seed)
    codes = agencies()
    end = end or dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
    step = dt.timedelta(days=365) / count
    states = [s for s, _, _ in _STATES]
    weights = [w for _, w, _ in _STATES]
    paths = {s: p for s, _, p in _STATES}
    docs: list[tuple[object, ...]] = []
    deliveries: list[tuple[object, ...]] = []
    events: list[tuple[object, ...]] = []
    inbox: list[tuple[object, ...]] = []
    for i in range(count):
        bus_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        sender = rnd.choice(codes)
        at = end - step * i - dt.timedelta(seconds=rnd.randint(0, 59))
        number = rnd.randint(1, 9999)
        code = f"{number}/{rnd.choice(NOTATIONS)}"
        document_id = f"{sender},{at:%Y/%m/%d},{code}"
        kind = "status" if rnd.random() < 0.1 else "document"
        subject = f"Văn bản số {code} về việc báo cáo"
        dedupe_key = f"{kind}|{sender}|0|{document_id}"
        docs.append(
            (bus_id, kind, sender, document_id, 0, code, subject, at, "0" * 64, dedupe_key, True, None)
        )
        for recipient in [c for c in rnd.sample(codes, 5) if c != sender][: rnd.randint(1, 4)]:
            state = rnd.choices(states, weights)[0]
            route = "outbound" if state in ("sent-to-axis", "retrying", "failed") else "local"
            moments = [at + dt.timedelta(seconds=5 * n) for n in range(len(paths[state]))]
            deliveries.append((bus_id, recipient, route, state, moments[-1], None))
            for step_state, moment in zip(paths[state], moments, strict=True):
                detail = "HTTP 503 từ trục quốc gia" if step_state in ("retrying", "failed") else None
                key = f"{bus_id}|{recipient}|{step_state}"
                events.append((bus_id, recipient, step_state, moment, detail, key))
            if route == "local":
                pending = state in _PENDING
                fetched = None if state == "queued" else moments[-1]
                ack, acked = (_PENDING[state], None) if pending else ("done", moments[-1])
                envelope = (f"{bus_id}|{recipient}", recipient, recipient, bus_id, sender, kind, document_id)
                inbox.append((*envelope, b"<edXML/>", moments[1], fetched, ack, acked))
    dsn = asyncpg_dsn(url)

    async def copy(table: str, records: list[tuple[object, ...]]) -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.copy_records_to_table(table, records=records, columns=_COLUMNS[table].split())
            await conn.execute(f"ANALYZE {table}")
        finally:
            await conn.close()

    await copy("documents", docs)
    # The rest only refers to documents: one connection (and one PostgreSQL backend) each.
    await asyncio.gather(copy("deliveries", deliveries), copy("events", events), copy("inbox", inbox))
    middle = docs[count // 2]
    busiest = max(set(codes), key=[d[2] for d in docs[:2000]].count)
    return Seeded(
        documents=len(docs),
        deliveries=len(deliveries),
        events=len(events),
        document_id=middle[3],
        code=middle[5],
        agency=busiest,
        day=middle[7].astimezone(dt.timezone(dt.timedelta(hours=7))).date(),
        newest=docs[0][7],
    )


# -- a few documents through the store's own methods (the page tests) ---------------------------------

OPERATOR, PASSWORD = "nguyen.van.an", "Mật khẩu đúng 2026!"
SUBJECT = "V/v triển khai chuyển đổi số — xã Hòa Tiến <b>khẩn</b>"
COMMUNE, DISTRICT, OUTSIDE = "000.01.21.H99", "000.00.21.H99", "000.00.00.G22"
DEAD_REASON = "Chữ ký không hợp lệ: DigestValue không khớp"


def dashboard_settings(settings: Settings, *, ttl_s: int = 3600) -> Settings:
    """*settings* with one operator (a cheap scrypt cost: tests log in many times)."""
    operator = Operator(username=OPERATOR, password_hash=hash_password(PASSWORD, n=2**12))
    dashboard = DashboardSettings(
        operators=(operator,),
        session_secret=SecretStr("test-only-session-secret-0123456789"),
        session_ttl_s=ttl_s,
    )
    return settings.model_copy(update={"dashboard": dashboard})


@dataclass(frozen=True, slots=True)
class Sample:
    sent: AcceptedDocument  # province -> district, commune (local) and another province (national axis)
    older: AcceptedDocument  # a department -> another, a day earlier
    dead: AcceptedDocument  # a department -> the commune, dead-lettered
    dead_letter_id: int


def _doc(sender: str, number: int, notation: str, subject: str, at: dt.datetime) -> AcceptedDocument:
    return AcceptedDocument(
        bus_id=str(uuid.uuid4()),
        kind="document",
        sender=sender,
        document_id=f"{sender},{at:%Y/%m/%d},{number}/{notation}",
        business_type=0,
        code=f"{number}/{notation}",
        subject=subject,
        accepted_at=at,
        envelope_sha256="0" * 64,
    )


async def record_sample(store: StatusStore, now: dt.datetime, *, source_queue: str = "bus.inbox.x") -> Sample:
    """Three documents with timelines, a dead letter, and an inbox with an envelope waiting two hours."""
    sent = _doc("000.00.00.H99", 1234, "UBND-KGVX", SUBJECT, now - dt.timedelta(hours=3))
    await store.record_accepted(sent, [(DISTRICT, "local"), (COMMUNE, "local"), (OUTSIDE, "outbound")])
    steps = [
        (DISTRICT, DeliveryState.QUEUED, 1, None),
        (DISTRICT, DeliveryState.FETCHED, 2, None),
        (DISTRICT, DeliveryState.DONE, 3, None),
        (COMMUNE, DeliveryState.QUEUED, 1, None),
        (OUTSIDE, DeliveryState.RETRYING, 1, "lần 1: trục quốc gia trả lời HTTP 503, thử lại sau 5 giây"),
        (OUTSIDE, DeliveryState.SENT_TO_AXIS, 2, "trục quốc gia nhận, mã 7f3a"),
    ]
    for recipient, state, minutes, detail in steps:
        event = TimelineEvent(
            sent.bus_id, recipient, state, sent.accepted_at + dt.timedelta(minutes=minutes), detail
        )
        await store.record(event, key=f"{sent.bus_id}|{recipient}|{state.value}")
    older = _doc(
        "000.00.01.H99", 56, "SNV-TCCB", "Về việc tuyển dụng công chức năm 2026", now - dt.timedelta(days=1)
    )
    await store.record_accepted(older, [("000.00.02.H99", "local")])
    dead = _doc("000.00.02.H99", 78, "STC-NS", "Thông báo dự toán ngân sách", now - dt.timedelta(hours=1))
    await store.record_accepted(dead, [(COMMUNE, "local")])
    letter = DeadLetter(
        dead_key=f"dead-{dead.bus_id}",
        message_id=f"{dead.bus_id}|{COMMUNE}",
        source_queue=source_queue,
        reason=DEAD_REASON,
        dead_at=now - dt.timedelta(minutes=30),
        bus_id=dead.bus_id,
        recipient=COMMUNE,
        sender=dead.sender,
        document_id=dead.document_id,
        kind="document",
        headers={"x-bus-id": dead.bus_id, "x-bus-recipient": COMMUNE, "x-bus-sender": dead.sender},
        body="<edXML>Ủy ban nhân dân</edXML>".encode(),
    )
    assert await store.store_dead_letter(letter)
    [stored] = await store.dead_letters()
    waiting = InboxItem(
        id=0,
        message_id=f"{sent.bus_id}|{COMMUNE}",
        agency=COMMUNE,
        addressed_to=COMMUNE,
        bus_id=sent.bus_id,
        sender=sent.sender,
        kind="document",
        document_id=sent.document_id,
        received_at=now - dt.timedelta(hours=2, minutes=5),
        body=b"<edXML/>",
    )
    await store.store_inbox_many([waiting])
    return Sample(sent, older, dead, stored.id)
