"""The filters real callers add to ``getReceivedEdocList`` (protocol notes §6): ``fromDate``,
``toDate``, ``status``, ``pageSize``, ``pageIndex``, read from the signed parameters. How the real
axis reads them is not published [?]; the mock reads them as below and refuses anything else with
FAIL/400, naming the parameter and what it takes.

``fromDate`` and ``toDate`` are days or times (:mod:`mock_axis.times`). ``fromDate`` keeps what was
created at or after the start of what it names, ``toDate`` what was created before its end: a whole
day for a day, the millisecond for ``created_time`` as the list shows it (so ``toDate`` set to an
item's ``created_time`` keeps that item). ``status`` is a transport status (``pending``,
``processing``, ``done``, ``fail``): without it the list is what is not done yet, with it exactly
the items in that status (so ``done`` lists what was acknowledged). ``pageSize`` (1 to 1000) cuts
the list into pages, ``pageIndex`` counts them from 1. An empty value is no filter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from mock_axis.sending import Refusal
from mock_axis.times import PERIOD_FORMATS, period

__all__ = ["LIST_STATUSES", "MAX_PAGE_SIZE", "ReceivedFilter", "read_received_filter"]

LIST_STATUSES = ("pending", "processing", "done", "fail")
MAX_PAGE_SIZE = 1000
MAX_PAGE_INDEX = 1_000_000


@dataclass(frozen=True, slots=True)
class ReceivedFilter:
    """What one getReceivedEdocList asks for, beyond the message and service types."""

    status: str | None = None
    created_from: dt.datetime | None = None  # inclusive
    created_before: dt.datetime | None = None  # exclusive
    limit: int | None = None
    offset: int = 0


def _date(params: Mapping[str, str], name: str) -> tuple[dt.datetime, dt.datetime] | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        return period(text)
    except ValueError as exc:  # also a day that does not exist (30/02) or an offset out of range
        raise Refusal(
            "400", f"{name} {text!r} is not a date or time the axis reads: use {PERIOD_FORMATS}"
        ) from exc


def _whole(params: Mapping[str, str], name: str, high: int, rule: str) -> int | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= high:
        raise Refusal("400", f"{name} {rule}, not {text!r}")
    return int(text)


def read_received_filter(params: Mapping[str, str]) -> ReceivedFilter:
    """The filters of one getReceivedEdocList; :class:`Refusal` (400) names a bad one."""
    status = params.get("status", "").strip() or None
    if status is not None and status not in LIST_STATUSES:
        allowed = f"{', '.join(LIST_STATUSES[:-1])} or {LIST_STATUSES[-1]}"
        raise Refusal("400", f"status must be {allowed}, not {status!r}")
    since, until = _date(params, "fromDate"), _date(params, "toDate")
    if since is not None and until is not None and since[0] >= until[1]:
        raise Refusal("400", f"fromDate {params['fromDate']!r} is after toDate {params['toDate']!r}")
    size = _whole(params, "pageSize", MAX_PAGE_SIZE, f"must be a whole number from 1 to {MAX_PAGE_SIZE}")
    index = _whole(params, "pageIndex", MAX_PAGE_INDEX, f"counts pages from 1 (up to {MAX_PAGE_INDEX})")
    if index is not None and size is None:
        raise Refusal("400", "pageIndex needs pageSize: say how many items a page holds")
    return ReceivedFilter(
        status=status,
        created_from=None if since is None else since[0],
        created_before=None if until is None else until[1],
        limit=size,
        offset=0 if size is None else size * ((index or 1) - 1),
    )
