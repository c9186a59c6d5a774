"""What request authentication keeps across processes: the agencies' request nonces (a signed request
is taken once) and dashboard sessions an operator logged out of."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.store.base import StoreBase
from adapters.store.tables import nonces

__all__ = ["AuthState"]


class AuthState(StoreBase):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._ins_nonces = self._insert_ignoring_duplicates(nonces)
        self._nonces_waiting: list[_NonceAsk] = []
        self._nonce_writer: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._nonce_writer is not None and not self._nonce_writer.done():
            await asyncio.wait([self._nonce_writer])  # the nonces under way are written first
        await super().close()

    async def revoke_session(self, token: str, until: dt.datetime) -> None:
        """An operator logged out: the dashboard session *token* is refused by every process until
        *until* (its expiry), after which the row is cleaned up with the old request nonces."""
        async with self._begin() as conn:
            await conn.execute(
                self._ins_nonces, {"agency": "dashboard-logout", "nonce": token, "seen_at": until}
            )

    async def session_revoked(self, token: str) -> bool:
        query = select(nonces.c.nonce).where(nonces.c.agency == "dashboard-logout", nonces.c.nonce == token)
        async with self._connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def remember_nonce(self, agency: str, nonce: str, at: dt.datetime, *, keep: dt.timedelta) -> bool:
        """True the first time *agency* uses *nonce*; False for a replay. Forgets nonces older than
        *keep* (their timestamps are outside the window, so the signature check refuses them anyway).

        Group commit (issue 12): every request is signed, so a transaction per request was a commit on
        every poll of every inbox. The nonces of requests that arrive while a write is under way wait
        and go together in the next one, a single INSERT … ON CONFLICT DO NOTHING RETURNING: one
        transaction for the lot, in the shared database, so a replay to any gateway is still refused.
        A lone request is written at once, as before: nothing waits for a timer."""
        ask = _NonceAsk(agency, nonce, at, keep, asyncio.get_running_loop().create_future())
        self._nonces_waiting.append(ask)
        if self._nonce_writer is None or self._nonce_writer.done():
            self._nonce_writer = asyncio.create_task(self._write_nonces())
        return await asyncio.shield(ask.first)

    async def _write_nonces(self) -> None:
        while self._nonces_waiting:
            batch = self._nonces_waiting[:_NONCES_PER_WRITE]
            del self._nonces_waiting[:_NONCES_PER_WRITE]
            try:
                fresh = await self._insert_nonces(batch)
            except Exception as exc:  # StoreError: every request of the batch gets it (a 503)
                for ask in batch:
                    if not ask.first.done():
                        ask.first.set_exception(exc)
                continue
            seen: set[tuple[str, str]] = set()
            for ask in batch:
                key = (ask.agency, ask.nonce)
                if not ask.first.done():
                    ask.first.set_result(key in fresh and key not in seen)  # a repeat in one batch too
                seen.add(key)

    async def _insert_nonces(self, batch: list[_NonceAsk]) -> set[tuple[str, str]]:
        rows = {(a.agency, a.nonce): {"agency": a.agency, "nonce": a.nonce, "seen_at": a.at} for a in batch}
        statement = self._ins_nonces.values(list(rows.values())).returning(nonces.c.agency, nonces.c.nonce)
        async with self._begin() as conn:
            fresh = {(row.agency, row.nonce) for row in await conn.execute(statement)}
            if fresh and secrets.randbelow(100) == 0:
                oldest = min(a.at - a.keep for a in batch)
                await conn.execute(delete(nonces).where(nonces.c.seen_at < oldest))
        return fresh


_NONCES_PER_WRITE = 500  # one statement's worth: bounded so that a burst does not make one huge INSERT


@dataclass(frozen=True, slots=True)
class _NonceAsk:
    agency: str
    nonce: str
    at: dt.datetime
    keep: dt.timedelta
    first: asyncio.Future[bool]
