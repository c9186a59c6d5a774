"""Structured logs (structlog): JSON lines in production, readable lines on a terminal.

Envelope log lines carry ``document_id``, ``bus_id``, ``sender`` and ``recipient`` where known. Bodies,
secrets and keys are never passed to a logger, and :func:`redact` stands behind that rule (issue 5):
every line, ours and the standard-library ones of uvicorn, aio-pika and SQLAlchemy, goes through it
before it is rendered. It replaces the value of any field named like a secret, drops bytes, and masks
the password of any ``scheme://user:password@host`` URL inside a text.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

__all__ = ["REDACTED", "configure_logging", "redact"]

REDACTED = "[redacted]"

# A field is secret when one of the words of its name (split at _ - . and case changes) is one of these.
_SECRET_WORDS = frozenset(
    {
        "authorization",
        "body",
        "cookie",
        "credential",
        "credentials",
        "key",
        "passphrase",
        "passwd",
        "password",
        "pem",
        "secret",
        "signature",
        "token",
        # plurals and short forms (secrets, agency_secrets, tokens, pwd, apikey, privatekey, auth)
        "secrets",
        "passwords",
        "tokens",
        "cookies",
        "keys",
        "signatures",
        "pwd",
        "auth",
        "apikey",
        "privatekey",
    }
)
# Identifiers that end in "key" but are no key material: idempotency and routing keys name messages.
_NOT_SECRET = frozenset({"dead_key", "event_key", "routing_key", "dedupe_key"})
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# user:password@ up to the last "@" before the host (a password may hold "/" or "@").
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)\S+@(?=[^@\s]*$|[^@\s/]+[/:\s])")
_MAX_DEPTH = 4


def _secret_name(name: str) -> bool:
    if name in _NOT_SECRET:
        return False
    return any(word.lower() in _SECRET_WORDS for word in _WORDS.findall(name))


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(value)} bytes dropped]"
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>***@", value) if "://" in value else value
    if type(value).__name__ == "URL":  # yarl / httpx / starlette URLs render with their password
        return _clean(str(value), depth)
    if depth >= _MAX_DEPTH:
        return value if isinstance(value, int | float | bool | None) else REDACTED
    if isinstance(value, Mapping):
        return {k: REDACTED if _secret_name(str(k)) else _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: secrets out of every field, nested mappings and lists included."""
    for name, value in list(event_dict.items()):
        if name == "event":
            event_dict[name] = _clean(value, 0)
        elif _secret_name(name):
            event_dict[name] = REDACTED
        else:
            event_dict[name] = _clean(value, 0)
    return event_dict


def configure_logging(*, json: bool | None = None, level: int = logging.INFO) -> None:
    """*json*: None picks JSON unless standard error is a terminal."""
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The libraries' own lines (uvicorn, aio-pika reconnecting, SQLAlchemy) in the same format and
    # through the same redaction: an aio-pika warning names the broker URL it reconnects to. Their
    # warnings and errors only, as before: their INFO lines are chatter on an operator's screen.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.WARNING))
