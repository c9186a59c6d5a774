"""Edges of the bus: RabbitMQ, the HTTP API, the status store, the national-axis client and its mock.

The core (:mod:`bus`) holds the domain and talks to these through small protocols; nothing in
``bus`` imports from here. The adapters arrive with the issues that need them.
"""

__all__: list[str] = []
