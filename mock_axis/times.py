"""The times callers send the mock: the SDK's own timestamp (``XroadVnpt-timestamp``), and the dates
and times of ``getReceivedEdocList``'s ``fromDate`` and ``toDate``.

The real axis's date formats are not published [?]. The mock reads what callers plausibly send:

- a day, ``yyyy-MM-dd`` or ``dd/MM/yyyy``: the whole day;
- a time, ISO 8601 (``2026-11-20T08:15:30+07:00``, the format of the lists' own ``created_time``;
  ``Z`` or any offset; seconds and fractions optional), ``dd/MM/yyyy HH:mm:ss``, or the SDK's
  timestamp ``ddMMyyyy'T'HHmmss+SSSS``: the minute, second or millisecond it names.

A day or a time without an offset is Vietnam's (the SDK's timestamps are the JVM's local time; the
axis is in Vietnam).
"""

from __future__ import annotations

import datetime as dt
import re

from adapters.national_axis.protocol import AXIS_TZ

__all__ = ["PERIOD_FORMATS", "period", "sdk_time"]

PERIOD_FORMATS = (
    "yyyy-MM-dd or dd/MM/yyyy (a whole day, Vietnam time), an ISO 8601 time such as "
    "2026-11-20T08:15:30+07:00, dd/MM/yyyy HH:mm:ss, or the SDK's ddMMyyyy'T'HHmmss+SSSS"
)

_SDK_TIME = re.compile(r"(\d{2})(\d{2})(\d{4})T(\d{2})(\d{2})(\d{2})\+(\d{4})", re.ASCII)
_DAY_MONTH_YEAR = re.compile(r"(\d{2})/(\d{2})/(\d{4})(?: (\d{2}):(\d{2}):(\d{2}))?", re.ASCII)
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?(Z|[+-]\d{2}:?\d{2})?)?",
    re.ASCII,
)


def sdk_time(text: str) -> dt.datetime:
    """The SDK's ``ddMMyyyy'T'HHmmss+SSSS`` (``+`` a literal, ``SSSS`` the milliseconds 0000-0999) in
    Vietnam's time; :class:`ValueError` if *text* is not one."""
    found = _SDK_TIME.fullmatch(text)
    if found is None or int(found[7]) > 999:
        raise ValueError(f"{text!r} is not ddMMyyyy'T'HHmmss+SSSS")
    day, month, year, hour, minute, second, millis = map(int, found.groups())
    return dt.datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=AXIS_TZ)


def period(text: str) -> tuple[dt.datetime, dt.datetime]:
    """The start and the (exclusive) end of what *text* names; ValueError if it names nothing."""
    if _SDK_TIME.fullmatch(text):
        moment = sdk_time(text)
        return moment, moment + dt.timedelta(milliseconds=1)
    if found := _DAY_MONTH_YEAR.fullmatch(text):
        day, month, year = int(found[1]), int(found[2]), int(found[3])
        if found[4] is None:
            start = dt.datetime(year, month, day, tzinfo=AXIS_TZ)
            return start, start + dt.timedelta(days=1)
        start = dt.datetime(year, month, day, int(found[4]), int(found[5]), int(found[6]), tzinfo=AXIS_TZ)
        return start, start + dt.timedelta(seconds=1)
    if found := _ISO.fullmatch(text):
        year, month, day = int(found[1]), int(found[2]), int(found[3])
        if found[4] is None:
            start = dt.datetime(year, month, day, tzinfo=AXIS_TZ)
            return start, start + dt.timedelta(days=1)
        fraction = found[7] or ""
        start = dt.datetime(
            year,
            month,
            day,
            int(found[4]),
            int(found[5]),
            int(found[6] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=_zone(found[8]),
        )
        if fraction:
            step = dt.timedelta(microseconds=10 ** (6 - len(fraction)))
        else:
            step = dt.timedelta(seconds=1) if found[6] else dt.timedelta(minutes=1)
        return start, start + step
    raise ValueError(text)


def _zone(text: str | None) -> dt.tzinfo:
    if text is None:
        return AXIS_TZ
    if text == "Z":
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
