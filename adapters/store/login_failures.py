"""Failed dashboard logins, counted for every gateway at once (issue 14, item 4): the counters of the
login throttle (adapters/dashboard/throttle.py) by client address and by username.

Every change is a single statement (``INSERT … ON CONFLICT DO UPDATE … RETURNING``, ``UPDATE``), so that
concurrent failures on several gateways are each counted once, and a try that must wait is refused by
the same statement that would have counted it: a burst spread over the gateways is throttled as if its
tries came one after another. A counter whose last failure came before *forget_before* counts as zero
(and starts again from one); :meth:`LoginFailures.forget_login_failures` deletes such rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from adapters.store.base import StoreBase, utc
from adapters.store.tables import login_failures

__all__ = ["LoginFailures"]

_t = login_failures


class LoginFailures(StoreBase):
    async def add_login_failure(
        self,
        kind: str,
        key: str,
        at: dt.datetime,
        *,
        forget_before: dt.datetime,
        waits: Sequence[dt.timedelta] = (),
    ) -> tuple[int, dt.datetime] | None:
        """Count one more failure of *key* (of *kind*) at *at*; the failures counted and the time of
        the last, after it. A counter whose last failure came before *forget_before* starts again.

        *waits*: how long a key of n failures must wait after its last failure before another try
        (``waits[n]``; the last one for n beyond); a key still waiting is not counted, and None is
        returned. One statement: the check and the count are atomic across processes."""
        insert: Any = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(_t).values(kind=kind, key=key, failures=1, last_failure_at=at)
        forgotten = _t.c.last_failure_at < forget_before
        statement = statement.on_conflict_do_update(
            index_elements=[_t.c.kind, _t.c.key],
            set_={
                "failures": case((forgotten, 1), else_=_t.c.failures + 1),
                "last_failure_at": statement.excluded.last_failure_at,
            },
            where=(forgotten | _admitted(at, waits)) if waits else None,
        ).returning(_t.c.failures, _t.c.last_failure_at)
        async with self._begin() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else (row.failures, utc(row.last_failure_at))

    async def take_back_login_failure(self, kind: str, key: str) -> None:
        """One failure fewer for *key* (a try counted as it was admitted turned out right)."""
        statement = (
            update(_t)
            .where(_t.c.kind == kind, _t.c.key == key, _t.c.failures > 0)
            .values(failures=_t.c.failures - 1)
        )
        async with self._begin() as conn:
            await conn.execute(statement)

    async def read_login_failures(
        self, kind: str, key: str, *, forget_before: dt.datetime
    ) -> tuple[int, dt.datetime] | None:
        """(failures, time of the last) of *key*; None when it has none since *forget_before*."""
        query = select(_t.c.failures, _t.c.last_failure_at).where(
            _t.c.kind == kind,
            _t.c.key == key,
            _t.c.failures > 0,
            _t.c.last_failure_at >= forget_before,
        )
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row.failures, utc(row.last_failure_at))

    async def keys_with_login_failures(self, kind: str, *, forget_before: dt.datetime) -> int:
        """How many keys of *kind* have failures since *forget_before*."""
        query = select(func.count()).where(
            _t.c.kind == kind, _t.c.failures > 0, _t.c.last_failure_at >= forget_before
        )
        async with self._connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def forget_login_failures(self, before: dt.datetime) -> int:
        """Delete the counters whose last failure came before *before* (they count as zero already)."""
        async with self._begin() as conn:
            result = await conn.execute(delete(_t).where(_t.c.last_failure_at < before))
        return int(result.rowcount)


def _admitted(at: dt.datetime, waits: Sequence[dt.timedelta]) -> ColumnElement[bool]:
    """True for a row whose wait after its last failure is over at *at* (see ``waits`` above)."""

    def over(wait: dt.timedelta) -> ColumnElement[bool]:
        # No wait at all is over whatever the clocks of the gateways that wrote the row said.
        return true() if wait <= dt.timedelta(0) else _t.c.last_failure_at <= at - wait

    *each, beyond = waits
    whens = [(_t.c.failures == n, over(wait)) for n, wait in enumerate(each)]
    return case(*whens, else_=over(beyond)) if whens else over(beyond)
