"""Logging in to the dashboard, served by ``Node.http_app`` as ``bus serve`` serves it: what a failed
login says, where a login leads, and the throttle of failed logins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.dashboard_client import Env, csrf_of, dashboard_env, login
from tests.integration.dashboard_seed import OPERATOR

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with dashboard_env(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}") as made:
        yield made


async def test_a_failed_login_does_not_say_what_was_wrong(env: Env) -> None:
    wrong_password = await login(env, password="mật khẩu sai")  # noqa: S106 - a wrong one on purpose
    unknown_user = await login(env, username="khong.co.ai")
    for response in (wrong_password, unknown_user):
        assert response.status_code == 401
        assert "Tên đăng nhập hoặc mật khẩu không đúng." in response.text
    assert wrong_password.text.replace(OPERATOR, "khong.co.ai") == unknown_user.text.replace(
        csrf_of(unknown_user), csrf_of(wrong_password)
    )
    assert (await env.client.get("/dashboard/")).status_code == 303


async def test_no_redirect_to_another_site_after_login(env: Env) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/other-app/"):
        env.client.cookies.clear()
        response = await login(env, next=target)
        assert response.headers["location"] == "/dashboard/"


async def test_repeated_failed_logins_are_slowed_down(env: Env) -> None:
    for _ in range(4):
        assert (await login(env, password="sai")).status_code == 401  # noqa: S106 - wrong on purpose
    throttled = await login(env)  # even the right password waits now
    assert throttled.status_code == 429
    assert "Đăng nhập sai quá nhiều lần" in throttled.text
