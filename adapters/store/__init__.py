"""The delivery-status store (SQLAlchemy async): SQLite embedded by default, PostgreSQL in production."""

from adapters.store.store import DeliveryRow, DocumentRow, StatusStore

__all__ = ["DeliveryRow", "DocumentRow", "StatusStore"]
