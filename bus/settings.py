"""Settings of one bus node: the province's topology file plus ``BUS_`` environment variables.

One class, built once at start-up and passed down (nothing reads the environment elsewhere). The
file gives the province, its agencies and the node's services; an environment variable overrides a
file value (nested with ``__``: ``BUS_AMQP__URL``, ``BUS_DATABASE__URL``). A bad file or value stops
start-up with the field and the reason.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bus.errors import ConfigError
from bus.passwords import PasswordHash, parse_password_hash
from bus.topology import Agency, BusNode, Topology

__all__ = [
    "AmqpSettings",
    "AuditSettings",
    "DashboardSettings",
    "DatabaseSettings",
    "HttpSettings",
    "IntakeSettings",
    "NationalAxisSettings",
    "Operator",
    "Settings",
    "StoreSettings",
    "load_settings",
    "load_topology",
]


MIN_SECRET_BYTES = 16
MIN_SESSION_SECRET_BYTES = 32  # the HMAC key of the dashboard's session cookies


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AmqpSettings(_Section):
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # A RabbitMQ cluster: every node's URL. A gateway connects to one (the first that answers, from a
    # place in the list of its own) and on its loss to another. Empty: ``url`` alone.
    nodes: list[str] = []
    # Members of each quorum queue: three for a three-node cluster; a single node holds one.
    quorum_replicas: int = Field(default=3, ge=1, le=9)
    prefix: str = "bus"  # every exchange and queue of this axis is named under it
    publish_timeout_s: float = 30.0
    prefetch: int = 64  # unacknowledged inbox messages one worker holds at a time
    # Envelopes one process takes from the agency intake queue at a time (AMQP agencies,
    # docs/amqp-agencies.md): each is an intake in flight, as a concurrent HTTP send is.
    intake_prefetch: int = Field(default=16, ge=1, le=1000)
    # RabbitMQ's management HTTP API, which `bus amqp-users` uses to create the agencies' broker users.
    # Its user must be an administrator; without management_user it is the user of `url`, and without
    # management_password that user's password (BUS_AMQP__MANAGEMENT_PASSWORD keeps it out of the file).
    management_url: str = "http://127.0.0.1:15672"
    management_user: str | None = None
    management_password: SecretStr | None = None


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///bus.db"  # PostgreSQL: postgresql+asyncpg://user@host/db
    # Connections a process keeps open (PostgreSQL). Too few and every burst opens and closes
    # connections, which costs more than the queries (seen in bench/bench_e2e.py).
    pool_size: int = 30


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    # An envelope's size at most (413 above, naming this limit): 128 MiB admits a 100 MB scanned
    # dossier; the bus holds none of it whole in memory (docs/data-path.md). Other bodies: 64 KiB.
    max_body_bytes: int = Field(default=128 * 1024 * 1024, ge=64 * 1024)
    # A signed request older or newer than this is refused; a replay inside it is refused too.
    clock_skew_s: int = 300
    # On SIGTERM /readyz answers 503 at once, and the API keeps serving this long before it stops, so
    # that a load balancer checking readiness moves traffic away first. Set it to its check interval.
    drain_s: float = 5.0
    # The request head, which uvicorn's httptools parser does not bound (issue 10 item 4; enforced by
    # adapters/http/protocol.py): request line and headers of one request at most max_header_bytes
    # (16 KiB: h11's and Node.js's default), at most max_headers fields (Apache's default), else 431;
    # complete within header_timeout_s of its first byte, else 408. The connection is then closed. A
    # chunked body's trailer has the same limits, and a request answered before its body ended (a 401)
    # must end within header_timeout_s of the answer.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=16)
    header_timeout_s: float = Field(default=20.0, gt=0)


class IntakeSettings(_Section):
    """What one envelope may ask of the axis."""

    # Recipients (To) per document: each is a copy to store and deliver, so this bounds what one
    # request can make the axis do. A province has some hundreds of agencies; address a district or
    # the province as a unit instead of listing thousands of codes.
    max_recipients: int = Field(default=500, ge=1, le=100_000)
    # Copies times the envelope's size, what one envelope may put in RabbitMQ: 1 GiB is a 30 MB
    # dossier to 34 agencies, or an 8 KB letter to every recipient allowed.
    max_fanout_bytes: int = Field(default=1024**3, ge=1024 * 1024)


class StoreSettings(_Section):
    """The body store: every envelope the bus delivers, stored once in the status database
    (docs/data-path.md)."""

    # A copy that carries its envelope through RabbitMQ is one of at most inline_max_bytes, to at most
    # inline_max_recipients recipients; any other copy carries a reference to the body store (RabbitMQ
    # refuses messages over 128 MiB, and copies of a large envelope are what fill a broker).
    inline_max_bytes: int = Field(default=64 * 1024, ge=0, le=16 * 1024 * 1024)
    inline_max_recipients: int = Field(default=4, ge=0)
    # A body is deleted once every delivery, inbox entry, national-axis send and dead letter naming it
    # is final (done, fail, failed, dead-lettered and replayed, sent to the axis and confirmed) and
    # this long has passed since the last of them, and since it was stored; never before. A recipient
    # can fetch an envelope again for this long after acknowledging it.
    body_retention_days: float = Field(default=30.0, ge=1.0)
    # How often each node looks for bodies to delete, and how many it deletes per transaction.
    gc_interval_s: float = Field(default=600.0, gt=0)
    gc_batch: int = Field(default=100, ge=1, le=10_000)
    # Several gateways: the jobs that must run once (relay in, the reconciler, this collection) run in
    # the gateway holding their PostgreSQL lock; the others try to take it this often, so a dead
    # gateway's job moves within about this long (adapters/store/leadership.py).
    leader_check_s: float = Field(default=5.0, gt=0, le=300)


class NationalAxisSettings(_Section):
    """The link to the national axis (relay out and in). Without an ``endpoint`` there is no link:
    what is addressed outside the province waits in the outbound queue."""

    endpoint: str | None = None  # e.g. https://axis.example/vdxp/api (operations are appended)
    system_id: str | None = None  # this province's system at the axis; default: node.organ_id
    secret: SecretStr | None = None  # BUS_NATIONAL_AXIS__SECRET keeps it out of the file
    timeout_s: float = 30.0
    poll_interval_s: float = 10.0  # how often the axis is asked for what it holds for us
    # Back-off tiers of a temporary failure (milliseconds); after the last one, the dead-letter queue.
    retry_delays_ms: tuple[int, ...] = (5_000, 30_000, 300_000)
    # The circuit opens after this many temporary failures in a row, and probes every open_s.
    breaker_failures: int = 5
    breaker_open_s: float = 30.0
    prefetch: int = 8  # envelopes sent to the axis at the same time by one process
    # What the axis answered OK for must show in its sent list after this long, else it is sent again
    # (an axis that accepts and then loses); checked every reconcile_interval_s.
    reconcile_after_s: float = 300.0
    reconcile_interval_s: float = 60.0
    # Envelopes from other provinces and ministries: must they be signed, and by which CAs.
    require_signature: bool = True
    trust: tuple[Path, ...] = ()
    # Other axes (node OrganIds) whose signature vouches for senders of their own province: an
    # envelope not signed by its sender must be signed by one of these.
    trusted_axes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _usable(self) -> NationalAxisSettings:
        if self.endpoint is not None and (self.secret is None or not self.secret.get_secret_value()):
            raise ValueError("national_axis.endpoint is set but national_axis.secret is missing")
        if not self.retry_delays_ms or any(d <= 0 for d in self.retry_delays_ms):
            raise ValueError("national_axis.retry_delays_ms must list positive delays")
        return self


class CrlSourceSettings(_Section):
    """One CA's certificate revocation list (``[[revocation.crls]]``)."""

    # PEM file of the CA that issues the CRL: a CA of node.trust or national_axis.trust, or an
    # intermediate under one (its CRL covers what it issued). Relative to the configuration file.
    ca: Path
    # Where the CRL is: a file path (relative to the configuration file) or an http(s):// URL; DER or PEM.
    crl: str = Field(min_length=1)

    @field_validator("crl")
    @classmethod
    def _file_or_http(cls, value: str) -> str:
        if "://" in value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r}: a CRL is read from a file path or an http(s):// URL only")
        return value


