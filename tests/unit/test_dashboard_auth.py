"""Operators of the dashboard: password hashes, the settings that carry them, the command that makes
them, the signed session cookie, and the throttle of failed logins."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from pathlib import Path

import pytest

from adapters.dashboard.sessions import Operators, SessionCodec, SessionState
from adapters.dashboard.throttle import LoginThrottle, ThrottlePolicy, client_key
from bus.errors import ConfigError
from bus.passwords import hash_password, parse_password_hash, verify_password
from bus.settings import DashboardSettings, Operator, load_settings
from entrypoints.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example-province.toml"
PASSWORD = "Mật khẩu của cán bộ trực"  # noqa: S105 - made up for the tests
SECRET = "test-only-session-secret-0123456789"  # noqa: S105
T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


def test_a_hash_checks_its_password_and_only_it() -> None:
    first, second = hash_password(PASSWORD, n=2**10), hash_password(PASSWORD, n=2**10)
    assert first != second  # a salt of its own
    assert first.startswith("scrypt$1024$8$1$")
    assert verify_password(PASSWORD, parse_password_hash(first))
    assert not verify_password(PASSWORD.upper(), parse_password_hash(first))
    assert not verify_password("", parse_password_hash(second))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("pbkdf2$1$2$3$c2FsdA==$aGFzaA==", "not a password hash"),
        ("scrypt$1000$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==", "power of two"),
        (f"scrypt${2**24}$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==", "power of two"),  # gigabytes a login
        ("scrypt$1024$8$1$!!$aGFzaA==", "malformed"),
        ("scrypt$1024$8$1$c2FsdA==$aGFzaA==", "too short"),
    ],
)
def test_a_bad_hash_is_refused_with_its_reason(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_password_hash(value)


def _config(tmp_path: Path, dashboard: str) -> Path:
    """The example province without its own [dashboard] and [national_axis] sections (the last two in
    the file), plus *dashboard*."""
    path = tmp_path / "province.toml"
    base = EXAMPLE.read_text(encoding="utf-8").split("\n[dashboard]\n", 1)[0]
    path.write_text(base + dashboard, encoding="utf-8")
    return path


def test_operators_come_from_the_file_and_the_secret_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = hash_password(PASSWORD, n=2**10)
    path = _config(
        tmp_path,
        f'\n[dashboard]\nsession_ttl_s = 600\n[[dashboard.operators]]\nusername = "tran.thi.binh"\n'
        f'password_hash = "{hashed}"\n',
    )
    with pytest.raises(ConfigError, match=r"dashboard.session_secret must have at least 32 bytes"):
        load_settings(path)
    monkeypatch.setenv("BUS_DASHBOARD__SESSION_SECRET", SECRET)
    settings = load_settings(path)
    assert settings.dashboard.enabled
    assert [o.username for o in settings.dashboard.operators] == ["tran.thi.binh"]
    assert settings.dashboard.session_ttl_s == 600
    assert not load_settings(_config(tmp_path, "")).dashboard.enabled  # no operators: no dashboard


def test_a_mistyped_hash_or_a_repeated_operator_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUS_DASHBOARD__SESSION_SECRET", SECRET)
    bad = _config(tmp_path, '\n[[dashboard.operators]]\nusername = "an"\npassword_hash = "matkhau123"\n')
    with pytest.raises(ConfigError, match=r"dashboard.operators.0.password_hash: .*scrypt\$n\$r\$p"):
        load_settings(bad)
    hashed = hash_password(PASSWORD, n=2**10)
    twice = f'\n[[dashboard.operators]]\nusername = "an"\npassword_hash = "{hashed}"\n' * 2
    with pytest.raises(ConfigError, match="more than once"):
        load_settings(_config(tmp_path, twice))


def test_operator_password_prints_a_hash_of_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["operator-password", "--username", "tran.thi.binh"]) == 0
    out, err = capsys.readouterr()
    assert verify_password(PASSWORD, parse_password_hash(out.strip()))
    assert 'username = "tran.thi.binh"' in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["operator-password"]) == 2
    assert "the password is empty" in capsys.readouterr().err


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def _codec(password_hash: str, clock: Clock, username: str = "an") -> SessionCodec:
    settings = DashboardSettings(
        operators=(Operator(username=username, password_hash=password_hash),),
        session_secret=SECRET,  # type: ignore[arg-type]  # pydantic makes the SecretStr
        session_ttl_s=60,
    )
    return SessionCodec(settings, Operators(settings), clock)


def test_a_session_cookie_is_signed_expires_and_dies_with_the_password() -> None:
    clock, hashed = Clock(), hash_password(PASSWORD, n=2**10)
    codec = _codec(hashed, clock)
    session = codec.new("an")
    cookie = codec.encode(session)
    assert codec.decode(cookie) == (SessionState.VALID, session)
    body, signature = cookie.split(".")
    other = _codec(hashed, clock, username="binh").encode(codec.new(None))
    for forged in (
        f"{body}x.{signature}",
        f"{body}.{signature[::-1]}",
        other.split(".")[0] + "." + signature,
    ):
        assert codec.decode(forged) == (SessionState.ABSENT, None)
    assert codec.decode("kh\u00f4ng-ph\u1ea3i-cookie") == (SessionState.ABSENT, None)
    clock.now = T0 + dt.timedelta(seconds=60)
    assert codec.decode(cookie) == (SessionState.EXPIRED, None)
    clock.now = T0
    changed = _codec(hash_password("mật khẩu mới", n=2**10), clock)
    assert changed.decode(cookie) == (SessionState.ABSENT, None)  # a new password ends old sessions
    assert not codec.csrf_ok(session, None)
    assert not codec.csrf_ok(session, session.csrf[:-1])
    assert codec.csrf_ok(session, session.csrf)


# -- the throttle of failed logins (issue 10, item 8) ------------------------------------------------------


class FakeTime:
    """The throttle's monotonic clock and sleep: a slowed try's wait is written down, not waited."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _throttle(policy: ThrottlePolicy | None = None) -> tuple[LoginThrottle, FakeTime]:
    clock = FakeTime()
    return LoginThrottle(policy, clock=clock, sleep=clock.sleep), clock


