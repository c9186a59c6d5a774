"""Limits on request heads, against a real ``bus serve`` over loopback with raw sockets (issue 10 item 4).

Found by the adversarial test: four unauthenticated requests with 40 MB headers took a node to 287 MB
and ``/healthz`` to 2.6 s, since uvicorn's httptools parser gathers a header in memory until its end
arrives. The node runs with the production defaults (16 KiB of request line and headers, 100 fields)
except for a 1 s ``header_timeout_s``, so that the slow-head case does not take 20 s.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.settings import load_settings
from tests.integration.conftest import delete_broker_objects, write_config
from tests.integration.processes import free_port

MAX_HEADER_BYTES = 16 * 1024  # the defaults of HttpSettings
MAX_HEADERS = 100
HEADER_TIMEOUT_S = 1.0


class Node:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        [line] = [line for line in status.splitlines() if line.startswith("VmRSS:")]
        return int(line.split()[1]) * 1024

    def exchange(self, data: bytes, *, read_s: float = 5.0) -> bytes:
        """Send *data* on a new connection and read until the server closes it or *read_s* passes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=read_s) as sock:
            sock.sendall(data)
            return _read_answer(sock, read_s)


def _read_answer(sock: socket.socket, within_s: float) -> bytes:
    answer = b""
    deadline = time.monotonic() + within_s
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if b"\r\n\r\n" in answer:  # a whole head, and no more for a while: a kept-alive answer
                break
            continue
        except ConnectionResetError:
            break
        if not data:
            break
        answer += data
    return answer


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Node]:
    """``bus serve`` with the default head limits (SQLite; the real RabbitMQ)."""
    tmp = tmp_path_factory.mktemp("limits")
    config = write_config(
        tmp / "province.toml",
        pki_dir,
        prefix=f"test-{uuid.uuid4().hex[:10]}",
        database_url=f"sqlite+aiosqlite:///{tmp / 'bus.db'}",
    )
    port, log = free_port(), tmp / "serve.log"
    env = {**os.environ, "BUS_HTTP__PORT": str(port), "BUS_HTTP__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bus.cli", "serve", "--config", str(config), "--json-logs"],
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"bus serve exited:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"bus serve not ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield Node(process, port, log)
    finally:
        process.terminate()
        process.wait(timeout=30)
        asyncio.run(delete_broker_objects(load_settings(config)))


def _request(path: str = "/healthz", *, headers: list[bytes] | None = None, line: bytes = b"") -> bytes:
    head = f"GET {path} HTTP/1.1\r\n".encode() + b"Host: bus\r\n" + b"".join(headers or [])
    return head + line + b"\r\n"


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def _padded(total: int) -> bytes:
    """A GET /healthz whose request line and headers are exactly *total* bytes."""
    bare = _request(headers=[b"X-Pad: \r\n"])
    pad = total - len(bare)
    return _request(headers=[b"X-Pad: " + b"a" * pad + b"\r\n"])


def test_a_head_over_the_byte_limit_is_431_and_closed(node: Node) -> None:
    assert len(_padded(MAX_HEADER_BYTES)) == MAX_HEADER_BYTES
    assert _status(node.exchange(_padded(MAX_HEADER_BYTES))) == 200  # the limit itself is allowed
    answer = node.exchange(_padded(MAX_HEADER_BYTES + 1))
    assert _status(answer) == 431
    assert b"connection: close" in answer.lower()
    assert answer.endswith(
        b'{"error":{"code":"header-too-large","message":"request line and headers over 16384 bytes"}}'
    )
    # The request line counts too: a long URL is no way around it.
    assert _status(node.exchange(_request("/healthz?" + "q" * MAX_HEADER_BYTES))) == 431


def test_more_header_fields_than_the_limit_is_431(node: Node) -> None:
    fields = [f"X-F{i}: 1\r\n".encode() for i in range(MAX_HEADERS - 1)]  # with Host: exactly the limit
    assert _status(node.exchange(_request(headers=fields))) == 200
    answer = node.exchange(_request(headers=[*fields, b"X-One-Too-Many: 1\r\n"]))
    assert _status(answer) == 431
    assert b"more than 100 header fields" in answer


def test_a_head_that_does_not_finish_is_408(node: Node) -> None:
    started = time.monotonic()
    answer = node.exchange(b"GET /healthz HTTP/1.1\r\nHost: bus\r\nX-Slow: a", read_s=HEADER_TIMEOUT_S + 5)
    assert _status(answer) == 408
    assert HEADER_TIMEOUT_S <= time.monotonic() - started < HEADER_TIMEOUT_S + 3
    # A connection that never sends anything is closed as well.
    with socket.create_connection(("127.0.0.1", node.port)) as idle:
        assert _status(_read_answer(idle, HEADER_TIMEOUT_S + 5)) == 408


def test_the_limit_is_per_request_and_never_counts_a_body(node: Node) -> None:
    # Two requests of 10 KiB heads on one kept-alive connection: 20 KiB in all, each within its limit.
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(_padded(10 * 1024))
            assert _status(_read_answer(sock, 5)) == 200
    # A 200 KiB body sent in the same write as a small head: the body is not the head (the answer is
    # the API's own 401, not a 431).
    body = b"<edXML/>" + b" " * 200_000
    post = (
        b"POST /v1/envelopes HTTP/1.1\r\nHost: bus\r\nContent-Type: application/xml\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert _status(node.exchange(post)) == 401


def _flood(port: int, header_bytes: int, answers: list[bytes]) -> None:
    """One request whose single header is *header_bytes* long, written as fast as the server reads it;
    stops writing at the first byte of an answer, as a client does when the server refuses."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    pending, left, answer = b"GET /healthz HTTP/1.1\r\nHost: bus\r\nX-Flood: ", header_bytes, b""
    chunk = b"a" * 65536
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            writing = bool(pending) or left > 0
            readable, writable, _ = select.select([sock], [sock] if writing else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer and not writing:
                    break  # the whole request went out and was answered (kept alive)
                pending, left = b"", 0  # answered: stop sending
            elif writable:
                if not pending:
                    size = min(left, len(chunk))
                    pending, left = chunk[:size] + (b"\r\n\r\n" if size == left else b""), left - size
                try:
                    pending = pending[sock.send(pending) :]
                except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                    break
    finally:
        sock.close()
    answers.append(answer)


def test_huge_headers_are_refused_early_and_the_node_stays_small_and_quick(node: Node) -> None:
    """The issue's attack: four unauthenticated requests with 40 MB headers, at once."""
    before = peak = node.rss_bytes()
    answers: list[bytes] = []
    floods = [threading.Thread(target=_flood, args=(node.port, 40_000_000, answers)) for _ in range(4)]
    for flood in floods:
        flood.start()
    latencies = []
    with httpx.Client(base_url=f"http://127.0.0.1:{node.port}", timeout=10) as http:
        while any(flood.is_alive() for flood in floods) or len(latencies) < 5:
            started = time.monotonic()
            assert http.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            peak = max(peak, node.rss_bytes())  # at its peak: the memory is freed once a flood ends
            time.sleep(0.05)
    for flood in floods:
        flood.join()
    grown = peak - before
    assert [_status(a) for a in answers] == [431] * 4
    # Before the limits: +150 MiB at the peak and /healthz at 2.4 s (4 x 40 MB, on this 2-core machine).
    assert grown < 20 * 1024 * 1024, f"the node grew by {grown / 2**20:.0f} MiB"
    assert max(latencies) < 1.0, f"/healthz took up to {max(latencies):.2f} s during the flood"
