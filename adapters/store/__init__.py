"""The delivery-status store (SQLAlchemy async): SQLite embedded by default, PostgreSQL in production.

Its methods raise :class:`bus.errors.StoreError` (:class:`~bus.errors.StoreUnavailableError` when the
database cannot be reached), never SQLAlchemy's errors. The records it reads and writes are the core's
(:mod:`bus.delivery`). Layout: adapters/store/store.py.
"""

from adapters.store.audit import StoredCheckpoint, StoredRecord
from adapters.store.dashboard_queries import (
    Cursor,
    DocumentDetail,
    DocumentHit,
    DocumentSearch,
    InboxDepth,
    SearchPage,
)
from adapters.store.store import StatusStore

__all__ = [
    "Cursor",
    "DocumentDetail",
    "DocumentHit",
    "DocumentSearch",
    "InboxDepth",
    "SearchPage",
    "StatusStore",
    "StoredCheckpoint",
    "StoredRecord",
]
