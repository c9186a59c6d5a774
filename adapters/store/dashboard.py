"""The operators' dashboard's reads as store methods: the pages call these, never the engine. The
queries themselves, with why each reads an index, are in :mod:`adapters.store.dashboard_queries`."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.store import dashboard_queries as queries
from adapters.store.base import StoreBase
from adapters.store.dashboard_queries import Cursor, DocumentDetail, DocumentSearch, InboxDepth, SearchPage
from bus.delivery import DeadLetter

__all__ = ["DashboardReads"]


class DashboardReads(StoreBase):
    async def search_documents(
        self, search: DocumentSearch, *, after: Cursor | None = None, limit: int = 50
    ) -> SearchPage:
        """One page of documents, newest first, each with its deliveries."""
        with self._translated():
            return await queries.search_documents(self._engine, search, after=after, limit=limit)

    async def document_detail(self, bus_id: str) -> DocumentDetail | None:
        """The document's header with its deliveries (the timeline is :meth:`timeline`)."""
        with self._translated():
            return await queries.document_detail(self._engine, bus_id)

    async def inbox_depths(self) -> dict[str, InboxDepth]:
        """Per agency with anything pending (an agency not listed has an empty inbox)."""
        with self._translated():
            return await queries.inbox_depths(self._engine)

    async def dead_letters_by_id(self, ids: Sequence[int]) -> dict[int, DeadLetter]:
        """The dead letters an operator picked for a replay, without their bodies (the confirmation page)."""
        with self._translated():
            return await queries.dead_letters_by_id(self._engine, ids)

    async def create_dashboard_indexes(self) -> None:
        """Make the dashboard's indexes on a database whose tables existed before them (idempotent)."""
        with self._translated():
            await queries.create_dashboard_indexes(self._engine)
