"""A province's axis as configuration: the bus node itself and every agency node.

Part of the settings file (``config/example-province.toml``): :func:`bus.settings.load_topology` reads
it; the development PKI (:mod:`bus.pki`) makes one key and certificate per node from it.
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from bus.organ_id import OrganId

__all__ = ["Agency", "AgencyLevel", "AgencyTransport", "BusNode", "Topology"]


class AgencyLevel(enum.StrEnum):
    PROVINCE = "province"  # UBND tỉnh
    DEPARTMENT = "department"  # Sở, ban, ngành
    DISTRICT = "district"  # UBND huyện (abolished in many provinces by the 2025 reform)
    COMMUNE = "commune"  # UBND xã, phường, thị trấn


class AgencyTransport(enum.StrEnum):
    """How an agency's document system exchanges envelopes with the axis (docs/amqp-agencies.md)."""

    HTTP = "http"  # the signed HTTP API: it pulls its inbox (docs/http-api.md)
    # RabbitMQ, as its own broker user: it publishes to the agency intake and consumes its own delivery
    # queue, and its deliveries go there instead of the HTTP inbox (`bus amqp-users` makes the user).
    AMQP = "amqp"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BusNode(_Strict):
    organ_id: OrganId
    name: str
    # The bus's own signing key and certificate, and the CAs whose agencies' signatures it trusts.
    # Relative paths are read from the configuration file's directory.
    key: Path | None = None
    certificate: Path | None = None
    trust: tuple[Path, ...] = ()


class Agency(_Strict):
    organ_id: OrganId
    name: str
    level: AgencyLevel
    parent: OrganId | None = None
    # The SHA-1 opt-in is per sender and visible in the topology file (docs/signatures.md).
    allow_sha1: bool = False
    # Codes this agency had before a merger or renaming (2025 reform): envelopes addressed to them
    # are delivered here.
    aliases: tuple[OrganId, ...] = ()
    # Shared secret of the agency's document system for the HTTP API's HMAC; without one the agency
    # cannot use the API. Never logged (SecretStr).
    secret: SecretStr | None = None
    # Envelopes from this agency must carry a valid signature; with a certificate given, it must be the
    # signer's (pinned), otherwise any certificate from a trusted CA whose UID names the agency.
    require_signature: bool = False
    certificate: Path | None = None
    # How its document system takes its deliveries: the HTTP inbox (the default) or its own RabbitMQ
    # queue; over AMQP it also sends and acknowledges through the broker (docs/amqp-agencies.md).
    transport: AgencyTransport = AgencyTransport.HTTP


class Topology(_Strict):
    province: str
    node: BusNode
    agencies: tuple[Agency, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        ids = [str(a.organ_id) for a in self.agencies]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"agencies listed twice: {', '.join(duplicates)}")
        known = set(ids)
        for agency in self.agencies:
            for alias in agency.aliases:
                if str(alias) in known:
                    raise ValueError(f"alias {alias} of {agency.organ_id} is also a listed agency")
        aliases = [str(alias) for agency in self.agencies for alias in agency.aliases]
        if len(aliases) != len(set(aliases)):
            raise ValueError("an alias is given to more than one agency")
        for agency in self.agencies:
            if agency.parent is not None and str(agency.parent) not in known:
                raise ValueError(
                    f"agency {agency.organ_id} names parent {agency.parent}, which is not listed"
                )
        return self

    def agency(self, organ_id: OrganId) -> Agency | None:
        """The agency with this code, or whose former code (alias) this is."""
        return next((a for a in self.agencies if a.organ_id == organ_id or organ_id in a.aliases), None)

    def within(self, ancestor: OrganId) -> tuple[Agency, ...]:
        """Every agency at or under *ancestor* (a district's agencies, a whole province)."""
        return tuple(a for a in self.agencies if a.organ_id.is_within(ancestor))
