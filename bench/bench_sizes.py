"""Any size in bounded memory (issue 12, item 2): peak RSS growth of ``bus serve`` and of the client
commands for one envelope of 1, 10, 30 and 100 MB, pushed, delivered and fetched end to end.

Not a test. Run ``.venv/bin/python -m bench.bench_sizes`` (RabbitMQ and PostgreSQL up:
scripts/services.sh) and copy the table into docs/performance.md. ``--smoke`` runs 1 and 2 MB only
(tests/integration/test_bench_smoke.py). It deletes its queues, exchanges, database and files when it
ends, fails or is interrupted.

Each envelope is a scanned dossier: a signed document (the province must sign) whose attachment is
base64 of random bytes. For each size, in turn:

* (a first 1 MB envelope goes through every path unreported: imports, caches, connection pools);
* the bus process's peak RSS is reset (``/proc/PID/clear_refs``, then ``VmHWM`` is its current RSS);
* ``bus send`` pushes the envelope (a child process, measured the same way from inside it); the bus
  accepts it, validates, verifies, seals (trace and signature) and stores it, and publishes the copy;
* the recipient's inbox worker takes the copy; ``bus inbox --fetch DIR --ack done`` fetches it;
* growth = ``VmHWM`` after the step, less the RSS when the peak was reset, for the bus (over send,
  delivery and fetch) and for each client command. The fetched file must be the envelope the bus
  delivered (its digest is checked by the client against the bus's ``X-Bus-Body-SHA256``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from adapters.http.client import AgencyClient
from bus.dsig import load_certificates, load_private_key, sign_tree
from bus.pki import init_pki
from bus.settings import load_settings
from bus.spooled import Received, write_envelope
from bus.xmlparse import parse_received
from tests.factory import make_document
from tests.integration.conftest import delete_broker_objects, fresh_database, write_config
from tests.integration.processes import ServeProcess, free_port

PROVINCE = "000.00.00.H99"
RECIPIENT = "000.00.21.H99"
MB = 1024 * 1024
# Runs a `bus` command in this process after resetting its peak RSS, then prints the growth on stderr.
_MEASURED = """
import sys
from entrypoints.cli import main

def field(name):
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith(name + ":"))

with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")
base = field("VmRSS")
try:
    code = main(sys.argv[1:])
finally:
    print(f"PEAK-GROWTH {field('VmHWM') - base}", file=sys.stderr, flush=True)
sys.exit(code)
"""


@dataclass
class Row:
    size: int
    bus_growth: int
    send_growth: int
    fetch_growth: int
    send_s: float
    fetch_s: float


def _status(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(name + ":"))


def _reset_peak(pid: int) -> int:
    """Reset *pid*'s peak RSS to its current RSS, which is returned."""
    with open(f"/proc/{pid}/clear_refs", "w") as reset:
        reset.write("5")
    return _status(pid, "VmRSS")


def _dossier(pki: Path, size: int, out: Path, number: int) -> int:
    """A signed envelope with an attachment of about *size* bytes, written to *out*; its size."""
    key = load_private_key(pki / "nodes" / f"{PROVINCE}.key")
    [certificate] = load_certificates(pki / "nodes" / f"{PROVINCE}.pem")
    data = make_document(PROVINCE, [RECIPIENT], number, notation=f"HS-{uuid.uuid4().hex[:6]}", padding=size)
    received = Received.of_bytes(data)
    del data
    tree, texts = parse_received(received)
    with texts.active(), out.open("wb") as file:
        sign_tree(tree, key, certificate)
        return write_envelope(tree, file).size


def _bus_command(config: Path, url: str, *args: str) -> tuple[int, float]:
    """Run ``bus ARGS`` as a measured child; its peak RSS growth and its duration."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args, "--config", str(config), "--url", url],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"bus {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    growth = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK-GROWTH"))
    return growth, seconds


async def _arrived(url: str, within_s: float = 300) -> None:
    async with AgencyClient(url, RECIPIENT, f"demo-only-{RECIPIENT}".encode(), timeout=30) as client:
        deadline = time.monotonic() + within_s
        while not await client.inbox():
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing in the inbox of {RECIPIENT} after {within_s} s")
            await asyncio.sleep(0.2)


async def one_size(server: ServeProcess, config: Path, pki: Path, work: Path, size_mb: int, n: int) -> Row:
    envelope = work / f"dossier-{n}.edxml"
    size = _dossier(pki, size_mb * MB, envelope, n)
    fetched = work / f"fetched-{n}"
    fetched.mkdir()
    assert server.process is not None
    pid = server.process.pid
    base = _reset_peak(pid)
    try:
        send_growth, send_s = await asyncio.to_thread(
            _bus_command, config, server.url, "send", "--as", PROVINCE, str(envelope)
        )
        await _arrived(server.url)
        fetch = ("inbox", "--as", RECIPIENT, "--fetch", str(fetched), "--ack", "done")
        fetch_growth, fetch_s = await asyncio.to_thread(_bus_command, config, server.url, *fetch)
        bus_growth = _status(pid, "VmHWM") - base
        [got] = list(fetched.iterdir())
        if got.stat().st_size < size:
            raise RuntimeError(f"fetched {got.stat().st_size} bytes, sent {size}: not the sealed envelope")
    finally:
        envelope.unlink(missing_ok=True)
        for leftover in fetched.iterdir():
            leftover.unlink()
        fetched.rmdir()
    print(f"  {size_mb} MB: bus +{bus_growth / MB:.0f} MB", file=sys.stderr, flush=True)
    return Row(size, bus_growth, send_growth, fetch_growth, send_s, fetch_s)


async def main(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp:
        work = Path(tmp)
        pki = work / "pki"
        async with fresh_database(args.database, work) as url:
            config = write_config(
                work / "province.toml", pki, prefix=f"bench-{uuid.uuid4().hex[:8]}", database_url=url
            )
            settings = load_settings(config)
            init_pki(settings.topology, pki, progress=lambda _line: None)
            server = ServeProcess(config, free_port(), work / "serve.log")
            try:
                server.start()
                await server.wait_ready()
                # A first envelope through every path (imports, caches, pools), not reported.
                await one_size(server, config, pki, work, 1, 0)
                return [
                    await one_size(server, config, pki, work, size_mb, n)
                    for n, size_mb in enumerate(args.sizes, start=1)
                ]
            finally:
                server.stop()
                await delete_broker_objects(settings)


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\n{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python "
        f"{sys.version.split()[0]}, store {args.database}, one bus serve process; peak RSS growth in MiB "
        "and as a multiple of the envelope's size\n"
    )
    print(
        "| envelope | bytes | bus serve: push, deliver, fetch | bus send | bus inbox --fetch | "
        "send s | fetch s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:

        def cell(growth: int, size: int = row.size) -> str:
            return f"{growth / MB:.1f} ({growth / size:.2f}x)"

        growths = " | ".join(cell(g) for g in (row.bus_growth, row.send_growth, row.fetch_growth))
        times = f"{row.send_s:.1f} | {row.fetch_s:.1f}"
        print(f"| {round(row.size / MB)} MB | {row.size:,} | {growths} | {times} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 30, 100], help="envelope sizes, MB")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--smoke", action="store_true", help="1 and 2 MB: checks that the benchmark runs")
    arguments = parser.parse_args()
    if arguments.smoke:
        arguments.sizes = [1, 2]
    report(asyncio.run(main(arguments)), arguments)
