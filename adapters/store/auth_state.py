"""What request authentication keeps across processes: the agencies' request nonces (a signed request
is taken once) and dashboard sessions an operator logged out of."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.store.base import StoreBase
from adapters.store.tables import nonces

__all__ = ["AuthState"]


class AuthState(StoreBase):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._ins_nonces = self._insert_ignoring_duplicates(nonces)

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
        *keep* (their timestamps are outside the window, so the signature check refuses them anyway)."""
        async with self._begin() as conn:
            inserted = await conn.execute(self._ins_nonces, {"agency": agency, "nonce": nonce, "seen_at": at})
            if inserted.rowcount and secrets.randbelow(100) == 0:
                await conn.execute(delete(nonces).where(nonces.c.seen_at < at - keep))
            return bool(inserted.rowcount)
