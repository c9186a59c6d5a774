"""Logging in to the dashboard, served by ``Node.http_app`` as ``bus serve`` serves it: what a failed
login says, the throttle of failed logins, and redirects that never name the host of a forged ``Host``
header (issue 10, item 7)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tests.integration.dashboard_client import Env, csrf_of, dashboard_env, login
from tests.integration.dashboard_seed import OPERATOR, PASSWORD

pytestmark = pytest.mark.asyncio
EVIL = "evil.example"


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


# -- redirects -------------------------------------------------------------------------------------------


async def test_no_redirect_names_the_host_of_a_forged_host_header(env: Env) -> None:
    """Before the fix, ``GET /dashboard`` with ``Host: evil.example`` answered ``307 Location:
    http://evil.example/dashboard/``. Every redirect the node answers, slash redirects, the login, the
    logout and the replay's Post/Redirect/Get, is now a path of this site."""
    forged = {"Host": EVIL}
    http = env.client
    locations: list[str] = []

    async def redirected(method: str, path: str, status: int, **kwargs: object) -> str:
        response = await http.request(method, path, headers=forged, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (method, path, response.status_code)
        location = response.headers["location"]
        locations.append(location)
        return location

    assert await redirected("GET", "/dashboard", 307) == "/dashboard/"
    assert await redirected("GET", "/dashboard?x=1", 307) == "/dashboard/?x=1"
    assert await redirected("GET", "/dashboard/login/", 307) == "/dashboard/login"
    assert await redirected("GET", "/dashboard/inboxes/", 307) == "/dashboard/inboxes"
    assert await redirected("GET", "/v1/agencies/", 307) == "/v1/agencies"
    assert await redirected("GET", "/healthz/", 307) == "/healthz"
    assert (await redirected("GET", "/dashboard/", 303)).startswith("/dashboard/login?next=")
    form = await http.get("/dashboard/login", headers=forged)
    data = {"username": OPERATOR, "password": PASSWORD, "csrf_token": csrf_of(form), "next": ""}
    assert await redirected("POST", "/dashboard/login", 303, data=data) == "/dashboard/"
    assert await redirected("GET", "/dashboard/login", 303) == "/dashboard/"
    page = await http.get("/dashboard/", headers=forged)
    assert EVIL not in page.text  # the page's links are paths too
    letter = str(env.sample.dead_letter_id)
    confirm = await http.get("/dashboard/dead-letters/replay", params={"id": letter}, headers=forged)
    replay = "/dashboard/dead-letters/replay"
    assert await redirected("POST", f"{replay}/", 307) == replay
    result = await redirected("POST", replay, 303, data=_hidden_fields(confirm))
    assert result.startswith("/dashboard/dead-letters/replay/result?r=")
    assert env.replay.calls == [[int(letter)]]
    logout = await redirected("POST", "/dashboard/logout", 303, data={"csrf_token": csrf_of(page)})
    assert logout == "/dashboard/login?logged_out=1"
    for location in locations:
        assert EVIL not in location
        assert location.startswith("/")
        assert not location.startswith(("//", "/\\"))


def _hidden_fields(page: httpx.Response) -> dict[str, list[str]]:
    """The hidden fields of a form, as the browser posts them."""
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text):
        fields.setdefault(name, []).append(html.unescape(value))
    return fields
