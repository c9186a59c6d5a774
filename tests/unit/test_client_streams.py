"""The agency client with an envelope of any size (issue 12, item 2): sent from its file as it is
read, signed with its digest, and fetched into a file that appears whole or not at all."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from adapters.http.client import AgencyClient, ApiFailure, EnvelopeFile
from bus.auth import read_headers, verify_request

pytestmark = pytest.mark.asyncio
AGENCY, SECRET = "000.00.01.H99", b"demo-only-000.00.01.H99"


class Receiving(httpx.AsyncBaseTransport):
    """Takes the request body as the client sends it, piece by piece (httpx's MockTransport reads it
    whole first), checks its signature and digest, and answers 202."""

    def __init__(self) -> None:
        self.pieces: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        signed = read_headers(request.headers)
        verify_request(signed, SECRET, "POST", request.url.raw_path.decode(), now=signed.timestamp, skew_s=5)
        digest = hashlib.sha256()
        async for piece in request.stream:  # type: ignore[union-attr]
            self.pieces.append(len(piece))
            digest.update(piece)
        assert digest.hexdigest() == signed.content_sha256
        assert "transfer-encoding" not in request.headers
        assert request.headers["content-length"] == str(sum(self.pieces))
        return httpx.Response(202, json={"bus_id": "b"})


async def test_a_file_is_sent_as_it_is_read_and_signed_with_its_digest(tmp_path: Path) -> None:
    envelope = tmp_path / "ho-so.edxml"
    envelope.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    server = Receiving()
    async with AgencyClient("http://bus", AGENCY, SECRET, transport=server) as client:
        assert await client.send(EnvelopeFile.of(envelope)) == {"bus_id": "b"}
    assert server.pieces == [1024 * 1024] * 3 + [5]  # never whole in memory


async def test_a_fetch_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    body = "<edXML>Sở Tài chính</edXML>".encode() * 1000

    def serve(announced: str) -> httpx.MockTransport:
        return httpx.MockTransport(
            lambda _request: httpx.Response(200, content=body, headers={"X-Bus-Body-SHA256": announced})
        )

    good = hashlib.sha256(body).hexdigest()
    async with AgencyClient("http://bus", AGENCY, SECRET, transport=serve(good)) as client:
        assert await client.fetch_to(7, tmp_path / "7.edxml") == len(body)
    assert (tmp_path / "7.edxml").read_bytes() == body
    async with AgencyClient("http://bus", AGENCY, SECRET, transport=serve("0" * 64)) as client:
        with pytest.raises(ApiFailure, match="arrived with SHA-256"):
            await client.fetch_to(8, tmp_path / "8.edxml")
    assert sorted(os.listdir(tmp_path)) == ["7.edxml"]  # no partial file left
