"""The delivery-status store (SQLAlchemy async): SQLite embedded by default, PostgreSQL in production."""

from adapters.store.store import AxisSend, DeadLetter, DeliveryRow, InboxItem, StatusStore

__all__ = ["AxisSend", "DeadLetter", "DeliveryRow", "InboxItem", "StatusStore"]
