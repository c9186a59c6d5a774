"""What every part of the status store shares: one engine, the schema, and the translation of the
database's errors into the bus's own at the store's edge.

Every query runs inside :meth:`StoreBase._connect` (a read) or :meth:`StoreBase._begin` (a
transaction): SQLAlchemy's and the drivers' errors (asyncpg, aiosqlite) leave them as
:class:`~bus.errors.StoreUnavailableError` when the database cannot be reached or the connection
dropped, and :class:`~bus.errors.StoreError` otherwise, each ``from`` the original (like httpx's
``map_httpcore_exceptions``). No caller outside adapters/store sees SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Self

import asyncpg  # type: ignore[import-untyped]  # no stubs; only its exception classes are used
from sqlalchemy import Connection, Insert, inspect, text
from sqlalchemy import exc as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.store.leadership import Leadership
from adapters.store.tables import metadata
from bus.errors import ConfigError, StoreError, StoreUnavailableError

__all__ = ["StoreBase", "utc"]

# What the store translates: SQLAlchemy's errors, and what a driver raises past it (asyncpg's
# connect raises OSError and its own errors unwrapped).
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sa.SQLAlchemyError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
)

# Any of these, or one of them as the cause: the database cannot be reached or the connection dropped.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable host; an SQLite file in a directory that is gone
    TimeoutError,
    sa.OperationalError,
    sa.InterfaceError,
    sa.DisconnectionError,
    sa.TimeoutError,  # no pooled connection came free in time
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,  # the server is starting or stopping
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    sqlite3.OperationalError,
)


def utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything the store writes is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """*exc*, the driver's error SQLAlchemy wrapped, and what caused each (bounded)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 10:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        yield current
        todo += [getattr(current, "orig", None), current.__cause__]


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    return any(isinstance(cause, _UNAVAILABLE) for cause in _causes(exc))


def _driver_error(exc: BaseException) -> BaseException:
    # SQLAlchemy's own message repeats the statement (and its parameters unless hide_parameters):
    # the driver's error says what went wrong without them.
    orig = exc.orig if isinstance(exc, sa.DBAPIError) else None
    return orig if isinstance(orig, BaseException) else exc


# Columns and indexes added to tables that a store made before them already has (create_all adds
# neither to an existing table): issue 12's body store references.
_ADDED_COLUMNS = {"inbox": {"body_sha256": "VARCHAR(64)"}}
_ADDED_INDEXES = ("ix_inbox_body_sha256", "ix_dead_letters_bus_id", "ix_axis_sends_bus_id")


def _upgrade(sync: Connection) -> None:
    inspector = inspect(sync)
    for table, columns in _ADDED_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)}
        for name, kind in columns.items():
            if name not in present:
                sync.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))
    for added in metadata.tables.values():
        for index in added.indexes:
            if index.name in _ADDED_INDEXES:
                index.create(sync, checkfirst=True)


class StoreBase:
    """The engine and what every aggregate's queries use. ``url`` is a SQLAlchemy async URL:
    ``sqlite+aiosqlite:///path/bus.db`` (default) or ``postgresql+asyncpg://user@host/db``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Reads run without a transaction: no BEGIN and ROLLBACK round trips around each (two of the
        # statements a fetch cost, counted by bench/bench_e2e.py). Same pool; the connection's
        # setting is put back when it returns to the pool.
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    def connect(cls, url: str, *, pool_size: int | None = None, **engine_options: Any) -> Self:
        """*pool_size*: connections kept open (PostgreSQL; SQLite keeps its own pool)."""
        if pool_size is not None and not url.startswith("sqlite"):
            engine_options.setdefault("pool_size", pool_size)
            engine_options.setdefault("max_overflow", pool_size // 2)
        try:
            engine = create_async_engine(url, **engine_options)
        except sa.SQLAlchemyError as exc:  # not a URL, or a dialect SQLAlchemy does not know
            raise StoreError(f"cannot use {url.split('@')[-1]!r} as the status store: {exc}") from exc
        return cls(engine)

    async def create_schema(self) -> None:
        """Create missing tables, and what later issues added to existing ones (idempotent, and safe
        when several processes start at once)."""
        async with self._begin() as conn:
            if self._engine.dialect.name == "postgresql":
                # CREATE TABLE IF NOT EXISTS races between processes on PostgreSQL; serialise them.
                await conn.execute(text("SELECT pg_advisory_xact_lock(4242017)"))
            await conn.run_sync(metadata.create_all)
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        with self._translated():
            await self._engine.dispose()

    def leadership(self, name: str, *, check_s: float = 5.0) -> Leadership:
        """The lock that lets one gateway at a time run the job *name* (adapters/store/leadership.py)."""
        return Leadership(self._engine, name, check_s=check_s)

    async def ping(self) -> None:
        """``SELECT 1``: the readiness check (``/readyz``). :class:`StoreUnavailableError` if it fails."""
        async with self._connect() as conn:
            await conn.execute(text("SELECT 1"))

    # -- for the aggregates' queries ------------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database errors raised within become :class:`StoreUnavailableError` or :class:`StoreError`."""
        try:
            yield
        except _DATABASE_ERRORS as exc:
            where = self._engine.url.render_as_string(hide_password=True)
            cause = _driver_error(exc)
            detail = f"{type(cause).__name__}: {cause}".replace("\n", " ")[:500]
            if _is_unavailable(exc):
                raise StoreUnavailableError(
                    f"database {where} cannot be reached ({detail}); check that it runs and that "
                    "[database] url points at it"
                ) from exc
            raise StoreError(f"database {where} failed: {detail}") from exc

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads, outside any transaction (each statement sees what was committed when
        it ran), its errors translated."""
        with self._translated():
            async with self._reads.connect() as conn:
                yield conn

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction (committed at the end, rolled back on error), errors translated."""
        with self._translated():
            async with self._engine.begin() as conn:
                yield conn

    def _insert_ignoring_duplicates(self, table: Any) -> Insert:
        dialect = self._engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        raise ConfigError(f"the status store supports SQLite and PostgreSQL, not {dialect}")