@pytest.mark.asyncio
async def test_an_address_that_keeps_failing_waits_2_4_8_up_to_300_s() -> None:
    throttle, clock = _throttle()
    for n in range(4):  # four failures on four names: the address is what counts
        assert await throttle.admit(f"name-{n}", "198.51.100.7") == 0
    waits = []
    for _ in range(10):
        wait = await throttle.admit("an", "198.51.100.7")
        assert wait > 0
        assert await throttle.admit("an", "198.51.100.7") == wait  # refused tries count for nothing
        clock.now += wait - 1
        assert throttle.refused_for("198.51.100.7") == 1
        clock.now += 1
        waits.append(wait)
        assert await throttle.admit("an", "198.51.100.7") == 0  # admitted, and failed again
    assert waits == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert throttle.refused_for("198.51.100.8") == 0  # another address is not touched


@pytest.mark.asyncio
async def test_a_name_under_attack_is_slowed_and_never_refused() -> None:
    throttle, clock = _throttle()
    for n in range(2000):  # 2000 addresses, one failure each (2**1996 would overflow a float)
        assert await throttle.admit("an", f"10.0.{n // 256}.{n % 256}") == 0
    assert clock.slept == [1.0, 2.0, 4.0] + [5.0] * 1993
    clock.slept.clear()
    assert await throttle.admit("an", "203.0.113.10") == 0  # the operator, from the office
    throttle.succeeded("an", "203.0.113.10")
    assert clock.slept == [5.0]
    assert throttle.delay_s("binh") == 0.0  # another operator's name is not slowed


@pytest.mark.asyncio
async def test_a_right_password_takes_back_its_own_try_and_nothing_else() -> None:
    throttle, _ = _throttle()
    for _ in range(3):
        await throttle.admit("an", "198.51.100.7")
    await throttle.admit("an", "198.51.100.7")
    throttle.succeeded("an", "198.51.100.7")  # the fourth try was right: three failures stay
    assert throttle.refused_for("198.51.100.7") == 0
    await throttle.admit("binh", "198.51.100.7")  # a fourth failure, on another name
    assert throttle.refused_for("198.51.100.7") == 2


@pytest.mark.asyncio
async def test_concurrent_tries_are_counted_when_they_start() -> None:
    """A burst sent before any answer came back: the fifth try from the address is refused already."""
    throttle, _ = _throttle()
    answers = await asyncio.gather(*(throttle.admit("an", "198.51.100.7") for _ in range(8)))
    assert answers == [0, 0, 0, 0, 2, 2, 2, 2]


@pytest.mark.asyncio
async def test_counters_are_forgotten_after_a_quiet_hour_and_bounded() -> None:
    throttle, clock = _throttle()
    for n in range(8):
        await throttle.admit("an", f"198.51.100.{n % 2}")
    assert throttle.refused_for("198.51.100.0") > 0
    assert throttle.delay_s("an") > 0
    clock.now += 3599
    assert throttle.refused_for("198.51.100.0") == 0  # its waits are over, its failures still count
    assert throttle.delay_s("an") > 0
    clock.now += 2
    assert throttle.refused_for("198.51.100.0") == 0
    assert throttle.delay_s("an") == 0.0
    assert throttle.counters() == (0, 0)
    small, _ = _throttle(ThrottlePolicy(max_entries=100))
    for n in range(1000):  # a spray of made-up names from many addresses
        await small.admit(f"made-up-{n}" * 1000, f"10.0.{n // 256}.{n % 256}")
    assert small.counters() == (100, 100)


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_key("198.51.100.7") == "198.51.100.7"
    assert client_key(None) == "-"
