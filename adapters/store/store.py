"""The status store: one class over one engine, composed of a part per aggregate. Each part is its own
module (named by what it keeps); every public method raises :class:`~bus.errors.StoreError` or
:class:`~bus.errors.StoreUnavailableError`, never SQLAlchemy's errors (adapters/store/base.py).

=====================  ========================================================================
``base.py``            the engine, ``connect``, ``create_schema``, ``close``, ``ping``, errors
``timelines.py``       writing events and moving deliveries forward (shared by every part)
``documents.py``       accepting documents; deliveries, timelines, what a sender sent
``inbox.py``           agencies' inboxes: keep, list, fetch, acknowledge, depths
``dead_letters.py``    dead letters: keep, list, replay
``axis_sends.py``      what the national axis took, until its sent list shows it
``bodies.py``          the body store: each envelope once, in chunks; its garbage collection
``auth_state.py``      request nonces and revoked dashboard sessions
``login_failures.py``  failed dashboard logins, counted for every gateway (the login throttle's)
``axis_inbound.py``    what relay in decided for the axis's envelopes and what it told the axis
``dashboard.py``       the operators' dashboard's reads (queries in ``dashboard_queries.py``)
=====================  ========================================================================
"""

from __future__ import annotations

from adapters.store.auth_state import AuthState
from adapters.store.axis_inbound import AxisInbound
from adapters.store.axis_sends import AxisSends
from adapters.store.bodies import Bodies
from adapters.store.dashboard import DashboardReads
from adapters.store.dead_letters import DeadLetters
from adapters.store.documents import Documents
from adapters.store.inbox import Inboxes
from adapters.store.login_failures import LoginFailures

__all__ = ["StatusStore"]


class StatusStore(
    Documents,
    Inboxes,
    DeadLetters,
    AxisSends,
    AxisInbound,
    AuthState,
    LoginFailures,
    DashboardReads,
    Bodies,
):
    """Timelines per document and recipient, inboxes, dead letters, what the national axis took and
    what relay in decided, request nonces, failed dashboard logins, and the body store: what every
    gateway of the province shares. ``url`` is a SQLAlchemy async URL:
    ``sqlite+aiosqlite:///path/bus.db`` (default) or ``postgresql+asyncpg://user@host/db``."""
