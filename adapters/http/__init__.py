"""The agency HTTP API (ASGI): push envelopes, pull the inbox, follow what was sent."""

from adapters.http.app import ApiContext, create_app

__all__ = ["ApiContext", "create_app"]