class RevocationSettings(_Section):
    """Revocation of signers' certificates, checked against the CRLs of trusted CAs (issue 10).

    Applies to both trust stores (node.trust: agencies' CAs; national_axis.trust: other provinces' and
    ministries' CAs). With no CRL listed nothing is checked (start-up logs a warning per trusted CA).
    With at least one, every link of a chain must be checkable: a certificate whose issuer (a trusted
    CA or an intermediate) has no CRL listed has an unknown status, which ``on_unavailable`` decides."""

    crls: tuple[CrlSourceSettings, ...] = ()
    # When a listed CA's CRL is stale (past nextUpdate, not refreshed), unreachable or unusable:
    # "refuse" the signature, or "accept-and-flag" it (warning log line, bus_revocation_unchecked_total).
    # A certificate a CRL lists is refused either way.
    on_unavailable: Literal["refuse", "accept-and-flag"] = "refuse"
    # Start-up stops when a CA of node.trust or national_axis.trust has no CRL listed (intermediates are
    # known only when a chain passes them: their missing CRL is caught then, as an unknown status).
    require_for_every_ca: bool = False
    # A CRL is fetched again at its nextUpdate and at least this often (a CA may publish early after an
    # urgent revocation); a failed fetch is retried every retry_s.
    refresh_s: float = Field(default=3600.0, gt=0)
    retry_s: float = Field(default=60.0, gt=0)
    fetch_timeout_s: float = Field(default=10.0, gt=0)
    max_crl_bytes: int = Field(default=32 * 1024 * 1024, gt=0)


