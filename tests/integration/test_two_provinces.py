"""Two provinces talk through the mock national axis (issue 4, item 5).

Everything is real: two ``bus serve`` processes with different example provinces, each on its own
RabbitMQ virtual host and its own database (one PostgreSQL, one SQLite), and ``bus mock-axis`` as a
process with its own store. Documents flow both ways and statuses come back; then the axis is killed
for 30 seconds while both provinces keep sending, and once it is back the backlog drains by itself,
every envelope exactly once in its recipient's inbox.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio

from adapters.http.client import AgencyClient
from bus.pki import init_pki
from bus.settings import load_settings, load_topology
from tests.conftest import ROOT
from tests.factory import make_document, make_status
from tests.integration.conftest import fresh_database
from tests.integration.processes import ServeProcess, free_port

pytestmark = pytest.mark.asyncio

H99 = ROOT / "config" / "example-province.toml"
H98 = ROOT / "config" / "example-province-2.toml"
OUTAGE_S = 30.0
T = TypeVar("T")


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass
class MockAxis:
    """``bus mock-axis`` as a process: killed and restarted on the same port and store."""

    config: Path
    database: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        command = [sys.executable, "-m", "entrypoints.cli", "mock-axis", "--config", str(self.config)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port), "--database", self.database], stdout=out, stderr=out
            )

    async def start(self) -> None:
        self.spawn()
        assert self.process is not None
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"mock axis exited:\n{self.log.read_text()}")
                try:
                    await http.get(f"{self.url}/_mock/faults")
                    return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"mock axis not ready:\n{self.log.read_text()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    async def faults(self, **values: Any) -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            (await http.post(f"{self.url}/_mock/faults", json=values)).raise_for_status()


@dataclass
class Province:
    settings_file: Path
    server: ServeProcess
    secrets: dict[str, bytes]

    def client(self, agency: str) -> AgencyClient:
        return AgencyClient(self.server.url, agency, self.secrets[agency])


def _province_config(
    source: Path,
    out: Path,
    *,
    pki: Path,
    pki_placeholder: str,
    other_ca: Path,
    amqp_url: str,
    database_url: str,
    port: int,
    axis_port: int,
    axis_secret: str,
    peer: str,
) -> Path:
    text = source.read_text(encoding="utf-8").split("\n[national_axis]\n", 1)[0]
    text = text.replace(pki_placeholder, f"{pki}/")
    text = text.replace('url = "amqp://guest:guest@127.0.0.1:5672/"', f'url = "{amqp_url}"')
    text = text.replace("sqlite+aiosqlite:///demo-out/bus.db", database_url)
    text = text.replace("sqlite+aiosqlite:///demo-out/bus-h98.db", database_url)
    text = text.replace("port = 8080", f"port = {port}").replace("port = 8081", f"port = {port}")
    text = text.replace(f"port = {port}", f"port = {port}\ndrain_s = 0")
    text += (
        "\n[national_axis]\n"
        f'endpoint = "http://127.0.0.1:{axis_port}"\n'
        f'secret = "{axis_secret}"\n'
        "timeout_s = 5\n"
        "poll_interval_s = 0.5\n"
        "retry_delays_ms = [1000, 2000, 4000, 8000, 16000]\n"
        "breaker_failures = 3\n"
        "breaker_open_s = 1.0\n"
        f'trust = ["{other_ca}"]\n'
        f'trusted_axes = ["{peer}"]\n'
    )
    out.write_text(text, encoding="utf-8")
    return out


MOCK_CONFIG = """
[[systems]]
system_id = "000.00.90.H99"
name = "Trục liên thông tỉnh Mẫu"
secret = "test-axis-secret-H99-0123456789"
serves = ["000.00.00.H99"]

