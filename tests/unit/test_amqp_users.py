"""The AMQP agencies' broker users (no broker): the permission regexes, what ``bus amqp-users`` checks
before it changes anything, and what it changes, against an in-memory management API. The real
broker holds the users to their permissions in tests/integration/test_amqp_agencies.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from pydantic import SecretStr

from adapters.rabbitmq.agency_users import (
    AgencyUser,
    ManagementApi,
    agency_permissions,
    password_matches,
    sync_agency_user,
)
from adapters.rabbitmq.names import BrokerNames
from bus.errors import BrokerError, ConfigError
from bus.organ_id import OrganId
from bus.settings import Settings, load_settings
from entrypoints.cli_amqp import management_api, wanted_users
from tests.conftest import ROOT

pytestmark = pytest.mark.asyncio

NAMES = BrokerNames("bus")
HOME = OrganId.parse("000.00.01.H99")


def _allowed(regex: str, name: str) -> bool:
    """RabbitMQ's check: the regex searched in the resource name (anchors make it the whole name)."""
    return re.search(regex, name) is not None


async def test_an_agency_may_read_its_own_queue_write_two_exchanges_and_configure_nothing() -> None:
    rights = agency_permissions(NAMES, HOME)
    assert rights.configure == "^$"
    assert rights.write == r"^(bus\.agency\-intake|bus\.agency\-acks)$"
    assert rights.read == r"^bus\.agency\.000\.00\.01\.H99$"
    assert _allowed(rights.read, "bus.agency.000.00.01.H99")
    for name in (
        "bus.agency.000.00.02.H99",
        "bus.agency.000.00.01.H99x",
        "bus.agencyX000.00.01.H99",
        "bus.inbox.000.00.01.H99",
        "bus.agency-intake",
        "bus.agency-acks",
    ):
        assert not _allowed(rights.read, name), name
    for name in ("bus.agency-intake", "bus.agency-acks"):
        assert _allowed(rights.write, name)
    for name in ("", "amq.default", "bus.deliver", "amq.direct", "bus.agency-intakeX", "xbus.agency-acks"):
        assert not _allowed(rights.write, name), name
    for name in ("bus.agency.000.00.01.H99", "bus.agency-intake", "anything"):
        assert not _allowed(rights.configure, name)


async def test_a_prefix_with_regex_characters_is_taken_literally() -> None:
    rights = agency_permissions(BrokerNames("test+1.a"), HOME)
    assert _allowed(rights.read, "test+1.a.agency.000.00.01.H99")
    assert not _allowed(rights.read, "testt1.a.agency.000.00.01.H99")


def _rabbit_hash(password: str, salt: bytes = b"\x01\x02\x03\x04") -> str:
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


async def test_the_password_rabbitmq_stored_is_recognised_without_setting_it_again() -> None:
    stored = _rabbit_hash("right-password-0123")
    assert password_matches("right-password-0123", stored, "rabbit_password_hashing_sha256")
    assert not password_matches("wrong-password-0123", stored, "rabbit_password_hashing_sha256")
    assert not password_matches("right-password-0123", stored, "rabbit_password_hashing_md5")
    assert not password_matches("right-password-0123", "not base64!", "rabbit_password_hashing_sha256")