class Operator(_Section):
    """Someone who may log in to the operators' dashboard."""

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    # From `bus operator-password`: scrypt with a salt of its own (bus/passwords.py); never the password.
    password_hash: str

    @field_validator("password_hash")
    @classmethod
    def _a_hash(cls, value: str) -> str:
        parse_password_hash(value)  # ValueError names what is wrong
        return value

    @property
    def hash(self) -> PasswordHash:
        return parse_password_hash(self.password_hash)


class DashboardSettings(_Section):
    """The operators' web dashboard (mounted at ``/dashboard`` by ``bus serve``). Without operators it
    is not served; with operators a session secret is required (``BUS_DASHBOARD__SESSION_SECRET``)."""

    operators: tuple[Operator, ...] = ()
    # Signs the session cookies: whoever knows it can log in as anyone. Changing it logs everyone out.
    session_secret: SecretStr | None = None
    # A session ends this long after its login, whatever the operator does meanwhile.
    session_ttl_s: int = Field(default=8 * 3600, gt=0, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _usable(self) -> DashboardSettings:
        names = [o.username for o in self.operators]
        if len(set(names)) != len(names):
            raise ValueError("dashboard.operators lists a username more than once")
        if self.operators:
            secret = b"" if self.session_secret is None else self.session_secret.get_secret_value().encode()
            if len(secret) < MIN_SESSION_SECRET_BYTES:
                raise ValueError(
                    f"dashboard.session_secret must have at least {MIN_SESSION_SECRET_BYTES} bytes when "
                    "dashboard.operators is set (e.g. BUS_DASHBOARD__SESSION_SECRET=$(openssl rand -hex 32))"
                )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.operators)


