"""The operators' dashboard over 100,000 documents: how long each search takes on PostgreSQL.

Not a test. Run ``.venv/bin/python -m bench.bench_dashboard`` (PostgreSQL up: scripts/services.sh). It
makes a fresh database, writes the documents with their deliveries, events and inbox rows (``COPY``:
tests/integration/dashboard_seed.py), ANALYZEs, then times each query the dashboard runs, through the
same functions the pages call, and says whether its plan reads any of the big tables in full. The
database is dropped at the end, also on failure or SIGINT (unless ``--keep``). ``--smoke``: 200
documents, one round (tests/integration/test_bench_smoke.py: the benchmark must keep running).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from adapters.store import StatusStore
from adapters.store.dashboard_queries import (
    DocumentSearch,
    inbox_depth_query,
    search_query,
)
from bus.checks import VN_TZ
from bus.delivery import DeliveryState
from tests.integration.dashboard_seed import Seeded, engine_of, explain, seed_documents

PG_ADMIN = os.environ.get("BUS_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/bus_test")


def searches(seeded: Seeded) -> dict[str, DocumentSearch]:
    day = dt.datetime.combine(seeded.day, dt.time(), tzinfo=VN_TZ)
    return {
        "newest first (no filter)": DocumentSearch(),
        "DocumentId": DocumentSearch(document_id=seeded.document_id),
        "code and notation": DocumentSearch(code=seeded.code),
        "agency (sender or recipient)": DocumentSearch(agency=seeded.agency),
        "one day": DocumentSearch(since=day, until=day + dt.timedelta(days=1)),
        "state dead-lettered": DocumentSearch(state=DeliveryState.DEAD_LETTERED),
        "state done (most rows)": DocumentSearch(state=DeliveryState.DONE),
        "agency + a month": DocumentSearch(
            agency=seeded.agency, since=day - dt.timedelta(days=30), until=day
        ),
        "agency + state failed": DocumentSearch(agency=seeded.agency, state=DeliveryState.FAILED),
    }


async def timed(run: Callable[[], Awaitable[Any]], rounds: int) -> tuple[float, float]:
    """Median and worst milliseconds of *rounds* runs (after one warm-up)."""
    await run()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


async def main(count: int, rounds: int, keep: bool) -> None:
    name = f"bus_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN, timeout=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    store: StatusStore | None = None
    try:
        store = StatusStore.connect(url)
        await store.create_schema()
        started = time.perf_counter()
        seeded = await seed_documents(url, count)
        print(
            f"seeded {seeded.documents:,} documents, {seeded.deliveries:,} deliveries, "
            f"{seeded.events:,} events in {time.perf_counter() - started:.1f} s (database {name})\n"
        )
        print("| query | rows | median ms | worst ms | full scan |\n|---|---:|---:|---:|---|")
        for label, search in searches(seeded).items():
            page = await store.search_documents(search)
            median, worst = await timed(lambda s=search: store.search_documents(s), rounds)
            plan = await explain(engine_of(store), search_query(search))
            print(f"| {label} | {len(page.hits)} | {median:.1f} | {worst:.1f} | {_scans(plan)} |")
            if page.next is not None:
                after = page.next
                median, worst = await timed(
                    lambda s=search, a=after: store.search_documents(s, after=a), rounds
                )
                print(f"| {label}, page 2 | - | {median:.1f} | {worst:.1f} | - |")
        bus_id = (await store.search_documents(DocumentSearch(document_id=seeded.document_id))).hits[0].bus_id

        async def document_page() -> None:
            await store.document_detail(bus_id)
            await store.timeline(bus_id)

        median, worst = await timed(document_page, rounds)
        print(f"| a document and its timeline | 1 | {median:.1f} | {worst:.1f} | - |")
        depths = await store.inbox_depths()
        median, worst = await timed(lambda: store.inbox_depths(), rounds)
        plan = await explain(engine_of(store), inbox_depth_query())
        print(f"| inbox depths | {len(depths)} | {median:.1f} | {worst:.1f} | {_scans(plan)} |")
    finally:
        if store is not None:
            await store.close()
        if not keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _scans(plan: str) -> str:
    tables = [t for t in ("documents", "deliveries", "events", "inbox") if f"Seq Scan on {t} " in plan + " "]
    return ", ".join(tables) or "none"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the database (to run EXPLAIN by hand)")
    parser.add_argument("--smoke", action="store_true", help="200 documents, one round: checks that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.documents, args.rounds = 200, 1
    asyncio.run(main(args.documents, args.rounds, args.keep))
