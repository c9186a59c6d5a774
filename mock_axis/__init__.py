"""A mock national axis (VDXP) that speaks the Java SDK's wire format (``national-axis-protocol.md``):
the operations of §3 at ``POST /<operation>`` (``GET /downloadEdoc``), authenticated by the signed
``XroadVnpt-*`` headers, with its state in a real database (:mod:`mock_axis.store`).

Modules: :mod:`~mock_axis.config` (the TOML file, the faults),
:mod:`~mock_axis.sending` (what sendEdoc checks and where it routes),
:mod:`~mock_axis.listing` (getReceivedEdocList's filters) and :mod:`~mock_axis.times` (the dates
and times callers send), :mod:`~mock_axis.freshness` (the stricter axis a fault switches on),
:mod:`~mock_axis.app` (the operations); and :mod:`~mock_axis.server` runs it.

A tool for integrators, not part of a province's bus: it lives beside ``bus/`` and ``adapters/``, and
nothing there imports it (the import contract in ``pyproject.toml``). It lets the bus's axis adapter be
tested end to end, and the SDK's own example be pointed at it. It is
not the real axis: where the real one's behaviour is unknown ([?] in the protocol notes) it does the
strict thing and says so in ``ErrorDesc``, unless the real client would trip over it (old
timestamps pass unless a fault says otherwise; issue 13). Parameters are read only from the signed sign-header
(never from a plain header), and a sender may only send as an organisation its system serves.

Error codes (``ErrorCode``; the real axis's codes are unknown, these only need to be non-zero)::

    0    success                          400  bad parameter or envelope (hostile XML included)
    401  authentication failed (HTTP 401; also a stale timestamp or a replay, when switched on)
    403  forged sender, or the item is not this system's
    404  unknown recipient, item, agency or operation
    413  body too large                   500  injected failure (fail_next)
    503  injected outage (down)

``sendEdoc`` answers in US-ASCII JSON (non-ASCII as JSON escapes such as ``\\u1ea1`` for "ạ"; the
SDK decodes that reply as US-ASCII), with ``DocId`` even on failure, and refuses an envelope with
HTTP 200 (the SDK reads a sendEdoc body only from a 200/201); a failed authentication (401), a body
too large (413) and the injected faults (500, 503) carry their own status.

A refused ``downloadEdoc`` has an **empty body** (the SDK saves any body as the document, §6): its
ErrorCode is the HTTP status, and the ``XroadVnpt-ErrorCode`` and ``XroadVnpt-ErrorDesc`` headers
carry the envelope's two fields.

**Fault injection** (:class:`MockFaults`) is switched in-process through ``running.faults`` or over
HTTP with ``POST /_mock/faults`` (JSON object of fields to set), ``GET /_mock/faults`` and
``POST /_mock/reset``. Those three are **unauthenticated**: this is a test tool, never expose it.
"""

from mock_axis.server import (
    AgencySeed,
    AxisSystem,
    MockAxisConfig,
    MockFaults,
    RunningMockAxis,
    create_mock_app,
    load_mock_config,
    serve_mock_axis,
)

__all__ = [
    "AgencySeed",
    "AxisSystem",
    "MockAxisConfig",
    "MockFaults",
    "RunningMockAxis",
    "create_mock_app",
    "load_mock_config",
    "serve_mock_axis",
]
