"""``bus amqp-users``: the AMQP agencies' RabbitMQ users, made from the topology (never by hand).

For every agency with ``transport = "amqp"`` it creates or updates the user ``<prefix>.<OrganId>`` with
its password, no tags, and exactly the permissions of :func:`adapters.rabbitmq.agency_permissions` on
the vhost of ``amqp.url`` (none elsewhere), through RabbitMQ's management API; one line per user says
what changed (``unchanged`` when nothing did). Running it again changes nothing. ``--prune`` deletes the
users of this prefix that no AMQP agency of the file has any more (an agency moved back to HTTP); without
it they are listed.

The password of each agency comes from ``BUS_AMQP_PASSWORDS`` (JSON, by OrganId), else its API secret.
Every password is checked before anything changes on the broker; none is ever printed or logged.

Exit status: 0 done; 2 a configuration problem (a missing or short password, a password for an agency
that does not use AMQP, credentials refused) or RabbitMQ's management API unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from adapters.rabbitmq import AgencyUser, BrokerNames, ManagementApi, agency_permissions, sync_agency_user
from bus.errors import ConfigError, InvalidOrganIdError
from bus.organ_id import OrganId
from bus.settings import MIN_SECRET_BYTES, Settings, load_settings
from bus.topology import AgencyTransport
from entrypoints.bootstrap import broker_names

__all__ = ["add_commands", "management_api", "wanted_users"]

EXIT_OK = 0


def wanted_users(settings: Settings, names: BrokerNames) -> list[tuple[AgencyUser, str]]:
    """Each AMQP agency's user and where its password came from; :class:`ConfigError` naming every
    agency whose password is missing or too short, or a password given for another agency."""
    amqp = [a for a in settings.agencies if a.transport is AgencyTransport.AMQP]
    codes = {str(a.organ_id) for a in amqp}
    stray = sorted(set(settings.amqp_passwords) - codes)
    if stray:
        raise ConfigError(
            f'BUS_AMQP_PASSWORDS names {", ".join(stray)}, which is not an agency with transport = "amqp" '
            "in this file: remove it, or set the agency's transport"
        )
    users: list[tuple[AgencyUser, str]] = []
    problems: list[str] = []
    for agency in amqp:
        code = str(agency.organ_id)
        given = settings.amqp_passwords.get(code)
        source = "BUS_AMQP_PASSWORDS" if given is not None else "the agency's API secret"
        secret = settings.secret_of(agency) if given is None else given.get_secret_value().encode("utf-8")
        if secret is None:
            problems.append(f'{code} has no password: set BUS_AMQP_PASSWORDS=\'{{"{code}": "..."}}\'')
        elif len(secret) < MIN_SECRET_BYTES:
            problems.append(
                f"the password of {code} ({source}) has {len(secret)} bytes; at least {MIN_SECRET_BYTES}"
            )
        else:
            password = secret.decode("utf-8")
            user = AgencyUser(
                names.agency_user(agency.organ_id), password, agency_permissions(names, agency.organ_id)
            )
            users.append((user, source))
    if problems:
        raise ConfigError("nothing was changed: " + "; ".join(problems))
    return users


def management_api(settings: Settings) -> ManagementApi:
    """The management API of the broker of ``amqp.url``, as ``amqp.management_user`` (default: the user
    of ``amqp.url``), on ``amqp.url``'s vhost."""
    url = urlsplit(settings.amqp.url)
    path = url.path[1:] if url.path.startswith("/") else url.path
    vhost = unquote(path) or "/"
    user = settings.amqp.management_user or unquote(url.username or "")
    given = settings.amqp.management_password
    password = given.get_secret_value() if given is not None else unquote(url.password or "")
    if not user or not password:
        raise ConfigError(
            "no credentials for RabbitMQ's management API: set amqp.management_user and "
            "BUS_AMQP__MANAGEMENT_PASSWORD (an administrator), or put them in amqp.url"
        )
    return ManagementApi(settings.amqp.management_url, user, password, vhost=vhost)


def _stale(found: list[dict[str, Any]], names: BrokerNames, wanted: set[str]) -> list[str]:
    """Users of this prefix, named like an agency's, that no AMQP agency of the file has."""
    stale = []
    for entry in found:
        name = str(entry.get("name", ""))
        code = name.removeprefix(f"{names.prefix}.")
        if code == name or name in wanted:
            continue
        try:
            if str(OrganId.parse(code)) == code:  # as agency_user writes it, not a look-alike
                stale.append(name)
        except InvalidOrganIdError:
            continue
    return sorted(stale)


async def _sync(settings: Settings, prune: bool) -> int:
    names = broker_names(settings)
    users = wanted_users(settings, names)  # every check before any change
    api = management_api(settings)
    try:
        if not users:
            print('no agency has transport = "amqp": no user to make')
        for user, source in users:
            changes = await sync_agency_user(api, user)
            rights = user.permissions
            said = ", ".join(changes) if changes else "unchanged"
            print(
                f"{user.name}: {said} (vhost {api.vhost!r}; configure {rights.configure}, "
                f"write {rights.write}, read {rights.read}; password from {source})"
            )
        for name in _stale(await api.users(), names, {user.name for user, _ in users}):
            if prune:
                await api.delete_user(name)
                print(f"{name}: deleted (no AMQP agency of this file has it)")
            else:
                print(
                    f"{name}: not an AMQP agency of this file any more; --prune deletes it", file=sys.stderr
                )
    finally:
        await api.aclose()
    return EXIT_OK


def cmd_amqp_users(args: argparse.Namespace) -> int:
    return asyncio.run(_sync(load_settings(args.config), args.prune))


def add_commands(commands: Any) -> None:
    """Register amqp-users on the ``bus`` parser's subcommands."""
    users = commands.add_parser(
        "amqp-users", help="create or update the AMQP agencies' RabbitMQ users and permissions"
    )
    users.add_argument("--config", required=True, type=Path)
    users.add_argument(
        "--prune", action="store_true", help="delete users of this prefix that no AMQP agency of the file has"
    )
    users.set_defaults(handler=cmd_amqp_users)
