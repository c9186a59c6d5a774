"""The delivery-status store (SQLAlchemy async): SQLite embedded by default, PostgreSQL in production.

Its methods raise :class:`bus.errors.StoreError` (:class:`~bus.errors.StoreUnavailableError` when the
database cannot be reached), never SQLAlchemy's errors. Layout: adapters/store/store.py.
"""

from adapters.store.dashboard_queries import (
    Cursor,
    DocumentDetail,
    DocumentHit,
    DocumentSearch,
    InboxDepth,
    SearchPage,
)
from adapters.store.store import AxisSend, DeadLetter, DeliveryRow, InboxItem, StatusStore

__all__ = [
    "AxisSend",
    "Cursor",
    "DeadLetter",
    "DeliveryRow",
    "DocumentDetail",
    "DocumentHit",
    "DocumentSearch",
    "InboxDepth",
    "InboxItem",
    "SearchPage",
    "StatusStore",
]
