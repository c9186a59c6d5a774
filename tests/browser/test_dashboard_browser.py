"""The dashboard in a real browser: Debian's Chromium (scripts/browser.sh installs it) driven by
Playwright, against ``Node.http_app`` (the agency API with the dashboard mounted) served by uvicorn on a
real port, a SQLite store written through the store's methods, and a real replay into RabbitMQ (a fresh
prefix). JavaScript is off: every step, the replay's confirmation included, must work without it. A
missing Chromium fails the test; it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Page, async_playwright, expect

from adapters.dashboard import create_dashboard
from adapters.rabbitmq import BrokerNames, Publisher, declare_topology, open_channel
from adapters.store import StatusStore
from bus.organ_id import OrganId
from bus.replay import ReplayResult, replay
from bus.settings import AmqpSettings, Settings, load_settings
from tests.conftest import ROOT
from tests.integration.conftest import AMQP_URL, delete_broker_objects
from tests.integration.dashboard_client import node_app
from tests.integration.dashboard_seed import (
    COMMUNE,
    DEAD_REASON,
    OPERATOR,
    PASSWORD,
    Sample,
    dashboard_settings,
    record_sample,
)
from tests.integration.processes import free_port

pytestmark = pytest.mark.asyncio
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest keeps its own signal handlers
        yield


@dataclass
class Served:
    url: str
    sample: Sample
    inbox_queue: str
    channel: aio_pika.abc.AbstractChannel


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    base = load_settings(ROOT / "config" / "example-province.toml")
    settings: Settings = dashboard_settings(
        base.model_copy(update={"amqp": AmqpSettings(url=AMQP_URL, prefix=f"test-{uuid.uuid4().hex[:10]}")})
    )
    names = BrokerNames(settings.amqp.prefix)
    connection = await aio_pika.connect(AMQP_URL, client_properties={"connection_name": "dashboard-browser"})
    channel = await connection.channel()
    await declare_topology(
        channel, settings.topology, names, retry_delays=settings.national_axis.retry_delays_ms
    )
    store = StatusStore.connect(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    await store.create_schema()
    inbox_queue = names.inbox(OrganId.parse(COMMUNE))
    sample = await record_sample(store, dt.datetime.now(dt.UTC), source_queue=inbox_queue)
    publisher = Publisher(await open_channel(connection), names)

    async def replay_now(ids: list[int]) -> list[ReplayResult]:
        return await replay(store, publisher, ids, dt.datetime.now(dt.UTC))

    async def link_status() -> dict[str, object]:
        return {"configured": False}

    app = create_dashboard(settings, store, link_status=link_status, replay=replay_now)
    port = free_port()
    server = _Server(
        uvicorn.Config(
            node_app(store, app),  # the agency API with the dashboard mounted, as bus serve serves it
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("uvicorn did not start within 10 s")
        # No trailing slash: the browser follows the node's (relative) slash redirect first.
        yield Served(f"http://127.0.0.1:{port}/dashboard", sample, inbox_queue, channel)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        await store.close()
        await connection.close()
        await delete_broker_objects(settings)


async def take_one(channel: aio_pika.abc.AbstractChannel, queue: str) -> aio_pika.abc.AbstractIncomingMessage:
    """The replay returned after the broker's confirm: the message is in the queue already."""
    message = await (await channel.get_queue(queue, ensure=False)).get(fail=False, timeout=5)
    assert message is not None, f"nothing in {queue}"
    await message.ack()
    return message


def chromium() -> Path:
    """The browser, or a failure (never a skip: a test that does not run proves nothing)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser.sh (installs Debian's chromium)")
    return CHROMIUM


async def log_in(page: Page, start: str) -> None:
    await page.goto(start)
    await expect(page.get_by_role("heading", name="Đăng nhập cán bộ vận hành")).to_be_visible()
    await page.get_by_label("Tên đăng nhập").fill(OPERATOR)
    await page.get_by_label("Mật khẩu").fill(PASSWORD)
    await page.get_by_role("button", name="Đăng nhập").click()
    await expect(page.get_by_role("heading", name="Văn bản", exact=True)).to_be_visible()


async def test_an_operator_finds_a_document_and_replays_a_dead_letter(served: Served) -> None:
    executable = chromium()
    sample = served.sample
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), headless=True)
        try:
            context = await browser.new_context(java_script_enabled=False, locale="vi-VN")
            page = await context.new_page()
            page.set_default_timeout(15_000)
            await log_in(page, served.url)

            # Find the document by its DocumentId and open its timeline.
            await page.get_by_label("Mã văn bản (DocumentId) hoặc mã gói tin").fill(sample.sent.document_id)
            await page.get_by_role("button", name="Tìm kiếm").click()
            results = page.locator("#documents tbody tr")
            await expect(results).to_have_count(1)
            await results.get_by_role("link", name=sample.sent.document_id).click()
            await expect(page.get_by_role("heading", name="Diễn biến")).to_be_visible()
            timeline = page.locator("#timeline")
            await expect(timeline).to_contain_text("Đơn vị nhận đã nhận xong")
            await expect(timeline).to_contain_text("lần 1: trục quốc gia trả lời HTTP 503")
            await expect(page.locator("#recipients")).to_contain_text("Ủy ban nhân dân xã Xuân Phước")

            # Replay the dead letter: tick it, confirm on the next page, read the outcome.
            await page.get_by_role("link", name="Thư lỗi").click()
            await expect(page.locator("#dead-letters")).to_contain_text(DEAD_REASON)
            await page.get_by_label(f"Chọn thư lỗi {sample.dead_letter_id}").check()
            await page.get_by_role("button", name="Gửi lại các thư đã chọn…").click()
            await expect(page.get_by_role("heading", name="Xác nhận gửi lại thư lỗi")).to_be_visible()
            await page.get_by_role("button", name="Xác nhận gửi lại 1 thư").click()
            await expect(page.locator("#replay-results")).to_contain_text(
                f"Đã gửi lại vào hàng đợi {served.inbox_queue}"
            )

            message = await take_one(served.channel, served.inbox_queue)
            assert message.body == "<edXML>Ủy ban nhân dân</edXML>".encode()
            assert message.message_id == f"{sample.dead.bus_id}|{COMMUNE}"

            await page.locator("#replay-results").get_by_role("link").click()
            await expect(page.locator("#timeline")).to_contain_text("Cán bộ vận hành cho gửi lại")
            shot = await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert shot.startswith(b"\x89PNG")
