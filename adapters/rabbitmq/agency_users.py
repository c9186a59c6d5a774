"""The AMQP agencies' RabbitMQ users, made from the topology through the management HTTP API.

Each AMQP agency gets one user, ``<prefix>.<OrganId>``, with no tags (no management UI) and, on the
axis's vhost only, these permissions (RabbitMQ matches each regex against the whole resource name):

* configure ``^$``: nothing; it declares, deletes and binds nothing;
* write ``^(<prefix>\\.agency-intake|<prefix>\\.agency-acks)$``: it publishes to those two exchanges
  only (not the default exchange, which would let it put a message in any queue by name);
* read ``^<prefix>\\.agency\\.<OrganId>$``: it consumes its own delivery queue only. Direct reply-to
  (``amq.rabbitmq.reply-to``), where the bus answers it, needs no permission.

Why the management API rather than ``rabbitmqctl``: it works from any machine that can reach the
broker (``rabbitmqctl`` must run on a broker node, as a user who can read its Erlang cookie), its PUTs
are idempotent (``add_user`` fails on an existing user), it reads the current state back so that a run
can say what it changed, and the password travels in a request body, never on a command line that any
local user can read in ``ps``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from adapters.rabbitmq.names import BrokerNames
from bus.errors import BrokerError, ConfigError
from bus.organ_id import OrganId

__all__ = ["AgencyUser", "ManagementApi", "Permissions", "agency_permissions", "sync_agency_user"]


@dataclass(frozen=True, slots=True)
class Permissions:
    """A user's permissions on one vhost, as RabbitMQ regexes."""

    configure: str
    write: str
    read: str


def agency_permissions(names: BrokerNames, organ: OrganId) -> Permissions:
    """What the broker user of the AMQP agency *organ* may do: see the module's docstring."""
    intake, acks = re.escape(names.agency_intake), re.escape(names.agency_acks)
    return Permissions(
        configure="^$", write=f"^({intake}|{acks})$", read=f"^{re.escape(names.agency_queue(organ))}$"
    )


@dataclass(frozen=True, slots=True)
class AgencyUser:
    """The broker user one AMQP agency should have."""

    name: str
    password: str
    permissions: Permissions


class ManagementApi:
    """The few calls of RabbitMQ's management HTTP API that users need. Every failure is a
    :class:`~bus.errors.BrokerError` (unreachable, an unexpected answer) or a
    :class:`~bus.errors.ConfigError` (credentials refused); no message carries a password."""

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        *,
        vhost: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._user = user
        self.vhost = vhost
        self._http = httpx.AsyncClient(
            base_url=f"{self._base}/api", auth=(user, password), timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            answer = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise BrokerError(
                f"cannot reach RabbitMQ's management API at {self._base} ({type(exc).__name__}): is the "
                "rabbitmq_management plugin enabled (rabbitmq-plugins enable rabbitmq_management) and "
                "amqp.management_url right?"
            ) from exc
        if answer.status_code == 404 and method == "GET":
            return None
        if answer.status_code == 401:
            raise ConfigError(
                f"RabbitMQ's management API at {self._base} refused the credentials of {self._user!r}: "
                "set amqp.management_user and BUS_AMQP__MANAGEMENT_PASSWORD to an administrator's"
            )
        if answer.status_code >= 400:
            reason = answer.text[:200]
            raise BrokerError(
                f"RabbitMQ's management API answered {answer.status_code} to {method} {path}: {reason}"
            )
        return answer.json() if answer.content else None

    @staticmethod
    def _q(value: str) -> str:
        return quote(value, safe="")

    async def user(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._call("GET", f"/users/{self._q(name)}")
        return found

    async def users(self) -> list[dict[str, Any]]:
        return list(await self._call("GET", "/users") or [])

    async def put_user(self, name: str, password: str) -> None:
        await self._call("PUT", f"/users/{self._q(name)}", {"password": password, "tags": ""})

    async def delete_user(self, name: str) -> None:
        await self._call("DELETE", f"/users/{self._q(name)}")

    async def permissions(self, name: str) -> list[dict[str, Any]]:
        return list(await self._call("GET", f"/users/{self._q(name)}/permissions") or [])

    async def put_permissions(self, name: str, permissions: Permissions) -> None:
        body = {"configure": permissions.configure, "write": permissions.write, "read": permissions.read}
        await self._call("PUT", f"/permissions/{self._q(self.vhost)}/{self._q(name)}", body)

    async def delete_permissions(self, vhost: str, name: str) -> None:
        await self._call("DELETE", f"/permissions/{self._q(vhost)}/{self._q(name)}")

    async def topic_permissions(self, name: str) -> list[dict[str, Any]]:
        return list(await self._call("GET", f"/users/{self._q(name)}/topic-permissions") or [])

    async def delete_topic_permissions(self, vhost: str, name: str) -> None:
        await self._call("DELETE", f"/topic-permissions/{self._q(vhost)}/{self._q(name)}")


_HASHES = {"rabbit_password_hashing_sha256": "sha256", "rabbit_password_hashing_sha512": "sha512"}


def password_matches(password: str, stored: str, algorithm: str) -> bool:
    """Whether *password* is the one RabbitMQ stored as *stored* (base64 of a 4-byte salt and the
    digest of salt + password); False for an algorithm this does not know (the caller sets it again)."""
    digest = _HASHES.get(algorithm)
    try:
        raw = base64.b64decode(stored, validate=True)
    except ValueError:
        return False
    if digest is None or len(raw) < 5:
        return False
    salt, expected = raw[:4], raw[4:]
    return hmac.compare_digest(hashlib.new(digest, salt + password.encode("utf-8")).digest(), expected)


def _same(found: dict[str, Any], wanted: Permissions) -> bool:
    return (found.get("configure"), found.get("write"), found.get("read")) == (
        wanted.configure,
        wanted.write,
        wanted.read,
    )


async def sync_agency_user(api: ManagementApi, wanted: AgencyUser) -> list[str]:
    """Make *wanted*'s user exist with exactly its password, no tags and its permissions on the API's
    vhost, and none on any other vhost nor any topic permission; returns what was changed (empty
    when nothing was), in words for the operator, never the password."""
    done: list[str] = []
    current = await api.user(wanted.name)
    if current is None:
        await api.put_user(wanted.name, wanted.password)
        done.append("created")
    else:
        tags = current.get("tags") or []
        same_password = password_matches(
            wanted.password, str(current.get("password_hash", "")), str(current.get("hashing_algorithm", ""))
        )
        if tags or not same_password:
            await api.put_user(wanted.name, wanted.password)
            done.append("password set" if not tags else f"password set, tags {tags} removed")
    granted = await api.permissions(wanted.name)
    here = [p for p in granted if p.get("vhost") == api.vhost]
    if not here or not _same(here[0], wanted.permissions):
        await api.put_permissions(wanted.name, wanted.permissions)
        done.append("permissions set")
    for other in granted:
        if other.get("vhost") != api.vhost:
            await api.delete_permissions(str(other["vhost"]), wanted.name)
            done.append(f"permissions on vhost {other['vhost']!r} removed")
    for topic in await api.topic_permissions(wanted.name):
        await api.delete_topic_permissions(str(topic["vhost"]), wanted.name)
        done.append(f"topic permissions on vhost {topic['vhost']!r} removed")
    return done
