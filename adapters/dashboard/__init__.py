"""The operators' web dashboard (issue 5): documents, timelines, inboxes, the national axis, dead letters."""

from adapters.dashboard.app import create_dashboard
from adapters.dashboard.context import LinkStatusSource, Replayer

__all__ = ["LinkStatusSource", "Replayer", "create_dashboard"]
