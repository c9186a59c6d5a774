"""A client of the agency HTTP API (what ``bus send`` and ``bus inbox`` use; also a reference for
agency systems). Every request is signed afresh (:mod:`bus.auth`) and has a timeout.

An envelope in a file is hashed, then sent, a chunk at a time, and a fetched one is written to its
file as it arrives (checked against its ``X-Bus-Body-SHA256``): a 100 MB scanned dossier never is
whole in the client's memory (issue 12)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bus.auth import SCHEME, canonical_request, sign_request, signature
from bus.errors import BusError

__all__ = ["AgencyClient", "ApiFailure", "EnvelopeFile"]

_TRANSIENT = {502, 503, 504}
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EnvelopeFile:
    """An envelope in a file, with the size and SHA-256 that sign its request (read once to hash it,
    and once per attempt to send it, a chunk at a time)."""

    path: Path
    size: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> EnvelopeFile:
        """Raises OSError when *path* cannot be read."""
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return cls(path, size, digest.hexdigest())

    async def chunks(self) -> AsyncIterator[bytes]:
        with self.path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                yield chunk


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
        body: bytes | EnvelopeFile = b"",
        params: dict[str, str] | None = None,
        content_type: str | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One signed request; :class:`ApiFailure` for an error answer. With *stream*, the answer's body
        is not read: close the response (``aclose``) when done with it."""
        if isinstance(body, EnvelopeFile):
            headers = {"Content-Length": str(body.size)}  # sent as it is read, not chunk-encoded
            request = self._http.build_request(
                method, path, params=params, content=body.chunks(), headers=headers
            )
            signing = self._signing(method, request.url.raw_path.decode("ascii"), body.sha256)
        else:
            request = self._http.build_request(method, path, params=params, content=body or None)
            target = request.url.raw_path.decode("ascii")
            signing = sign_request(self._secret, self.agency, method, target, body)
        request.headers.update(signing)
        if content_type:
            request.headers["Content-Type"] = content_type
        response = await self._http.send(request, stream=stream)
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http-error", "message": response.text[:500]}
            raise ApiFailure(response.status_code, error.get("code", "?"), error.get("message", ""), error)
        return response

    def _signing(self, method: str, target: str, content_sha256: str) -> dict[str, str]:
        """The headers :func:`bus.auth.sign_request` makes, for a body known by its digest."""
        timestamp, nonce = int(time.time()), secrets.token_hex(16)
        canonical = canonical_request(method, target, timestamp, nonce, self.agency, content_sha256)
        return {
            "X-Bus-Agency": self.agency,
            "X-Bus-Timestamp": str(timestamp),
            "X-Bus-Nonce": nonce,
            "X-Bus-Content-SHA256": content_sha256,
            "Authorization": f"{SCHEME} Signature={signature(self._secret, canonical)}",
        }

    async def send(
        self, envelope: bytes | EnvelopeFile, *, retries: int = 0, backoff_s: float = 1.0
    ) -> dict[str, Any]:
        """Send an envelope (in memory, or a file streamed as it is read); with *retries*, a refused
        connection or a 503 is retried (the same envelope is never accepted twice, so a retry is
        safe). A 409 after a failed attempt means that attempt was accepted: its answer is returned."""
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

    async def fetch_to(self, item_id: int, target: Path) -> int:
        """Write envelope *item_id* to *target* as it arrives; returns its size. The file appears whole
        or not at all (written beside it, then renamed); a body that does not match the digest the bus
        announced (``X-Bus-Body-SHA256``) raises :class:`ApiFailure` and leaves nothing."""
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        response = await self.request("GET", f"/v1/inbox/{item_id}", stream=True)
        digest, size = hashlib.sha256(), 0
        try:
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            announced = response.headers.get("x-bus-body-sha256")
            if announced is not None and announced != digest.hexdigest():
                message = f"envelope {item_id} arrived with SHA-256 {digest.hexdigest()}, not {announced}"
                raise ApiFailure(502, "body-digest-mismatch", message, {})
            os.replace(partial, target)
        finally:
            await response.aclose()
            partial.unlink(missing_ok=True)
        return size

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
