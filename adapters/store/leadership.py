"""One gateway at a time for the work that must not run twice (issue 14, item 4).

Several ``bus serve`` processes share the queues' work by competing for messages. Three jobs are not
messages: polling the national axis for this province's envelopes (relay in), reconciling what the axis
took with its sent list, and collecting the body store's garbage. Run by every gateway, the first would
download each envelope once per gateway and tell the axis as often; the others would do the same work
N times. So each runs in the one gateway that holds a PostgreSQL advisory lock named after it, taken on
a connection of its own, outside any transaction, and checked every ``check_s``:

* a gateway that dies (SIGKILL, a lost machine) loses its session, and with it the lock: another
  gateway, trying every ``check_s``, takes it and starts the job. No job is stuck on a dead gateway.
* a gateway whose own connection to PostgreSQL drops stops the job at once (it cannot know whether
  another took the lock meanwhile), then tries again like the others.
* PostgreSQL restarted: every session ends; whoever reconnects first leads.

SQLite is one machine's store, and a machine runs one gateway on it: the job simply runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["Leadership", "lock_key"]

log = structlog.get_logger("bus.leadership")

Job = Callable[[], Awaitable[None]]


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for *name* (``<prefix>:relay-in``): stable across processes."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership:
    """Runs a job only while this process holds the lock *name* (see the module's text)."""

    def __init__(self, engine: AsyncEngine, name: str, *, check_s: float = 5.0) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"
        self.name = name
        self._key = lock_key(name)
        self._check_s = check_s
        self.leading = False  # for /readyz, tests and logs
        self.terms = 0  # how often this process took the lock

    async def serve(self, start: Job, stop: Job) -> None:
        """Until cancelled: whenever this process holds the lock, *start* the job, and *stop* it when the
        lock is lost (or on cancellation)."""
        if not self._postgres:
            await self._term(start, stop, None)
            return
        while True:
            try:
                async with self._engine.connect() as conn:
                    if await self._take(conn):
                        await self._term(start, stop, conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went: stopped above; try again
                log.warning("leadership.lost", job=self.name, error=type(exc).__name__)
            await asyncio.sleep(self._check_s)

    async def _take(self, conn: AsyncConnection) -> bool:
        taken = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})).scalar()
        return bool(taken)

    async def _term(self, start: Job, stop: Job, conn: AsyncConnection | None) -> None:
        """The job runs from *start* until the lock's connection fails (or forever without one)."""
        self.leading = True
        self.terms += 1
        log.info("leadership.taken", job=self.name)
        try:
            await start()
            while True:
                await asyncio.sleep(self._check_s)
                if conn is not None:
                    await conn.execute(text("SELECT 1"))  # raises when the session is gone
        finally:
            self.leading = False
            with contextlib.suppress(Exception):
                await stop()
            log.info("leadership.released", job=self.name)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
