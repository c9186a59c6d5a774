"""Talking to the mock national axis as the Java SDK does, for the mock's tests
(``test_mock_axis.py``, ``test_mock_axis_real_client.py``).

Every request is built with :func:`signed_headers`, the way the SDK builds it: signed ``XroadVnpt-*``
headers, the ``\\r\\n`` the SDK appends to a file, ``hash-file`` without zero padding.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from adapters.national_axis.protocol import (
    CONTENT_TYPE_FILE,
    CONTENT_TYPE_JSON,
    hash_file,
    java_timestamp,
    signed_headers,
)
from mock_axis import MockAxisConfig, MockFaults, RunningMockAxis, serve_mock_axis
from tests.conftest import ROOT
from tests.factory import make_document
from tests.integration.conftest import fresh_database

__all__ = ["CONFIG", "DOCUMENT", "G12", "H98", "H99", "Axis", "answer", "doc_id", "running_axis"]

CONFIG = ROOT / "config" / "mock-axis.toml"
H99, H98, G12 = "000.00.90.H99", "000.00.90.H98", "000.00.00.G12"  # the systems of config/mock-axis.toml
DOCUMENT = make_document("000.00.01.H99", ["000.00.00.G12"], 1)


@dataclass
class Axis:
    """A running mock and an HTTP client that speaks to it as the SDK would."""

    url: str
    config: MockAxisConfig
    http: httpx.AsyncClient
    faults: MockFaults  # the running mock's own object, switched in-process
    port: int = 0

    @classmethod
    def of(cls, running: RunningMockAxis, http: httpx.AsyncClient) -> Axis:
        return cls(running.url, running.config, http, running.faults, running.port)

    async def call(
        self,
        system: str,
        operation: str,
        params: Mapping[str, str] | None = None,
        *,
        body: bytes = b"",
        method: str = "POST",
        content_type: str = CONTENT_TYPE_JSON,
        file_hash: str | None = None,
        key: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
        timestamp: str | None = None,
    ) -> httpx.Response:
        """One signed request; *timestamp* pins ``XroadVnpt-timestamp`` (the SDK sets it once per
        service object), otherwise it is now."""
        secret = key if key is not None else self.config.secret_of(system)
        assert secret is not None
        headers = signed_headers(
            system,
            secret,
            params or {},
            timestamp=timestamp or java_timestamp(dt.datetime.now(dt.UTC)),
            content_type=content_type,
            hash_of_file=file_hash,
        )
        # Values as UTF-8 bytes, as sendEdoc sends them (httpx would refuse non-ASCII text).
        raw = [(name.encode("ascii"), value.encode("utf-8")) for name, value in [*headers, *extra_headers]]
        return await self.http.request(method, f"{self.url}/{operation}", headers=raw, content=body)

    async def ok(
        self, system: str, operation: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        response = await self.call(system, operation, params, body=b"{}")
        answer: dict[str, Any] = response.json()
        assert response.status_code == 200, answer
        assert (answer["status"], answer["ErrorCode"]) == ("OK", "0"), answer
        return answer

    async def send(
        self,
        system: str,
        envelope: bytes,
        *,
        message_type: str = "edoc",
        sender: str | None = None,
        to: str | None = None,
    ) -> httpx.Response:
        """sendEdoc as the SDK does it: the file plus ``\\r\\n``, its hash-file, octet-stream."""
        params = {"servicetype": "eDoc", "messagetype": message_type}
        if sender is not None:
            params["from"] = sender
        if to is not None:
            params["to"] = to
        return await self.call(
            system,
            "sendEdoc",
            params,
            body=envelope + b"\r\n",
            content_type=CONTENT_TYPE_FILE,
            file_hash=hash_file(envelope),
        )

    async def received(self, system: str, message_type: str = "edoc") -> list[dict[str, Any]]:
        answer = await self.ok(
            system, "getReceivedEdocList", {"servicetype": "eDoc", "messagetype": message_type}
        )
        return list(answer["data"])

    async def switch(self, **wanted: Any) -> dict[str, Any]:
        response = await self.http.post(f"{self.url}/_mock/faults", json=wanted)
        assert response.status_code == 200, response.text
        return dict(response.json())


def answer(response: httpx.Response) -> dict[str, Any]:
    return dict(json.loads(response.content))


def doc_id(response: httpx.Response) -> str:
    """The DocId of a sendEdoc that must have succeeded."""
    answered = answer(response)
    assert response.status_code == 200
    assert (answered["status"], answered["ErrorCode"]) == ("OK", "0"), answered
    return str(answered["DocId"])


@asynccontextmanager
async def running_axis(kind: str, tmp_path: Path, config: MockAxisConfig) -> AsyncIterator[Axis]:
    """The mock on a fresh database of *kind* (``sqlite`` or ``postgresql``), and a client for it."""
    async with (
        fresh_database(kind, tmp_path) as url,
        serve_mock_axis(config, url) as running,
        httpx.AsyncClient(timeout=10) as http,
    ):
        yield Axis.of(running, http)
