"""Fetching CRLs and keeping them fresh, in the background of a running node (issue 10).

The node loads every configured CRL at start-up (:meth:`CrlRefresher.start`, bounded by the fetch
timeout), then a task refreshes each one when it is due: at its ``nextUpdate``, and at least every
``refresh_s`` (a CA publishes a new CRL early after an urgent revocation). A failed attempt is retried
every ``retry_s``; meanwhile the CRL held so far stays in use until its ``nextUpdate``, after which the
deployment's policy decides (:class:`bus.dsig.revocation.RevocationPolicy`).

Downloads are asynchronous (httpx) and bounded in time and size; parsing and checking a CRL (its
signature, every entry) runs in a worker thread. Envelope verification never waits for any of it: it
reads what :class:`bus.dsig.revocation.CrlRegistry` holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import httpx
import structlog

from bus.dsig.revocation import CrlRegistry, CrlSource, load_crl
from bus.errors import CrlFetchError, CrlUnusableError

__all__ = ["CrlFetchError", "CrlRefresher", "fetch_crl"]

log = structlog.get_logger("bus.dsig.crl_refresh")

_MAX_REDIRECTS = 3
_IDLE_S = 60.0  # the loop looks again at least this often (a clock change, a new failure)


async def fetch_crl(
    source: CrlSource, client: httpx.AsyncClient, *, timeout_s: float, max_bytes: int
) -> bytes:
    """The bytes of *source*'s CRL, from its URL or file; :class:`CrlFetchError` says why not."""
    if not source.is_url:
        return await asyncio.to_thread(_read_file, Path(source.location), max_bytes)
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("GET", source.location) as response:
                if response.status_code != httpx.codes.OK:
                    raise CrlFetchError(f"{source.location} answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise CrlFetchError(f"{source.location} sent more than {max_bytes} bytes")
                return bytes(body)
    except TimeoutError as exc:
        raise CrlFetchError(f"{source.location} did not answer within {timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise CrlFetchError(f"{source.location} cannot be fetched: {type(exc).__name__}: {exc}") from exc


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise CrlFetchError(f"{path} cannot be read: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise CrlFetchError(f"{path} has more than {max_bytes} bytes")
    return data


class CrlRefresher:
    """Loads the CRLs of a :class:`CrlRegistry` and refreshes them while the node runs."""

    def __init__(
        self,
        registry: CrlRegistry,
        *,
        refresh_s: float = 3600.0,
        retry_s: float = 60.0,
        timeout_s: float = 10.0,
        max_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.registry = registry
        self.refresh_s, self.retry_s, self.timeout_s, self.max_bytes = (
            refresh_s,
            retry_s,
            timeout_s,
            max_bytes,
        )
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0  # downloads attempted since start-up

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s, follow_redirects=True, max_redirects=_MAX_REDIRECTS
            )
        return self._client

    def due(self, source: CrlSource) -> dt.datetime:
        """When *source* should be fetched next."""
        status = self.registry.status(source)
        if status.attempted_at is None:
            return dt.datetime.min.replace(tzinfo=dt.UTC)
        if status.crl is None or status.error is not None or status.loaded_at is None:
            return status.attempted_at + dt.timedelta(seconds=self.retry_s)
        return min(status.crl.next_update, status.loaded_at + dt.timedelta(seconds=self.refresh_s))

    async def refresh(self, source: CrlSource) -> bool:
        """Fetch, check and install *source*'s CRL now; False (logged, recorded) when that failed."""
        self.fetches += 1
        try:
            data = await fetch_crl(source, self._http(), timeout_s=self.timeout_s, max_bytes=self.max_bytes)
            now = self._clock()
            crl = await asyncio.to_thread(load_crl, data, source.ca, now=now, origin=source.location)
            changed = self.registry.install(source, crl, now)
        except (CrlFetchError, CrlUnusableError) as exc:
            self.registry.failed(source, str(exc), self._clock())
            log.error("crl.refresh_failed", ca=source.ca_name, source=source.location, reason=str(exc))
            return False
        if changed:
            log.info(
                "crl.loaded",
                ca=source.ca_name,
                source=source.location,
                this_update=crl.this_update.isoformat(),
                next_update=crl.next_update.isoformat(),
                revoked=len(crl.revoked),
            )
        return True

    async def refresh_due(self) -> int:
        """Refresh every source that is due now, concurrently; how many were attempted."""
        now = self._clock()
        sources = [s for s in self.registry.sources if self.due(s) <= now]
        await asyncio.gather(*(self.refresh(s) for s in sources))
        return len(sources)

    async def start(self) -> None:
        """Load every CRL once (bounded by the timeout), then keep them fresh in a background task."""
        await self.refresh_due()
        self._task = asyncio.create_task(self._run(), name="crl-refresher")

    async def _run(self) -> None:
        while True:
            now = self._clock()
            wake = min((self.due(s) for s in self.registry.sources), default=now)
            await asyncio.sleep(min(max((wake - now).total_seconds(), 1.0), _IDLE_S))
            try:
                await self.refresh_due()
            except Exception:  # a bug here must not end revocation checking silently: logged, retried
                log.exception("crl.refresher_error")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
