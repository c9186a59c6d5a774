"""The agency API's contract holds under a fuzzer (issue 10 item 11).

schemathesis reads ``/v1/openapi.json`` from a real ``bus serve`` (uvicorn and httptools, as in
production; PostgreSQL and the real RabbitMQ) and sends what it generates from it: examples, the
coverage phase's boundary and negative values, random fuzzing, and stateful sequences that follow the
document's links (an inbox page's item to its fetch and acknowledgement, a sent document to its
timeline). Every request is signed by ``tests/integration/fuzz_signing.py``, so the fuzzer gets past
authentication to the handlers; the test holds it to that by counting the answers that are not 401.

Every check of schemathesis runs (``--checks all``): no 5xx; status codes, content types, bodies and
headers as documented; schema-violating input refused and schema-valid input accepted; 405 with
``Allow`` for a method a path lacks; credentials enforced. The one allowance is in
``schemathesis.toml`` beside this file (an envelope is XML that JSON Schema cannot describe).

Bounded: ``MAX_EXAMPLES`` cases per operation and phase and a fixed seed (about 600 requests, 20-30 s
of fuzzing on a 2-core machine), and the run is killed and fails after ``RUN_LIMIT_S``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from adapters.http.client import AgencyClient
from bus.settings import load_settings
from tests.conftest import ROOT
from tests.factory import make_document
from tests.integration.conftest import delete_broker_objects, fresh_database, write_config
from tests.integration.processes import ServeProcess, free_port

pytestmark = pytest.mark.asyncio

AGENCY = "000.00.01.H99"  # the fuzzer signs as Sở Nội vụ
DISTRICT = "000.00.21.H99"
MAX_EXAMPLES = 100
SEED = 20261201
RUN_LIMIT_S = 120.0
CONFIG = Path(__file__).with_name("schemathesis.toml")
# What each operation is answered, from the HAR report: (method, templated path) -> status counts.
_TEMPLATES = [
    (re.compile(r"^/v1/inbox/[^/]+/ack$"), "/v1/inbox/{item_id}/ack"),
    (re.compile(r"^/v1/inbox/[^/]+$"), "/v1/inbox/{item_id}"),
    (re.compile(r"^/v1/documents/.+$"), "/v1/documents/{bus_id}"),
]
SIGNED_OPERATIONS = {
    ("POST", "/v1/envelopes"),
    ("GET", "/v1/inbox"),
    ("GET", "/v1/inbox/{item_id}"),
    ("POST", "/v1/inbox/{item_id}/ack"),
    ("GET", "/v1/sent"),
    ("GET", "/v1/documents/{bus_id}"),
    ("GET", "/v1/agencies"),
}


def _operation(method: str, url: str) -> tuple[str, str]:
    path = re.sub(r"^https?://[^/]+", "", url).split("?", 1)[0]
    for pattern, template in _TEMPLATES:
        if pattern.match(path):
            return method, template
    return method, path


async def _seed(url: str) -> None:
    """Something for the handlers to find: envelopes in the fuzzing agency's inbox (the links of
    GET /v1/inbox lead to their fetch and acknowledgement) and documents it sent."""
    async with (
        AgencyClient(url, DISTRICT, f"demo-only-{DISTRICT}".encode()) as district,
        AgencyClient(url, AGENCY, f"demo-only-{AGENCY}".encode()) as agency,
    ):
        for number in range(1, 6):
            await district.send(make_document(DISTRICT, [AGENCY], 900 + number))
            await agency.send(make_document(AGENCY, [DISTRICT], 950 + number))
        deadline = time.monotonic() + 15
        while len(await agency.inbox()) < 5:
            assert time.monotonic() < deadline, "the seeded envelopes never reached the inbox"
            await asyncio.sleep(0.1)


async def test_the_api_holds_its_published_contract_under_a_fuzzer(tmp_path: Path, pki_dir: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as database_url:
        config = write_config(
            tmp_path / "province.toml",
            pki_dir,
            prefix=f"test-{uuid.uuid4().hex[:10]}",
            database_url=database_url,
        )
        serve = ServeProcess(config, free_port(), tmp_path / "serve.log")
        serve.start()
        try:
            await serve.wait_ready()
            await _seed(serve.url)
            started = time.monotonic()
            returncode, output = await _run_schemathesis(serve.url, tmp_path)
            elapsed = time.monotonic() - started
        finally:
            serve.stop()
            await delete_broker_objects(load_settings(config))

    hars = list((tmp_path / "report").glob("har-*.json"))
    assert len(hars) == 1, f"schemathesis wrote no HAR report:\n{output[-20_000:]}"
    [har] = hars
    entries = json.loads(har.read_text(encoding="utf-8"))["log"]["entries"]
    answers: Counter[tuple[str, str, int]] = Counter(
        (*_operation(e["request"]["method"], e["request"]["url"]), e["response"]["status"]) for e in entries
    )
    # Which requests the hook signed (schemathesis also sends probes without credentials, to check
    # that they are refused: its ignored_auth check and the coverage phase's missing-auth cases).
    signed_statuses = Counter(
        e["response"]["status"]
        for e in entries
        if any(h["name"].lower() == "x-bus-agency" for h in e["request"]["headers"])
    )
    figures = _figures(answers, elapsed)
    print(figures)  # for docs/security.md: run with -s to see them
    assert returncode == 0, f"schemathesis found problems:\n{output[-20_000:]}\n{figures}"
    assert not serve.events("api.internal_error"), "the node logged an internal error"
    assert not [k for k in answers if k[2] >= 500], "a 5xx answered (schemathesis should have failed)"

    # The signing hook works: no signed request was refused as unauthentic, so every one reached its
    # handler; the 401s are the probes without credentials. And most requests were signed ones.
    total = sum(answers.values())
    assert total >= 1000, figures
    assert signed_statuses[401] == 0, f"{signed_statuses[401]} signed requests were refused\n{figures}"
    assert sum(signed_statuses.values()) / total > 0.6, figures
    for operation in SIGNED_OPERATIONS:
        reached = sum(n for (m, p, status), n in answers.items() if (m, p) == operation and status != 401)
        assert reached >= 5, f"{operation} was never served past authentication\n{figures}"
    # Past authentication into real data: seeded items fetched and acknowledged through the links.
    for operation in [("GET", "/v1/inbox/{item_id}"), ("POST", "/v1/inbox/{item_id}/ack")]:
        assert answers[(*operation, 200)] >= 1, f"{operation} never answered 200\n{figures}"


async def _run_schemathesis(url: str, workdir: Path) -> tuple[int, str]:
    """Run in *workdir* (schemathesis keeps a cache of crashes in its working directory), with the
    repository on the path for the hooks module."""
    st = Path(sys.executable).with_name("st")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "SCHEMATHESIS_HOOKS": "tests.integration.fuzz_signing",
        "BUS_FUZZ_AGENCY": AGENCY,
        "BUS_FUZZ_SECRET": f"demo-only-{AGENCY}",
        "NO_COLOR": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--report",
        "har",
        "--report-dir",
        str(workdir / "report"),
        "--no-color",
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), RUN_LIMIT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"schemathesis ran over {RUN_LIMIT_S} s")
    return process.returncode or 0, stdout.decode("utf-8", "replace")


def _figures(answers: Counter[tuple[str, str, int]], elapsed: float) -> str:
    total = sum(answers.values())
    lines = [f"schemathesis: {total} requests in {elapsed:.1f} s (seed {SEED}, {MAX_EXAMPLES} examples)"]
    documented = sorted({(m, p) for m, p, s in answers if s != 405})
    for method, path in documented:
        statuses = sorted((s, n) for (m, p, s), n in answers.items() if (m, p) == (method, path))
        lines.append(f"  {method} {path}: " + ", ".join(f"{s} x{n}" for s, n in statuses))
    probes = sum(n for (_, _, s), n in answers.items() if s == 405)
    lines.append(f"  undeclared methods (unsupported_method probes): 405 x{probes}")
    return "\n".join(lines)
