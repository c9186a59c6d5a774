"""Running the mock axis: a uvicorn server over its app and store, in-process or as ``bus mock-axis``."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import structlog
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bus.errors import ConfigError
from mock_axis.app import create_mock_app
from mock_axis.config import (
    AgencySeed,
    AxisSystem,
    MockAxisConfig,
    MockFaults,
    load_mock_config,
)
from mock_axis.store import MockAxisStore

__all__ = [
    "AgencySeed",
    "AxisSystem",
    "MockAxisConfig",
    "MockFaults",
    "RunningMockAxis",
    "create_mock_app",
    "load_mock_config",
    "serve_mock_axis",
]

STARTUP_TIMEOUT_S = 10.0

log = structlog.get_logger("bus.mock_axis")


@dataclass(frozen=True, slots=True)
class RunningMockAxis:
    """A mock listening at ``url``; ``faults`` switches its faults, ``store`` shows its state."""

    url: str
    port: int
    faults: MockFaults
    store: MockAxisStore
    config: MockAxisConfig


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (whoever embeds the mock owns SIGINT/SIGTERM), and
    with an event for "listening", so nobody polls ``started``."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: Sequence[socket.socket] | None = None) -> None:
        await super().startup(sockets=list(sockets) if sockets is not None else None)
        self.ready.set()


def _listen(host: str, port: int) -> socket.socket:
    """Bind before uvicorn does: a busy port becomes our ConfigError (uvicorn would sys.exit), and
    with port 0 the socket says which port the system picked."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"the mock axis cannot listen on {host}:{port}: {exc}") from exc
    return sock


def _loopback(host: str) -> bool:
    """True when every address *host* names is a loopback one (127.0.0.0/8, ::1): then only this
    machine can reach the mock. A name that does not resolve is not loopback."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {info[4][0] for info in found}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def _check_secrets(config: MockAxisConfig, host: str) -> None:
    """A secret under 16 bytes lets anyone who can reach the mock sign as its system. Integrators'
    fixtures carry such secrets (the protocol notes' example is ``s3cret``; issue 13), so on a
    loopback address the mock warns, naming each system, and starts; elsewhere it refuses."""
    weak = [(system.system_id, reason) for system in config.systems if (reason := system.weak_secret)]
    if not weak:
        return
    if not _loopback(host):
        reasons = "; ".join(reason for _, reason in weak)
        raise ConfigError(f"{reasons}: allowed on a loopback address only, not on {host}")
    for system_id, reason in weak:
        log.warning("mock_axis.weak_secret", system=system_id, reason=reason, host=host)


async def _open_store(url: str, config: MockAxisConfig) -> MockAxisStore:
    store = MockAxisStore.connect(url)
    try:
        await store.create_schema()
        for seed in config.agencies:
            fields = seed.model_dump(exclude={"pcode"})
            await store.register_agency(**fields, parent_code=seed.pcode, only_if_new=True)
    except (OSError, SQLAlchemyError) as exc:
        await store.close()
        safe = make_url(url).render_as_string(hide_password=True)
        raise ConfigError(f"cannot open the mock axis database {safe}: {exc}") from exc
    return store


@asynccontextmanager
async def serve_mock_axis(
    config: MockAxisConfig,
    database_url: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: MockFaults | None = None,
) -> AsyncIterator[RunningMockAxis]:
    """Run the mock in this event loop until the block ends (port 0: any free port, see ``url``).
    *database_url* overrides the configuration's ``database``. A secret under 16 bytes is allowed
    on a loopback *host* only (a warning per system); elsewhere :class:`ConfigError`."""
    _check_secrets(config, host)
    store = await _open_store(database_url or config.database, config)
    faults = faults if faults is not None else MockFaults()
    try:
        sock = _listen(host, port)
        app = create_mock_app(config, store, faults)
        server = _Server(
            uvicorn.Config(
                app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            ready = asyncio.create_task(server.ready.wait())
            await asyncio.wait([ready, task], timeout=STARTUP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not server.ready.is_set():
                raise ConfigError(f"the mock axis did not start listening on {host}:{port}")
            bound = sock.getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            yield RunningMockAxis(f"http://{shown}:{bound}", bound, faults, store, config)
        finally:
            server.should_exit = True
            await task
            sock.close()
    finally:
        await store.close()