class AuditSettings(_Section):
    """The audit log (docs/audit.md): checkpoints, time-stamps, retention."""

    # Off only to measure what the log costs (bench/bench_e2e.py --audit off): the records are the
    # evidence of every delivery.
    enabled: bool = True
    # A signed checkpoint every this many seconds (when any record was written), or sooner once this
    # many records are waiting: what is not yet under a checkpoint could be cut from a chain's end.
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    checkpoint_records: int = Field(default=10_000, ge=1)
    # An RFC 3161 time-stamping authority that stamps each checkpoint, and its CA certificate (PEM)
    # that the tokens it returns are checked against before they are kept.
    tsa_url: str | None = None
    tsa_ca: Path | None = None
    tsa_timeout_s: float = Field(default=10.0, gt=0)
    # Records older than this many days (0: kept forever) are written to a signed archive in
    # archive_dir, then removed from the database; each archive names the one before it.
    retention_days: int = Field(default=0, ge=0)
    archive_dir: Path | None = None

    @model_validator(mode="after")
    def _usable(self) -> AuditSettings:
        if self.tsa_url is not None and self.tsa_ca is None:
            raise ValueError("audit.tsa_url needs audit.tsa_ca: the TSA's CA certificate checks its tokens")
        if self.retention_days and self.archive_dir is None:
            raise ValueError(
                "audit.retention_days needs audit.archive_dir: old records are archived before removal"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BUS_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    province: str
    node: BusNode
    agencies: tuple[Agency, ...]
    amqp: AmqpSettings = AmqpSettings()
    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    intake: IntakeSettings = IntakeSettings()
    store: StoreSettings = StoreSettings()
    national_axis: NationalAxisSettings = NationalAxisSettings()
    dashboard: DashboardSettings = DashboardSettings()
    revocation: RevocationSettings = RevocationSettings()
    audit: AuditSettings = AuditSettings()
    # Agencies' API secrets kept out of the file: BUS_AGENCY_SECRETS='{"000.00.01.H99": "..."}'.
    # A value here wins over an agency's ``secret`` in the file.
    agency_secrets: dict[str, SecretStr] = {}
    # RabbitMQ passwords of the AMQP agencies' broker users (`bus amqp-users`), kept out of the file:
    # BUS_AMQP_PASSWORDS='{"000.00.01.H99": "..."}'. Without one, an agency's API secret is its password.
    amqp_passwords: dict[str, SecretStr] = {}
    # Directory that relative paths in the file are read from (set by :func:`load_settings`).
    base_dir: Path = Path()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init values; the environment must win over it.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _no_demo_secrets_in_the_open(self) -> Settings:
        """The example files' secrets are public: a node listening beyond this machine refuses them."""
        if self.http.host in ("127.0.0.1", "::1", "localhost"):
            return self
        values = [self.secret_of(a) or b"" for a in self.agencies]
        for secret in (self.dashboard.session_secret, self.national_axis.secret):
            values.append(b"" if secret is None else secret.get_secret_value().encode())
        if any(v.startswith(b"demo-only") for v in values):
            raise ValueError(
                f"http.host is {self.http.host}, and a secret is still a published demo value "
                "(demo-only-…): set real secrets (BUS_AGENCY_SECRETS, BUS_DASHBOARD__SESSION_SECRET, "
                "BUS_NATIONAL_AXIS__SECRET) before listening beyond this machine"
            )
        return self

    @model_validator(mode="after")
    def _strong_secrets(self) -> Settings:
        for agency in self.agencies:
            secret = self.secret_of(agency)
            if secret is not None and len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"the API secret of {agency.organ_id} has {len(secret)} bytes; at least "
                    f"{MIN_SECRET_BYTES} are required (an empty or short secret lets anyone sign as it)"
                )
        return self

    @property
    def topology(self) -> Topology:
        return Topology(province=self.province, node=self.node, agencies=self.agencies)

    def secret_of(self, agency: Agency) -> bytes | None:
        override = self.agency_secrets.get(str(agency.organ_id))
        secret = override if override is not None else agency.secret
        return None if secret is None else secret.get_secret_value().encode("utf-8")

    def path(self, value: Path) -> Path:
        """*value* from the file, resolved against the file's directory."""
        return value if value.is_absolute() else self.base_dir / value


def load_settings(path: Path) -> Settings:
    """Read *path* (TOML) and the environment; :class:`ConfigError` names the field and the reason."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from exc
    try:
        data.setdefault("base_dir", path.parent)
        settings = Settings(**data)
        settings.topology  # noqa: B018 - the topology's own checks (parents, aliases) run at start-up
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"configuration {path} is invalid: {reasons}") from exc
    return settings


def load_topology(path: Path) -> Topology:
    """The topology part of a configuration file (the development PKI needs no more)."""
    return load_settings(path).topology
