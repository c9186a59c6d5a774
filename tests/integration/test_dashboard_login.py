"""Logging in to the dashboard, served by ``Node.http_app`` as ``bus serve`` serves it: what a failed
login says, the throttle of failed logins (issue 10, item 8), and redirects that never name the host of
a forged ``Host`` header (issue 10, item 7)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from adapters.dashboard import LoginThrottle
from tests.integration.dashboard_client import Env, csrf_of, dashboard_env, login
from tests.integration.dashboard_seed import OPERATOR, PASSWORD

pytestmark = pytest.mark.asyncio
ATTACKER = "198.51.100.66"
OFFICE = "203.0.113.10"
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


# -- failed logins ---------------------------------------------------------------------------------------


async def test_an_attacker_cannot_lock_an_operator_out_by_their_name(env: Env) -> None:
    """Before the fix, four wrong passwords on a name made the right one answer 429 from anywhere."""
    async with env.client_at(ATTACKER) as attacker, env.client_at(OFFICE) as office:
        for _ in range(4):
            assert (await login(env, "sai", client=attacker)).status_code == 401
        # The attacker's address waits now, whatever it sends: its passwords are not even checked.
        for password in ("sai", PASSWORD):
            refused = await login(env, password, client=attacker)
            assert refused.status_code == 429
            assert "Đăng nhập sai quá nhiều lần" in refused.text
            assert refused.headers["retry-after"] in ("1", "2")
        # The operator, at another address, logs in: one second slower (four failures on the name).
        started = time.monotonic()
        answer = await login(env, client=office)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/dashboard/"
        assert time.monotonic() - started >= 1.0
        assert (await office.get("/dashboard/")).status_code == 200


class FrozenTime:
    """The throttle's clock and sleep: time stands still (every try comes at once, as in a burst) and
    each wait of a slowed try is written down instead of waited."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self) -> float:
        return 1000.0

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


async def test_no_failures_from_elsewhere_make_the_right_password_fail(tmp_path: Path) -> None:
    """30 addresses guess the operator's password until each is refused; the operator, between them,
    logs in every time, slowed by 5 s at most."""
    frozen = FrozenTime()
    throttle = LoginThrottle(clock=frozen, sleep=frozen.sleep)
    async with (
        dashboard_env(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}", throttle=throttle) as env,
        env.client_at(OFFICE) as office,
    ):
        for n in range(30):
            async with env.client_at(f"198.51.100.{n}") as attacker:
                answers = [(await login(env, f"đoán-{n}-{i}", client=attacker)).status_code for i in range(6)]
            assert answers == [401, 401, 401, 401, 429, 429]
            if n == 1:  # the name was failed 4 times, then each try on it waits twice as long, up to 5 s
                assert frozen.slept == [1.0, 2.0, 4.0, 5.0]
            if n % 10 == 9:
                frozen.slept.clear()
                office.cookies.clear()
                answer = await login(env, client=office)
                assert (answer.status_code, answer.headers["location"]) == (303, "/dashboard/")
                assert frozen.slept == [5.0]
        # Counted: the 30 attackers' addresses and the one name; the office's tries were taken back.
        assert throttle.counters() == (30, 1)


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
