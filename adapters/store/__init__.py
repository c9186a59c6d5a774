"""The delivery-status store (SQLAlchemy async): SQLite embedded by default, PostgreSQL in production."""

from adapters.store.store import DeliveryRow, InboxItem, StatusStore

__all__ = ["DeliveryRow", "InboxItem", "StatusStore"]
