"""The national-axis client's error mapping and request shape, on an in-memory transport (the real
mock axis is exercised in tests/integration/test_mock_axis.py and test_two_provinces.py)."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest

from adapters.national_axis import CircuitBreaker, CircuitState, RelayOut
from adapters.national_axis.client import NationalAxisClient
from adapters.national_axis.protocol import hash_file, verify_request
from adapters.rabbitmq import BrokerNames
from bus.errors import AxisRejectedError, AxisUnavailableError

pytestmark = pytest.mark.asyncio

SECRET = "unit-test-secret"  # noqa: S105 - a test value


def _client(handler: httpx.MockTransport, **options: object) -> NationalAxisClient:
    return NationalAxisClient(
        "http://axis.test/api",
        "000.00.90.H99",
        SECRET,
        transport=handler,
        clock=lambda: dt.datetime(2026, 11, 27, 1, 2, 3, 45000, tzinfo=dt.UTC),
        **options,  # type: ignore[arg-type]
    )


async def test_send_edoc_signs_headers_and_sends_the_raw_body() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "OK", "ErrorCode": "0", "ErrorDesc": "", "DocId": "42"})

    client = _client(httpx.MockTransport(handle))
    body = "<edXML>Công văn</edXML>".encode()
    assert await client.send_edoc(body, sender="000.00.01.H99", to=["000.00.00.G12"]) == "42"
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "http://axis.test/api/sendEdoc"
    assert request.content == body + b"\r\n"
    assert request.headers["Content-Type"] == "application/octet-stream"
    raw = {k.decode().lower(): v for k, v in request.headers.raw}
    signed = verify_request(raw, lambda system: SECRET if system == "000.00.90.H99" else None)
    assert signed.params["from"] == "000.00.01.H99"
    assert signed.params["to"] == '["000.00.00.G12"]'
    assert signed.params["hash-file"] == hash_file(body)
    assert signed.timestamp == "27112026T080203+0045"  # Vietnam's local time
    await client.close()


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(503, text="down"), AxisUnavailableError),
        (
            httpx.Response(500, json={"status": "FAIL", "ErrorCode": "500", "ErrorDesc": "x"}),
            AxisUnavailableError,
        ),
        (httpx.Response(200, text="<html>proxy error</html>"), AxisUnavailableError),
        (httpx.Response(200, json={"status": "OK"}), AxisUnavailableError),  # envelope fields missing
        (httpx.Response(200, json={"status": "OK", "ErrorCode": "0", "ErrorDesc": ""}), AxisUnavailableError),
        (
            httpx.Response(200, json={"status": "FAIL", "ErrorCode": "404", "ErrorDesc": "không có"}),
            AxisRejectedError,
        ),
        # Wrong credentials or an overloaded axis say nothing about the envelope: wait, do not discard.
        (
            httpx.Response(401, json={"status": "FAIL", "ErrorCode": "401", "ErrorDesc": "bad"}),
            AxisUnavailableError,
        ),
        (
            httpx.Response(200, json={"status": "FAIL", "ErrorCode": "503", "ErrorDesc": "busy"}),
            AxisUnavailableError,
        ),
        (httpx.Response(429, text="slow down"), AxisUnavailableError),
        (httpx.Response(400, text="bad request"), AxisRejectedError),
    ],
)
async def test_errors_become_ours(response: httpx.Response, error: type[Exception]) -> None:
    client = _client(httpx.MockTransport(lambda _request: response))
    with pytest.raises(error):
        await client.send_edoc(b"<x/>", sender="000.00.01.H99")
    await client.close()


async def test_a_refusal_keeps_its_code_and_reason() -> None:
    answer = {"status": "FAIL", "ErrorCode": "404", "ErrorDesc": "Không tìm thấy đơn vị nhận"}
    client = _client(httpx.MockTransport(lambda _r: httpx.Response(200, json=answer)))
    with pytest.raises(AxisRejectedError) as caught:
        await client.send_edoc(b"<x/>", sender="000.00.01.H99")
    assert caught.value.code == "404"
    assert caught.value.description == "Không tìm thấy đơn vị nhận"
    await client.close()


async def test_timeouts_and_refused_connections_are_temporary() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for handler in (timeout, refused):
        client = _client(httpx.MockTransport(handler))
        with pytest.raises(AxisUnavailableError):
            await client.received()
        await client.close()


async def test_received_list_and_get_edoc() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/getReceivedEdocList"):
            item = {"docId": "7", "from": "000.00.00.G12", "to": "000.00.00.H99", "messageType": "edoc"}
            return httpx.Response(
                200, json={"status": "OK", "ErrorCode": "0", "ErrorDesc": "", "data": [item]}
            )
        data = "PGVkWE1MLz4="  # base64 of <edXML/>
        return httpx.Response(200, json={"status": "OK", "ErrorCode": 0, "ErrorDesc": "", "data": data})

    client = _client(httpx.MockTransport(handle))
    [item] = await client.received()
    assert (item.doc_id, item.sender, item.recipient) == ("7", "000.00.00.G12", "000.00.00.H99")
    assert await client.get_edoc("7") == b"<edXML/>"
    await client.close()


async def test_circuit_opens_after_threshold_and_closes_on_success() -> None:
    breaker = CircuitBreaker(threshold=3, open_s=1.0, clock=lambda: 100.0)
    breaker.failure()
    breaker.failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.success()  # a success in between resets the count
    breaker.failure()
    breaker.failure()
    assert not breaker.is_open
    breaker.failure()
    assert breaker.is_open
    assert breaker.opened_at == 100.0
    assert breaker.changed.is_set()
    breaker.changed.clear()
    breaker.success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.changed.is_set()


class _FlakyQueue:
    """A queue whose first ``consume`` fails, as while a robust channel reconnects."""

    name = "bus.outbound"

    def __init__(self) -> None:
        self.consumes = 0
        self.cancels = 0

    async def consume(self, _callback: object) -> str:
        self.consumes += 1
        if self.consumes == 2:  # the resume after the circuit closes
            raise ConnectionError("channel is reconnecting")
        return f"tag-{self.consumes}"

    async def cancel(self, _tag: str) -> None:
        self.cancels += 1


class _Channel:
    def __init__(self, queue: _FlakyQueue) -> None:
        self.queue = queue

    async def declare_queue(self, _name: str, *, passive: bool = False) -> _FlakyQueue:
        return self.queue


class _UpAxis:
    async def count_received(self) -> int:
        return 0


async def test_relay_pauses_while_open_and_survives_a_failed_resume() -> None:
    queue = _FlakyQueue()
    breaker = CircuitBreaker(threshold=1, open_s=0.05)
    relay = RelayOut(
        _Channel(queue),  # type: ignore[arg-type]
        BrokerNames("bus"),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        _UpAxis(),  # type: ignore[arg-type]
        breaker,
        retry_delays_ms=[1000],
    )
    await relay.start()
    assert queue.consumes == 1
    breaker.failure()  # opens: the consumer is cancelled; the probe answers and closes it
    for _ in range(100):
        await asyncio.sleep(0.02)
        if queue.consumes >= 3:
            break
    assert queue.cancels == 1
    assert breaker.state is CircuitState.CLOSED
    assert queue.consumes == 3  # the failed resume was tried again, not left dead
    await relay.stop()
