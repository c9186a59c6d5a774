"""The CLI against a real ``bus serve`` (real RabbitMQ, SQLite): send, inbox, status and exit codes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from bus.settings import Settings, load_settings
from tests.factory import make_document, make_status
from tests.integration.conftest import delete_broker_objects, write_config
from tests.integration.processes import ServeProcess, free_port

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def served(tmp_path: Path, pki_dir: Path) -> AsyncIterator[tuple[Path, ServeProcess]]:
    port = free_port()
    config = write_config(
        tmp_path / "province.toml",
        pki_dir,
        prefix=f"test-{uuid.uuid4().hex[:10]}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}",
    )
    config.write_text(
        config.read_text(encoding="utf-8").replace("port = 8080", f"port = {port}"), encoding="utf-8"
    )
    server = ServeProcess(config, port, tmp_path / "serve.log")
    server.start()
    await server.wait_ready()
    yield config, server
    assert server.stop() == 0  # SIGTERM stops it cleanly
    settings: Settings = load_settings(config)
    await delete_broker_objects(settings)


def bus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_send_inbox_status_round_trip(served: tuple[Path, ServeProcess], tmp_path: Path) -> None:
    config, _ = served
    envelope = tmp_path / "cong-van.edxml"
    envelope.write_bytes(make_document("000.00.01.H99", ["000.00.21.H99", "000.04.21.H99"], 42))
    sent = bus("send", "--config", str(config), "--as", "000.00.01.H99", str(envelope))
    assert sent.returncode == 0, sent.stderr
    bus_id = sent.stdout.strip()
    assert len(bus_id) == 36

    again = bus("send", "--config", str(config), "--as", "000.00.01.H99", str(envelope))
    assert again.returncode == 1
    assert f"already accepted as {bus_id}" in again.stderr

    forged = bus("send", "--config", str(config), "--as", "000.00.02.H99", str(envelope))
    assert forged.returncode == 1
    assert "forged-sender" in forged.stderr

    # Xuân Lãnh was addressed by its former code 000.04.21.H99.
    inbox_dir = tmp_path / "inbox"
    for _ in range(50):
        listed = bus("inbox", "--config", str(config), "--as", "000.03.21.H99")
        if bus_id in listed.stdout or "000.00.01.H99,2026/11/20,42/UBND-VP" in listed.stdout:
            break
    pulled = bus(
        "inbox", "--config", str(config), "--as", "000.03.21.H99", "--fetch", str(inbox_dir), "--ack", "done"
    )
    assert pulled.returncode == 0, pulled.stderr
    [saved] = inbox_dir.iterdir()
    assert bus_id in saved.name
    assert "Cơ quan 000.00.01.H99".encode() in saved.read_bytes()  # Vietnamese intact, byte for byte
    assert "acknowledged" in pulled.stderr

    status_file = tmp_path / "status.edxml"
    document_id = "000.00.01.H99,2026/11/20,42/UBND-VP"
    status_file.write_bytes(make_status("000.00.21.H99", "000.00.01.H99", document_id, "03"))
    assert bus("send", "--config", str(config), "--as", "000.00.21.H99", str(status_file)).returncode == 0

    shown = bus("status", "--config", str(config), document_id, "--json")
    assert shown.returncode == 0, shown.stderr
    [document] = json.loads(shown.stdout)
    by_recipient = {r["organ_id"]: r for r in document["recipients"]}
    assert by_recipient["000.04.21.H99"]["state"] == "done"
    assert by_recipient["000.00.21.H99"]["business_status"] == "03"
    table = bus("status", "--config", str(config), bus_id)
    assert "Ủy ban nhân dân xã Xuân Lãnh (mã cũ)" in table.stdout
    assert "03 " in table.stdout

    missing = bus("status", "--config", str(config), "không-có-văn-bản-này")
    assert missing.returncode == 1


async def test_configuration_and_connection_problems_exit_2(
    served: tuple[Path, ServeProcess], tmp_path: Path
) -> None:
    config, _ = served
    envelope = tmp_path / "e.edxml"
    envelope.write_bytes(make_document("000.00.01.H99", ["000.00.21.H99"], 43))
    unknown = bus("send", "--config", str(config), "--as", "000.09.99.H99", str(envelope))
    assert unknown.returncode == 2
    assert "not an agency" in unknown.stderr
    nobody = bus(
        "send",
        "--config",
        str(config),
        "--as",
        "000.00.01.H99",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        "--retries",
        "0",
        str(envelope),
    )
    assert nobody.returncode == 2
    assert "cannot reach the bus" in nobody.stderr
    invalid = tmp_path / "invalid.edxml"
    invalid.write_bytes(make_document("000.00.01.H99", ["000.00.21.H99", "000.00.21.H99"], 44))
    refused = bus("send", "--config", str(config), "--as", "000.00.01.H99", str(invalid))
    assert refused.returncode == 1
    assert "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To" in refused.stderr


def _spawn_watch(config: Path, bus_id: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "entrypoints.cli", "status", "--config", str(config), bus_id]
    return subprocess.Popen(
        [*command, "--watch", "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def test_status_watch_refreshes_until_every_recipient_is_final(
    served: tuple[Path, ServeProcess], tmp_path: Path
) -> None:
    config, _ = served
    envelope = tmp_path / "watched.edxml"
    envelope.write_bytes(make_document("000.00.01.H99", ["000.00.22.H99"], 45))
    sent = bus("send", "--config", str(config), "--as", "000.00.01.H99", str(envelope))
    assert sent.returncode == 0, sent.stderr
    watcher = _spawn_watch(config, sent.stdout.strip())
    shown: list[str] = []

    async def first_table() -> None:
        assert watcher.stdout is not None
        while True:
            line = await asyncio.to_thread(watcher.stdout.readline)
            shown.append(line)
            if not line or "nơi nhận đã xong" in line:
                return

    try:
        # Acknowledge only once the first table is out (a slow start must not see the final state).
        await asyncio.wait_for(first_table(), timeout=60)
        assert watcher.poll() is None  # still waiting: the recipient has not acknowledged
        for _ in range(50):
            pulled = bus("inbox", "--config", str(config), "--as", "000.00.22.H99", "--ack", "done")
            if "acknowledged" in pulled.stderr:
                break
            await asyncio.sleep(0.2)
        rest, err = watcher.communicate(timeout=30)
        out = "".join(shown) + rest
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, err
    assert "0/1 nơi nhận đã xong" in out  # the first table
    assert out.rstrip().endswith("1/1 nơi nhận đã xong")  # and the last, when it stopped
    assert "Đơn vị nhận đã nhận xong" in out


async def test_bus_serve_mounts_the_operators_dashboard(served: tuple[Path, ServeProcess]) -> None:
    _, server = served
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        page = await http.get("/dashboard/")
        assert page.status_code in (302, 303, 307)  # not logged in: to the login page
        login = await http.get(page.headers["location"])
        assert login.status_code == 200
        assert "Đăng nhập" in login.text
        api = await http.get("/v1/agencies")
        assert api.status_code == 401  # the agency API is unchanged beside it
