"""The one place that builds what talks to the outside: the store, the broker connection, publishers,
the intake's policy and identity. Every command and the node get them from here, with the same options:
the store never logs a statement's values (envelope bodies, nonces), publishers wait
``amqp.publish_timeout_s`` for a confirm, and no URL is logged with its password.

Shaped like cosmicpython's ``bootstrap.py``: the core (:mod:`bus`) receives ports; this module picks the
adapters that implement them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aio_pika
import structlog
from aio_pika.abc import AbstractConnection
from cryptography.hazmat.primitives import hashes

from adapters.rabbitmq import BrokerNames, ClusterConnection, Publisher, connect_cluster, open_channel
from adapters.store import StatusStore
from bus.dsig import SignatureConfig, TrustStore, load_certificates, load_private_key
from bus.dsig.revocation import CrlRegistry, CrlSource, RevocationPolicy
from bus.errors import BrokerError, ConfigError
from bus.intake import IntakePolicy, NodeIdentity
from bus.settings import Settings
from bus.xmlparse import XmlLimits

__all__ = [
    "broker_names",
    "broker_nodes",
    "connect_broker",
    "connect_broker_once",
    "intake_policy",
    "new_publisher",
    "node_identity",
    "open_store",
    "revocation_registry",
    "safe_url",
]

log = structlog.get_logger("bus.bootstrap")


def open_store(settings: Settings) -> StatusStore:
    """The status store. ``hide_parameters``: a database error's message (logged) never carries a
    statement's values, among them envelope bodies and request nonces."""
    store = StatusStore.connect(
        settings.database.url, pool_size=settings.database.pool_size, hide_parameters=True
    )
    # The process's audit chain names the node and the command that opened it (its first record).
    command = os.path.basename(sys.argv[0]) + (f" {sys.argv[1]}" if len(sys.argv) > 1 else "")
    store.configure_audit(enabled=settings.audit.enabled, node=str(settings.node.organ_id), command=command)
    return store


def broker_names(settings: Settings) -> BrokerNames:
    return BrokerNames(settings.amqp.prefix)


def broker_nodes(settings: Settings) -> list[str]:
    """The RabbitMQ nodes a gateway may use, in the order it tries them: ``[amqp] nodes``, or ``url``."""
    return list(settings.amqp.nodes) or [settings.amqp.url]


async def connect_broker(settings: Settings) -> ClusterConnection:
    """A connection that reconnects by itself, to another node of the cluster when its node is lost
    (adapters/rabbitmq/cluster.py); :class:`BrokerError` if no node answers."""
    nodes = broker_nodes(settings)
    try:
        return await connect_cluster(nodes, timeout_s=15)
    except Exception as exc:
        where = ", ".join(safe_url(n) for n in nodes)
        raise BrokerError(f"cannot connect to RabbitMQ at {where}: {exc!r}") from exc


async def connect_broker_once(settings: Settings) -> AbstractConnection:
    """A plain connection for a command that does one thing and exits (``bus replay``): the first node
    that answers."""
    error: Exception | None = None
    for node in broker_nodes(settings):
        try:
            return await aio_pika.connect(node, timeout=15)
        except Exception as exc:
            error = exc
    where = ", ".join(safe_url(n) for n in broker_nodes(settings))
    raise BrokerError(f"cannot connect to RabbitMQ at {where}: {error!r}") from error


async def new_publisher(connection: AbstractConnection, settings: Settings) -> Publisher:
    """A publisher on a confirming channel of its own."""
    return Publisher(
        await open_channel(connection), broker_names(settings), timeout=settings.amqp.publish_timeout_s
    )


def node_identity(settings: Settings) -> NodeIdentity:
    node = settings.node
    if node.key is None or node.certificate is None:
        raise ConfigError(
            "node.key and node.certificate must name the bus's signing key and certificate "
            "(for development: bus pki init --topology FILE --out DIR)"
        )
    key = load_private_key(settings.path(node.key))
    certificates = load_certificates(settings.path(node.certificate))
    if not certificates:
        raise ConfigError(f"{node.certificate}: no certificate in the file")
    return NodeIdentity(node.organ_id, key, certificates[0])