class FakeManagement:
    """Users and permissions as RabbitMQ's management API keeps them."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.permissions: dict[tuple[str, str], dict[str, Any]] = {}
        self.topic: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = [unquote(p) for p in request.url.raw_path.decode().split("?")[0].split("/")[2:]]
        self.calls.append(f"{request.method} /{'/'.join(path)}")
        if request.headers.get("authorization") != "Basic " + base64.b64encode(b"admin:admin-pw").decode():
            return httpx.Response(401, json={"error": "not_authorised"})
        body = json.loads(request.content) if request.content else {}
        match request.method, path:
            case "GET", ["users"]:
                return httpx.Response(200, json=list(self.users.values()))
            case "GET", ["users", name]:
                return (
                    httpx.Response(200, json=self.users[name]) if name in self.users else httpx.Response(404)
                )
            case "PUT", ["users", name]:
                tags = [t for t in body["tags"].split(",") if t]
                self.users[name] = {
                    "name": name,
                    "tags": tags,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "password_hash": _rabbit_hash(body["password"]),
                }
                return httpx.Response(204)
            case "DELETE", ["users", name]:
                self.users.pop(name)
                return httpx.Response(204)
            case "GET", ["users", name, "permissions"]:
                return httpx.Response(200, json=[p for (_, u), p in self.permissions.items() if u == name])
            case "GET", ["users", name, "topic-permissions"]:
                return httpx.Response(200, json=[p for (_, u), p in self.topic.items() if u == name])
            case "PUT", ["permissions", vhost, name]:
                self.permissions[(vhost, name)] = {"user": name, "vhost": vhost, **body}
                return httpx.Response(204)
            case "DELETE", ["permissions", vhost, name]:
                self.permissions.pop((vhost, name))
                return httpx.Response(204)
            case "DELETE", ["topic-permissions", vhost, name]:
                self.topic.pop((vhost, name))
                return httpx.Response(204)
        return httpx.Response(405)


def _api(fake: FakeManagement, login: tuple[str, str] = ("admin", "admin-pw")) -> ManagementApi:
    return ManagementApi("http://rabbit:15672", *login, vhost="/", transport=httpx.MockTransport(fake.handle))


WANTED = AgencyUser("bus.000.00.01.H99", "agency-password-0123", agency_permissions(NAMES, HOME))


async def test_a_user_is_created_with_its_permissions_and_a_second_run_changes_nothing() -> None:
    fake = FakeManagement()
    assert await sync_agency_user(_api(fake), WANTED) == ["created", "permissions set"]
    assert fake.users[WANTED.name]["tags"] == []
    rights = fake.permissions[("/", WANTED.name)]
    assert (rights["configure"], rights["write"], rights["read"]) == (
        "^$",
        WANTED.permissions.write,
        WANTED.permissions.read,
    )
    fake.calls.clear()
    assert await sync_agency_user(_api(fake), WANTED) == []
    assert [c for c in fake.calls if not c.startswith("GET")] == []  # idempotent: nothing written


async def test_a_user_is_brought_back_to_exactly_what_it_should_have() -> None:
    fake = FakeManagement()
    fake.users[WANTED.name] = {
        "name": WANTED.name,
        "tags": ["administrator"],
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "password_hash": _rabbit_hash("old-password-012345"),
    }
    fake.permissions[("/", WANTED.name)] = {"vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    fake.permissions[("other", WANTED.name)] = {
        "vhost": "other",
        "configure": ".*",
        "write": ".*",
        "read": ".*",
    }
    fake.topic[("/", WANTED.name)] = {"vhost": "/", "exchange": "amq.topic", "write": ".*", "read": ".*"}
    changes = await sync_agency_user(_api(fake), WANTED)
    assert changes == [
        "password set, tags ['administrator'] removed",
        "permissions set",
        "permissions on vhost 'other' removed",
        "topic permissions on vhost '/' removed",
    ]
    assert password_matches(
        WANTED.password, fake.users[WANTED.name]["password_hash"], "rabbit_password_hashing_sha256"
    )
    assert list(fake.permissions) == [("/", WANTED.name)]
    assert fake.topic == {}


async def test_refused_credentials_and_an_unreachable_api_say_what_to_fix_without_the_password() -> None:
    with pytest.raises(ConfigError, match="refused the credentials of 'admin'") as refused:
        await sync_agency_user(_api(FakeManagement(), ("admin", "wrong-admin-pw")), WANTED)
    assert "wrong-admin-pw" not in str(refused.value)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    api = ManagementApi(
        "http://rabbit:15672", "admin", "pw", vhost="/", transport=httpx.MockTransport(unreachable)
    )
    with pytest.raises(BrokerError, match="rabbitmq-plugins enable rabbitmq_management"):
        await sync_agency_user(api, WANTED)


# -- what the command checks before it changes anything -------------------------------------------------


def _settings(tmp_path: Path, amqp: tuple[str, ...], **overrides: Any) -> Settings:
    text = (ROOT / "config" / "example-province.toml").read_text(encoding="utf-8")
    for code in amqp:
        text = text.replace(f'organ_id = "{code}"\n', f'organ_id = "{code}"\ntransport = "amqp"\n', 1)
    path = tmp_path / "province.toml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(path)
    return settings.model_copy(update=overrides) if overrides else settings


async def test_each_amqp_agency_gets_a_user_with_the_password_from_the_environment_or_its_secret(
    tmp_path: Path,
) -> None:
    settings = _settings(
        tmp_path,
        ("000.00.01.H99", "000.01.21.H99"),
        amqp_passwords={"000.01.21.H99": SecretStr("from-the-environment-0123")},
    )
    users = wanted_users(settings, NAMES)
    assert [(u.name, u.password, source) for u, source in users] == [
        ("bus.000.00.01.H99", "demo-only-000.00.01.H99", "the agency's API secret"),
        ("bus.000.01.21.H99", "from-the-environment-0123", "BUS_AMQP_PASSWORDS"),
    ]


@pytest.mark.parametrize(
    ("passwords", "message"),
    [
        ({"000.00.01.H99": "short"}, "the password of 000.00.01.H99 (BUS_AMQP_PASSWORDS) has 5 bytes"),
        ({"000.00.02.H99": "another-password-0123"}, "BUS_AMQP_PASSWORDS names 000.00.02.H99, which is not"),
    ],
)
async def test_a_bad_password_stops_the_command_before_any_change(
    tmp_path: Path, passwords: dict[str, str], message: str
) -> None:
    settings = _settings(
        tmp_path, ("000.00.01.H99",), amqp_passwords={k: SecretStr(v) for k, v in passwords.items()}
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        wanted_users(settings, NAMES)


async def test_an_agency_without_secret_or_password_is_named(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ("000.00.01.H99",))
    agencies = tuple(a.model_copy(update={"secret": None}) for a in settings.agencies)
    with pytest.raises(ConfigError, match=r"nothing was changed: 000\.00\.01\.H99 has no password"):
        wanted_users(settings.model_copy(update={"agencies": agencies}), NAMES)


async def test_the_management_api_is_reached_as_the_amqp_urls_user_on_its_vhost(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ())
    amqp = settings.amqp.model_copy(update={"url": "amqp://bus-admin:p%40ss@rabbit:5672/tinh-mau"})
    api = management_api(settings.model_copy(update={"amqp": amqp}))
    try:
        assert api.vhost == "tinh-mau"
        assert api._http.auth._auth_header == "Basic " + base64.b64encode(b"bus-admin:p@ss").decode()  # type: ignore[union-attr]
    finally:
        await api.aclose()
