"""What the agency API's handlers share: the node's topology, intake and store, the agencies' secrets,
and the bounds and clock they apply. :mod:`entrypoints.runtime` builds one per node."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from adapters.http.health import Readiness
from adapters.http.metrics import NodeMetrics
from adapters.store import StatusStore
from bus.intake import Intake
from bus.receipts import Notary
from bus.topology import Topology

__all__ = ["ApiContext", "Resource"]


@dataclass
class ApiContext:
    topology: Topology
    intake: Intake
    store: StatusStore
    secrets: Mapping[str, bytes]  # an agency's current code -> its shared secret
    max_body_bytes: int = 64 * 1024 * 1024
    clock_skew_s: int = 300
    clock: Callable[[], float] = time.time
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    readiness: Readiness = field(default_factory=Readiness)
    # Signs the receipts senders get (bus/receipts.py); None: answers carry none (tools, some tests).
    notary: Notary | None = None


class Resource:
    """The handlers of one resource of the API (each a Starlette endpoint), bound to the node's context."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
