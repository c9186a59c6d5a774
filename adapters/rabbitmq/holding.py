"""Writing to the store while holding a message: the one rule every worker follows.

The message stays unacknowledged (safe in its queue) while the store is down, and the write is tried
again with back-off. Requeueing instead would count towards a quorum queue's delivery limit and
dead-letter good mail; acknowledging first would lose it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

__all__ = ["until_written"]

T = TypeVar("T")
MAX_DELAY_S = 30.0


async def until_written(
    write: Callable[[], Awaitable[T]], *, first_delay_s: float, event: str, **context: Any
) -> T:
    """*write()*'s result, after as many tries as it takes; each failure is logged as *event* with
    *context*, then waited out (doubling from *first_delay_s* up to 30 s)."""
    delay = first_delay_s
    while True:
        try:
            return await write()
        except Exception as exc:
            structlog.get_logger("bus.store").error(
                event, **context, error=type(exc).__name__, retry_in_s=delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
