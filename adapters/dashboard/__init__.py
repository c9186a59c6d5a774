"""The operators' web dashboard (issue 5): documents, timelines, inboxes, the national axis, dead letters."""

from adapters.dashboard.app import create_dashboard
from adapters.dashboard.context import LinkStatusSource, Replayer
from adapters.dashboard.redirects import RelativeRedirects
from adapters.dashboard.throttle import LoginThrottle, ThrottlePolicy

__all__ = [
    "LinkStatusSource",
    "LoginThrottle",
    "RelativeRedirects",
    "Replayer",
    "ThrottlePolicy",
    "create_dashboard",
]