[[systems]]
system_id = "000.00.90.H98"
name = "Trục liên thông tỉnh Thử"
secret = "test-axis-secret-H98-0123456789"
serves = ["000.00.00.H98"]
"""


@pytest_asyncio.fixture
async def provinces(tmp_path: Path, pki_dir: Path) -> AsyncIterator[tuple[Province, Province, MockAxis]]:
    pki_h98 = tmp_path / "pki-h98"
    init_pki(load_topology(H98), pki_h98, progress=lambda _line: None)
    vhosts = [f"bus-test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for vhost in vhosts:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    mock_config = tmp_path / "mock-axis.toml"
    mock_config.write_text(MOCK_CONFIG, encoding="utf-8")
    axis = MockAxis(
        mock_config, f"sqlite+aiosqlite:///{tmp_path / 'axis.db'}", free_port(), tmp_path / "axis.log"
    )
    servers: list[ServeProcess] = []
    try:
        async with AsyncExitStack() as stack:
            pg = await stack.enter_async_context(fresh_database("postgresql", tmp_path))
            await axis.start()
            made = []
            for source, pki, placeholder, other, vhost, db, secret in (
                (H99, pki_dir, "../demo-out/pki/", pki_h98, vhosts[0], pg, "test-axis-secret-H99-0123456789"),
                (
                    H98,
                    pki_h98,
                    "../demo-out/pki-h98/",
                    pki_dir,
                    vhosts[1],
                    f"sqlite+aiosqlite:///{tmp_path / 'h98.db'}",
                    "test-axis-secret-H98-0123456789",
                ),
            ):
                port = free_port()
                config = _province_config(
                    source,
                    tmp_path / f"{source.stem}.toml",
                    pki=pki,
                    pki_placeholder=placeholder,
                    other_ca=other / "ca.pem",
                    amqp_url=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
                    database_url=db,
                    port=port,
                    axis_port=axis.port,
                    axis_secret=secret,
                    peer="000.00.90.H98" if source == H99 else "000.00.90.H99",
                )
                server = ServeProcess(config, port, tmp_path / f"{source.stem}.log")
                server.start()
                servers.append(server)
                settings = load_settings(config)
                secrets = {
                    str(a.organ_id): secret
                    for a in settings.agencies
                    if (secret := settings.secret_of(a)) is not None
                }
                made.append(Province(config, server, secrets))
            for server in servers:
                await server.wait_ready()
            yield made[0], made[1], axis
    finally:
        for server in servers:
            server.stop()
        axis.stop()
        for vhost in vhosts:
            _rabbitmqctl("delete_vhost", vhost)


async def _eventually(probe: Callable[[], Awaitable[T | None]], *, within_s: float, what: str) -> T:
    deadline = time.monotonic() + within_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.3)


async def _inbox_with(client: AgencyClient, count: int, *, within_s: float) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        items = await client.inbox(pending=False, limit=500)
        return items if len(items) >= count else None

    return await _eventually(probe, within_s=within_s, what=f"{count} envelopes for {client.agency}")


async def _recipient(client: AgencyClient, bus_id: str, organ: str) -> dict[str, Any]:
    document = await client.document(bus_id)
    return next(r for r in document["recipients"] if r["organ_id"] == organ)


async def test_documents_and_statuses_flow_both_ways(provinces: tuple[Province, Province, MockAxis]) -> None:
    h99, h98, _ = provinces
    async with (
        h99.client("000.00.01.H99") as noi_vu_99,
        h98.client("000.00.01.H98") as noi_vu_98,
        h98.client("000.00.00.H98") as ubnd_98,
        h99.client("000.00.02.H99") as tai_chinh_99,
    ):
        # H99 → H98 (and one local recipient in the same envelope).
        outgoing = make_document("000.00.01.H99", ["000.00.01.H98", "000.00.21.H99"], 7101)
        sent = await noi_vu_99.send(outgoing)
        [item] = await _inbox_with(noi_vu_98, 1, within_s=30)
        assert item["sender"] == "000.00.01.H99"
        body = await noi_vu_98.fetch(item["id"])
        assert "V/v báo cáo tình hình chuyển đổi số".encode() in body  # diacritics intact
        assert b"000.00.90.H99" in body  # both axes' trace headers
        assert b"000.00.90.H98" in body
        await noi_vu_98.acknowledge(item["id"], "done")

        async def relayed() -> dict[str, Any] | None:
            row = await _recipient(noi_vu_99, sent["bus_id"], "000.00.01.H98")
            return row if row["state"] == "sent-to-axis" else None

        there = await _eventually(relayed, within_s=10, what="sent-to-axis on the H99 timeline")
        assert there["route"] == "outbound"

        # The H98 recipient answers 03; it lands on the document's timeline in H99.
        await noi_vu_98.send(make_status("000.00.01.H98", "000.00.01.H99", item["document_id"], "03"))

        async def answered() -> dict[str, Any] | None:
            row = await _recipient(noi_vu_99, sent["bus_id"], "000.00.01.H98")
            return row if row["business_status"] == "03" else None

        await _eventually(answered, within_s=30, what="status 03 back in H99")
        status_items = await _inbox_with(noi_vu_99, 1, within_s=10)
        assert [i["kind"] for i in status_items] == ["status"]

        # H98 → H99, and a status 06 back from H99 to H98.
        incoming = make_document("000.00.00.H98", ["000.00.02.H99"], 8101, notation="UBND-TH")
        sent_back = await ubnd_98.send(incoming)
        [received] = await _inbox_with(tai_chinh_99, 1, within_s=30)
        assert received["sender"] == "000.00.00.H98"
        await tai_chinh_99.send(
            make_status(
                "000.00.02.H99", "000.00.00.H98", received["document_id"], "06", description="Hoàn thành"
            )
        )

        async def finished() -> dict[str, Any] | None:
            row = await _recipient(ubnd_98, sent_back["bus_id"], "000.00.02.H99")
            return row if row["business_status"] == "06" else None

        await _eventually(finished, within_s=30, what="status 06 back in H98")


async def test_a_30_second_outage_loses_nothing(provinces: tuple[Province, Province, MockAxis]) -> None:
    h99, h98, axis = provinces
    count_99, count_98 = 20, 10
    async with (
        h99.client("000.00.01.H99") as sender_99,
        h98.client("000.00.01.H98") as receiver_98,
        h98.client("000.00.00.H98") as sender_98,
        h99.client("000.00.02.H99") as receiver_99,
    ):
        axis.kill()
        outage_began = time.monotonic()
        sent_99 = [
            (await sender_99.send(make_document("000.00.01.H99", ["000.00.01.H98"], 9000 + n)))["bus_id"]
            for n in range(count_99)
        ]
        for n in range(count_98):
            await sender_98.send(
                make_document("000.00.00.H98", ["000.00.02.H99"], 9500 + n, notation="UBND-TH")
            )
        # While the axis is down nothing can arrive, and the senders' timelines say why.
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_began)))
        assert await receiver_98.inbox(pending=False) == []
        assert await receiver_99.inbox(pending=False) == []
        first = await sender_99.document(sent_99[0])
        assert any(e["state"] == "retrying" for e in first["timeline"]), first["timeline"]

        await axis.start()  # same port, same store
        # The axis now lists each envelope twice, in reverse order, and hands back one acknowledged:
        # duplicate suppression must absorb all of it.
        await axis.faults(duplicate_delivery=True, reorder=True)
        items_98 = await _inbox_with(receiver_98, count_99, within_s=90)
        items_99 = await _inbox_with(receiver_99, count_98, within_s=90)
        await asyncio.sleep(3)  # long enough for any duplicate to show up
        items_98 = await receiver_98.inbox(pending=False, limit=500)
        items_99 = await receiver_99.inbox(pending=False, limit=500)
        assert len(items_98) == count_99
        assert len({i["document_id"] for i in items_98}) == count_99
        assert len(items_99) == count_98
        assert len({i["document_id"] for i in items_99}) == count_98
        for bus_id in sent_99:
            row = await _recipient(sender_99, bus_id, "000.00.01.H98")
            assert row["state"] == "sent-to-axis", row
