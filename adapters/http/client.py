"""A client of the agency HTTP API (what ``bus send`` and ``bus inbox`` use; also a reference for
agency systems). Every request is signed afresh (:mod:`bus.auth`) and has a timeout."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from bus.auth import sign_request
from bus.errors import BusError

__all__ = ["AgencyClient", "ApiFailure"]

_TRANSIENT = {502, 503, 504}


class ApiFailure(BusError):
    """The API answered with an error; ``code`` and ``payload`` are its JSON error."""

    def __init__(self, status: int, code: str, message: str, payload: dict[str, Any]) -> None:
        self.status, self.code, self.payload = status, code, payload
        super().__init__(f"HTTP {status} {code}: {message}")


class AgencyClient:
    def __init__(
        self,
        base_url: str,
        agency: str,
        secret: bytes,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.agency = agency
        self._secret = secret
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AgencyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        params: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        request = self._http.build_request(method, path, params=params, content=body or None)
        target = request.url.raw_path.decode("ascii")
        request.headers.update(sign_request(self._secret, self.agency, method, target, body))
        if content_type:
            request.headers["Content-Type"] = content_type
        response = await self._http.send(request)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http-error", "message": response.text[:500]}
            raise ApiFailure(response.status_code, error.get("code", "?"), error.get("message", ""), error)
        return response

    async def send(self, envelope: bytes, *, retries: int = 0, backoff_s: float = 1.0) -> dict[str, Any]:
        """Send an envelope; with *retries*, a refused connection or a 503 is retried (the same envelope
        is never accepted twice, so a retry is safe). A 409 after a failed attempt means that attempt
        was accepted: its answer is returned."""
        attempt = 0
        while True:
            try:
                response = await self.request(
                    "POST", "/v1/envelopes", body=envelope, content_type="application/xml"
                )
                return dict(response.json())
            except ApiFailure as exc:
                if exc.status == 409 and attempt > 0 and "bus_id" in exc.payload:
                    return {"bus_id": exc.payload["bus_id"], "duplicate_of_retry": True}
                if exc.status not in _TRANSIENT or attempt >= retries:
                    raise
            except httpx.TransportError:
                if attempt >= retries:
                    raise
            attempt += 1
            await asyncio.sleep(min(backoff_s * 2 ** (attempt - 1), 10.0))

    async def inbox(self, *, pending: bool = True, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        params = {"pending": str(pending).lower(), "after": str(after), "limit": str(limit)}
        response = await self.request("GET", "/v1/inbox", params=params)
        return list(response.json()["items"])

    async def fetch(self, item_id: int) -> bytes:
        return (await self.request("GET", f"/v1/inbox/{item_id}")).content

    async def acknowledge(self, item_id: int, state: str, reason: str | None = None) -> dict[str, Any]:
        body = json.dumps({"state": state, "reason": reason}, ensure_ascii=False).encode("utf-8")
        response = await self.request(
            "POST", f"/v1/inbox/{item_id}/ack", body=body, content_type="application/json"
        )
        return dict(response.json())

    async def acknowledge_many(self, acks: list[tuple[int, str, str | None]]) -> list[dict[str, Any]]:
        """Acknowledge several envelopes with one request (``POST /v1/acks``): one result per
        (item id, state, reason), in order, each with its own ``status`` (200, 404 or 409)."""
        payload = {"acks": [{"id": i, "state": state, "reason": reason} for i, state, reason in acks]}
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        response = await self.request("POST", "/v1/acks", body=body, content_type="application/json")
        return list(response.json()["results"])

    async def sent(self, *, limit: int = 50) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/sent", params={"limit": str(limit)})).json()["documents"])

    async def document(self, bus_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/v1/documents/{bus_id}")).json())

    async def agencies(self) -> dict[str, Any]:
        return dict((await self.request("GET", "/v1/agencies")).json())
