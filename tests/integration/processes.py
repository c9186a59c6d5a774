"""Real ``bus serve`` processes for the no-loss tests: start, wait until ready, SIGKILL, read logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from adapters.http.client import AgencyClient, ApiFailure

__all__ = ["ServeProcess", "free_port", "stream_envelopes"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProcess:
    """``bus serve --config CONFIG`` on *port* (BUS_HTTP__PORT), logging JSON to *log*."""

    config: Path
    port: int
    log: Path
    # Put before ``-m entrypoints.cli``: bench/cpu_sampler.py's ``-m bench.cpu_sampler OUT --``.
    python_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "BUS_HTTP__PORT": str(self.port)}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *self.python_args,
                    "-m",
                    "entrypoints.cli",
                    "serve",
                    "--config",
                    str(self.config),
                    "--json-logs",
                ],
                stdout=out,
                stderr=out,
                env=env,
            )

    async def wait_ready(self, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"bus serve exited with {self.process.returncode}:\n{self.log.read_text()}"
                    )
                try:
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"bus serve not ready after {within_s} s:\n{self.log.read_text()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flushing, unacknowledged messages left with the broker."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def events(self, name: str) -> list[dict[str, object]]:
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        found = []
        for line in lines:
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == name:
                    found.append(record)
        return found


@dataclass
class StreamResult:
    accepted: dict[str, list[str]] = field(default_factory=dict)  # bus id -> expected recipients
    transport_errors: int = 0
    unavailable: int = 0


async def stream_envelopes(
    clients: list[AgencyClient],
    envelopes: list[tuple[int, bytes, list[str]]],
    *,
    concurrency: int,
    on_progress: object = None,
) -> StreamResult:
    """Send every ``(sender index, body, recipients)`` until the bus accepts it, retrying through
    refused connections and 503s as an agency system would. A 409 after a failed attempt means that
    attempt was accepted; a 409 on the first attempt would be a test bug and fails."""
    result = StreamResult()
    queue: asyncio.Queue[tuple[int, bytes, list[str]]] = asyncio.Queue()
    for item in envelopes:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                sender, body, recipients = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            attempt = 0
            while True:
                try:
                    answer = await clients[sender].send(body)
                    break
                except httpx.TransportError:
                    result.transport_errors += 1
                except ApiFailure as exc:
                    if exc.status == 409 and attempt > 0:
                        answer = {"bus_id": exc.payload["bus_id"]}
                        break
                    if exc.status not in (500, 502, 503, 504):
                        raise
                    result.unavailable += 1
                attempt += 1
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
            result.accepted[str(answer["bus_id"])] = recipients
            if callable(on_progress):
                on_progress(len(result.accepted))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result
