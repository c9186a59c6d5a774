"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.integration.fuzz_signing``): sign every request.

The agency API refuses any request that is not signed (:mod:`bus.auth`), so a fuzzer that does not
sign only ever meets the 401 in front of the handlers. Signing happens on the final prepared request,
after schemathesis has serialised the body and the query: the signature covers the request target and
the body's SHA-256 exactly as they go on the wire, as a real agency's system signs them.

The agency and its secret come from ``BUS_FUZZ_AGENCY`` and ``BUS_FUZZ_SECRET`` (the test sets them).
Probes that schemathesis sends without credentials (its ``ignored_auth`` check) are not signed: that
is the point of them.
"""

from __future__ import annotations

import os

import requests
import schemathesis

from bus.auth import sign_request


class BusHmacAuth(requests.auth.AuthBase):
    def __init__(self, agency: str, secret: bytes) -> None:
        self.agency = agency
        self.secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        if not isinstance(body, bytes):
            raise TypeError(f"cannot sign a streamed body ({type(body).__name__}): send bytes")
        method = request.method or "GET"
        request.headers.update(sign_request(self.secret, self.agency, method, request.path_url, body))
        return request


schemathesis.auth.set_from_requests(  # type: ignore[attr-defined]
    BusHmacAuth(os.environ["BUS_FUZZ_AGENCY"], os.environ["BUS_FUZZ_SECRET"].encode("utf-8"))
)