def revocation_registry(settings: Settings) -> CrlRegistry | None:
    """The CRLs of ``[revocation]``, not loaded yet (the node's :class:`CrlRefresher` loads them), or
    None when none is listed. Both trust stores share it.

    With a registry every link of a chain must be checkable: a certificate issued by a CA without a CRL
    listed has an unknown status, which ``on_unavailable`` refuses or flags. A trusted CA without one is
    logged here (``revocation.no_crl``), or stops start-up with ``require_for_every_ca``; an intermediate
    CA is only known when a chain passes it, and is caught then, at verification."""
    section = settings.revocation
    sources = []
    for entry in section.crls:
        cas = load_certificates(settings.path(entry.ca))
        if len(cas) != 1:
            raise ConfigError(
                f"revocation.crls: {entry.ca} holds {len(cas)} certificates; name one CA per entry"
            )
        location = entry.crl if "://" in entry.crl else str(settings.path(Path(entry.crl)))
        sources.append(CrlSource(cas[0], location))
    registry = CrlRegistry(sources, RevocationPolicy(section.on_unavailable)) if sources else None
    missing = _cas_without_crl(settings, registry, unchecked_only=False)
    if missing and section.require_for_every_ca:
        raise ConfigError(
            "revocation.require_for_every_ca is set, and no CRL is listed for the trusted CA(s) "
            f"{'; '.join(missing)}: add a [[revocation.crls]] entry for each"
        )
    if registry is not None:
        outcome = "refused" if registry.policy is RevocationPolicy.REFUSE else "accepted and flagged"
        for ca in missing:
            log.warning(
                "revocation.no_crl",
                ca=ca,
                reason="no [[revocation.crls]] entry for this CA",
                consequence=f"signatures whose chain passes this CA are {outcome}",
                policy=registry.policy.value,
            )
    return registry


def _cas_without_crl(
    settings: Settings, registry: CrlRegistry | None, *, unchecked_only: bool = True
) -> list[str]:
    """The trusted CAs (node.trust, national_axis.trust) with no CRL in *registry*. With *unchecked_only*,
    only those whose certificates go unchecked: all without a registry, none with one (their
    certificates' status is then unknown, and ``on_unavailable`` refuses or flags them)."""
    if registry is not None and unchecked_only:
        return []
    paths = (*settings.node.trust, *settings.national_axis.trust)
    cas = {ca for path in paths for ca in load_certificates(settings.path(path))}
    return sorted(ca.subject.rfc4514_string() for ca in cas if registry is None or not registry.covers(ca))


def intake_policy(settings: Settings, revocation: CrlRegistry | None = None) -> IntakePolicy:
    """The intake's checks from *settings*. *revocation* is the CRL registry the node keeps fresh; without
    one, one is built from ``[revocation]`` but never loaded (under ``refuse`` a signature whose chain
    passes a CA with a CRL listed is then refused)."""
    crls = revocation if revocation is not None else revocation_registry(settings)
    trust = (
        TrustStore.from_pem_files([settings.path(p) for p in settings.node.trust], crls)
        if settings.node.trust
        else None
    )
    signed = frozenset(str(a.organ_id) for a in settings.agencies if a.require_signature)
    if signed and trust is None:
        raise ConfigError(
            f"agencies {', '.join(sorted(signed))} must sign, "
            "but node.trust names no CA to check their signatures against"
        )
    pinned = {}
    for agency in settings.agencies:
        if agency.certificate is not None:
            [cert, *_] = load_certificates(settings.path(agency.certificate))
            pinned[str(agency.organ_id)] = cert.fingerprint(hashes.SHA256())
    return IntakePolicy(
        trust=trust,
        signed_senders=signed,
        pinned=pinned,
        signatures=SignatureConfig(
            sha1_senders=frozenset(str(a.organ_id) for a in settings.agencies if a.allow_sha1)
        ),
        limits=XmlLimits(max_bytes=settings.http.max_body_bytes),
        axis_trust=(
            TrustStore.from_pem_files([settings.path(p) for p in settings.national_axis.trust], crls)
            if settings.national_axis.trust
            else None
        ),
        axis_require_signature=settings.national_axis.require_signature,
        trusted_axes=frozenset(settings.national_axis.trusted_axes),
        max_recipients=settings.intake.max_recipients,
        max_fanout_bytes=settings.intake.max_fanout_bytes,
    )


def safe_url(url: str) -> str:
    """The URL without its password (logged and printed)."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
