"""An async client for the national axis, speaking the wire format of the axis's Java SDK exactly
(:mod:`adapters.national_axis.protocol`), with a timeout on every call and a fresh timestamp on every
request (the SDK sets one per service object; the axis cannot tell, and a fresh one is safer).

Errors become ours: :class:`~bus.errors.AxisUnavailableError` for what may pass (timeout, refused
connection, 5xx, an answer that is not the response envelope) and :class:`~bus.errors.AxisRejectedError`
for a refusal with a reason (``status FAIL`` or ``ErrorCode`` not ``0``, or a 4xx).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.national_axis.protocol import (
    CONTENT_TYPE_FILE,
    CONTENT_TYPE_JSON,
    hash_file,
    java_timestamp,
    signed_headers,
)
from bus.errors import AxisRejectedError, AxisUnavailableError

__all__ = ["NationalAxisClient", "ReceivedItem", "text_of"]


@dataclass(frozen=True, slots=True)
class ReceivedItem:
    """One envelope the axis holds for this system (``getReceivedEdocList``)."""

    doc_id: str
    message_type: str
    service_type: str
    sender: str
    recipient: str
    status: str
    status_desc: str
    created_time: str


# ErrorCodes that say nothing about the envelope itself (authentication, throttling, the axis's own
# failures). The real axis's codes are not published; these follow HTTP's meanings, as the mock does.
_NOT_ABOUT_THE_MESSAGE = frozenset({"401", "408", "429", "500", "502", "503", "504"})


def text_of(value: Any) -> str:
    """A JSON field as the SDK reads it: absent or null is empty, a number is its text."""
    return "" if value is None else str(value)


class NationalAxisClient:
    def __init__(
        self,
        endpoint: str,
        system_id: str,
        secret: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        # The SDK joins endpoint + "/" + operation as plain strings; so do we.
        self._endpoint = endpoint
        self._system_id = system_id
        self._secret = secret
        self._clock = clock
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    @property
    def system_id(self) -> str:
        return self._system_id

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        operation: str,
        params: Mapping[str, str],
        *,
        method: str = "POST",
        body: bytes = b"",
        content_type: str = CONTENT_TYPE_JSON,
        file_hash: str | None = None,
    ) -> httpx.Response:
        headers = signed_headers(
            self._system_id,
            self._secret,
            params,
            timestamp=java_timestamp(self._clock()),
            content_type=content_type,
            hash_of_file=file_hash,
        )
        url = f"{self._endpoint}/{operation}"
        try:
            response = await self._http.request(method, url, headers=headers, content=body or None)
        except httpx.TimeoutException as exc:
            raise AxisUnavailableError(f"{operation}: no answer from the national axis in time") from exc
        except httpx.HTTPError as exc:
            raise AxisUnavailableError(f"{operation}: cannot reach the national axis: {exc!r}") from exc
        if response.status_code >= 500:
            raise AxisUnavailableError(f"{operation}: the national axis answered HTTP {response.status_code}")
        return response

    async def _call(self, operation: str, params: Mapping[str, str], **options: Any) -> dict[str, Any]:
        response = await self._request(operation, params, **options)
        try:
            answer = json.loads(response.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            if 400 <= response.status_code < 500 and response.status_code not in (401, 408, 429):
                raise AxisRejectedError(str(response.status_code), response.text[:200]) from exc
            raise AxisUnavailableError(f"{operation}: the answer is not JSON: {exc}") from exc
        if not isinstance(answer, dict) or not all(k in answer for k in ("status", "ErrorCode", "ErrorDesc")):
            raise AxisUnavailableError(f"{operation}: the answer lacks status, ErrorCode or ErrorDesc")
        code = text_of(answer["ErrorCode"])
        failed = text_of(answer["status"]).upper() == "FAIL" or code != "0"
        if failed or response.status_code >= 400:
            code = code if code != "0" else str(response.status_code)
            if code in _NOT_ABOUT_THE_MESSAGE or response.status_code in (401, 408, 429):
                # Our credentials, the axis's load or its own trouble: nothing wrong with the envelope,
                # so it must wait (and the circuit breaker hear of it), not be dead-lettered.
                raise AxisUnavailableError(f"{operation}: the axis answered {code}: {answer['ErrorDesc']}")
            raise AxisRejectedError(code, text_of(answer["ErrorDesc"]))
        return answer

    async def send_edoc(
        self,
        body: bytes,
        *,
        sender: str,
        to: Sequence[str] | None = None,
        message_type: str = "edoc",
        service_type: str = "eDoc",
    ) -> str:
        """``sendEdoc``: the raw envelope as the body; returns the axis's DocId."""
        params = {"from": sender, "servicetype": service_type, "messagetype": message_type}
        if to is not None:
            # The SDK sends the JSON text of the value: an array keeps its brackets.
            params["to"] = json.dumps(list(to), separators=(",", ":"))
        answer = await self._call(
            "sendEdoc",
            params,
            body=body + b"\r\n",  # as the SDK sends it
            content_type=CONTENT_TYPE_FILE,
            file_hash=hash_file(body),
        )
        doc_id = text_of(answer.get("DocId"))
        if not doc_id:
            raise AxisUnavailableError("sendEdoc: the axis answered OK without a DocId")
        return doc_id

    async def received(self, *, message_type: str = "edoc", service_type: str = "eDoc") -> list[ReceivedItem]:
        """``getReceivedEdocList``: what the axis holds for this system."""
        answer = await self._call(
            "getReceivedEdocList", {"servicetype": service_type, "messagetype": message_type}
        )
        items = answer.get("data") or []
        if not isinstance(items, list):
            raise AxisUnavailableError("getReceivedEdocList: data is not a list")
        return [
            ReceivedItem(
                doc_id=text_of(item.get("docId")),
                message_type=text_of(item.get("messageType")) or message_type,
                service_type=text_of(item.get("serviceType")),
                sender=text_of(item.get("from")),
                recipient=text_of(item.get("to")),
                status=text_of(item.get("status")),
                status_desc=text_of(item.get("status_desc")),
                created_time=text_of(item.get("created_time")),
            )
            for item in items
            if isinstance(item, dict) and item.get("docId")
        ]

    async def get_edoc(self, doc_id: str) -> bytes:
        """``getEdoc``: one envelope, base64 in ``data``."""
        answer = await self._call("getEdoc", {"docId": doc_id, "filePath": "edoc"}, body=b"{}")
        try:
            return base64.b64decode(text_of(answer.get("data")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AxisUnavailableError(f"getEdoc {doc_id}: data is not base64") from exc

    async def download_edoc(self, doc_id: str) -> bytes:
        """``downloadEdoc`` (GET): the raw envelope stream."""
        response = await self._request("downloadEdoc", {"docId": doc_id, "filePath": "edoc"}, method="GET")
        if response.status_code >= 400 or not response.content:
            raise AxisRejectedError(str(response.status_code), f"downloadEdoc {doc_id}: nothing to download")
        return response.content

    async def update_status(self, doc_id: str, status: str) -> None:
        """``updateStatus``: the transport acknowledgement (``processing``, ``done``, ``fail``)."""
        await self._call("updateStatus", {"status": status, "docId": doc_id}, body=b"{}")

    async def sent(self, doc_id: str | None = None, *, message_type: str = "edoc") -> list[dict[str, Any]]:
        """``getSentEdocList``: per-recipient send and receive state."""
        params = {"servicetype": "eDoc", "messagetype": message_type}
        if doc_id is not None:
            params["docId"] = doc_id
        data = (await self._call("getSentEdocList", params)).get("data") or []
        return [item for item in data if isinstance(item, dict)]

    async def count_received(self, *, statuses: bool = False) -> int:
        """``countReceiveEdoc`` or ``countReceiveStatus``."""
        operation = "countReceiveStatus" if statuses else "countReceiveEdoc"
        answer = await self._call(operation, {"servicetype": "eDoc"}, body=b"{}")
        try:
            return int(answer.get("count") or 0)
        except (TypeError, ValueError) as exc:
            raise AxisUnavailableError(f"{operation}: count is not a number") from exc

    async def agencies(self) -> list[dict[str, Any]]:
        data = (await self._call("getAgenciesList", {})).get("data") or []
        return [item for item in data if isinstance(item, dict)]

    async def register_agency(self, agency: Mapping[str, str]) -> None:
        await self._call("registerAgency", {}, body=json.dumps(dict(agency), ensure_ascii=False).encode())

    async def delete_agency(self, code: str) -> None:
        await self._call("deleteAgency", {"AgencyCode": code}, body=b"{}")
