"""Every script in bench/ still runs, and leaves nothing behind (issue 10).

``bench/bench_e2e.py`` stopped starting (its ``bus serve`` could not read a CA file) and nothing
noticed: a benchmark that cannot run is a defect. Each script runs once as
``python -m bench.NAME --smoke`` (a handful of envelopes, one round) against the real RabbitMQ and
PostgreSQL; it must exit 0, print its result table, and delete the queues, exchanges, broker users,
databases and files it made. No figure is asserted: a smoke run's timings on two shared cores mean nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import asyncpg
import pytest

from tests.conftest import ROOT
from tests.integration.conftest import PG_ADMIN_DSN

BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py")
RUN_LIMIT_S = 120


def test_bench_folder_has_scripts() -> None:
    assert BENCHES, "bench/ holds no script: the smoke run below would prove nothing"


def _rabbitmqctl_names(kind: str) -> set[str]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not on PATH (it lists what a benchmark left): run scripts/services.sh")
    columns = [] if kind == "users" else ["name"]  # list_users takes no columns: name, then tags
    command = ["rabbitmqctl", "-q", f"list_{kind}", *columns]
    listed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return {line.split("\t")[0] for line in listed.stdout.splitlines() if line.startswith("bench")}


async def _bench_databases() -> set[str]:
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        rows = await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE '%bench%'")
    finally:
        await admin.close()
    return {row["datname"] for row in rows}


def _leftovers() -> set[str]:
    """Queues, exchanges, broker users and databases with a benchmark's name (the benches name theirs
    bench…; an AMQP agency's user is ``<prefix>.<OrganId>``)."""
    return (
        {f"queue {n}" for n in _rabbitmqctl_names("queues")}
        | {f"exchange {n}" for n in _rabbitmqctl_names("exchanges")}
        | {f"user {n}" for n in _rabbitmqctl_names("users")}
        | {f"database {n}" for n in asyncio.run(_bench_databases())}
    )


def _start(name: str, tmp: Path) -> subprocess.Popen[str]:
    tmp.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", "--smoke"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], within_s: float) -> tuple[str, str]:
    """Wait for the bench; past *within_s*, interrupt it (SIGINT: it cleans up) and fail."""
    try:
        return process.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        pytest.fail(f"still running after {within_s} s; interrupted.\nstdout:\n{out}\nstderr:\n{err}")


def _tables(stdout: str) -> list[list[list[str]]]:
    """The Markdown tables of *stdout*: each a list of rows (header first), each a list of cells."""
    tables: list[list[list[str]]] = []
    lines = stdout.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("|---"):
            rows = [line]
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(row)
            tables.append([[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows])
    return tables


@pytest.mark.parametrize("name", BENCHES)
def test_bench_runs(name: str, tmp_path: Path) -> None:
    before = _leftovers()
    with _start(name, tmp_path / "tmp") as process:
        out, err = _finish(process, RUN_LIMIT_S)
    assert process.returncode == 0, f"bench.{name} --smoke exited {process.returncode}:\n{out}\n{err}"
    tables = _tables(out)
    assert tables, f"bench.{name} printed no result table:\n{out}"
    for header, *rows in tables:
        assert rows, f"bench.{name}: a table with no result row under {header}:\n{out}"
        for row in rows:
            assert len(row) == len(header), f"bench.{name}: row {row} does not fit {header}"
            assert all(row), f"bench.{name}: an empty cell in {row}"
    assert _leftovers() - before == set(), f"bench.{name} left these behind"
    assert list((tmp_path / "tmp").iterdir()) == [], f"bench.{name} left files in its TMPDIR"


def _pump(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def test_interrupted_e2e_bench_cleans_up(tmp_path: Path) -> None:
    """SIGINT (``timeout -s INT``, Ctrl-C) once ``bus serve`` runs and the warm-up is through: the
    bench stops its servers and deletes its queues, exchanges, broker users, database and files."""
    before = _leftovers()
    with _start("bench_e2e", tmp_path / "tmp") as process:
        assert process.stderr is not None
        progress: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stderr, progress), daemon=True)
        reader.start()
        seen = ""
        deadline = time.monotonic() + RUN_LIMIT_S
        while "warm-up:" not in seen:  # the first progress line: servers up, envelopes through
            assert process.poll() is None, f"bench_e2e ended before its warm-up was through:\n{seen}"
            assert time.monotonic() < deadline, f"no warm-up after {RUN_LIMIT_S} s:\n{seen}"
            with contextlib.suppress(queue.Empty):
                seen += progress.get(timeout=1)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("bench_e2e did not stop within 60 s of SIGINT")
        reader.join(timeout=10)
        while not progress.empty():
            seen += progress.get_nowait()
    assert process.returncode != 0, "interrupted, yet it exited 0"
    assert _leftovers() - before == set(), f"interrupted bench_e2e left these behind:\n{seen}"
    assert list((tmp_path / "tmp").iterdir()) == [], "interrupted bench_e2e left files in its TMPDIR"
