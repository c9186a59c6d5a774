"""End to end on the three-node RabbitMQ cluster beside the single node, in one run (issue 14, item 6).

Not a test. Run ``.venv/bin/python -m bench.bench_cluster`` (PostgreSQL and the system broker up:
scripts/services.sh; the cluster is started by ``scripts/cluster.sh start`` if it is not running).
Each round runs ``bench.bench_e2e`` twice, HTTP rows at *--in-flight* envelopes in flight with the raw
loop beside them: once on the system broker (one node), once with ``[amqp] nodes`` naming the three
cluster nodes (quorum queues of three members: every message is written on three nodes before its
confirm). Rounds alternate, so other load on the machine falls on both; the report gives the medians.
``--smoke`` runs one small round (tests/integration/test_bench_smoke.py: it must keep running).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SINGLE = "amqp://guest:guest@127.0.0.1:5672/"


def cluster_urls() -> list[str]:
    """``scripts/cluster.sh start`` (idempotent): the three nodes' URLs."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "cluster.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    urls = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("BUS_CLUSTER_NODE=")]
    if len(urls) != 3:
        raise RuntimeError(f"scripts/cluster.sh start gave {urls!r}")
    return urls


def one_round(nodes: list[str], envelopes: int, in_flight: int) -> dict[str, float]:
    """One bench_e2e run on *nodes*: the bus's and the raw loop's deliveries per second, p50 and p99."""
    env = {
        **os.environ,
        "BUS_TEST_AMQP_URL": nodes[0],
        "BUS_AMQP__URL": nodes[0],
        "BUS_AMQP__NODES": json.dumps(nodes),
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_e2e",
            "--rows",
            "http",
            "--in-flight",
            str(in_flight),
            "--repeat",
            "1",
            "--envelopes",
            str(envelopes),
            "--warm-up",
            "20",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"bench_e2e on {nodes[0]} exited {run.returncode}:\n{run.stderr[-3000:]}")
    figures: dict[str, float] = {}
    for line in run.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 7 or not re.match(r"\d", cells[1] or ""):
            continue
        kind = "raw" if cells[0].startswith("raw") else "bus"
        figures[f"{kind} deliveries/s"] = float(cells[4].split()[0])
        figures[f"{kind} p50 ms"] = float(cells[5])
        figures[f"{kind} p99 ms"] = float(cells[6])
    if "bus deliveries/s" not in figures:
        raise RuntimeError(f"no bus row in bench_e2e's report:\n{run.stdout[-3000:]}")
    return figures


def main(args: argparse.Namespace) -> None:
    cluster = cluster_urls()
    shapes = {"single node (system broker)": [SINGLE], "three-node cluster": cluster}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in shapes}
    for round_ in range(args.rounds):
        for name, nodes in shapes.items():
            print(f"  round {round_ + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            results[name].append(one_round(nodes, args.envelopes, args.in_flight))
    print(
        f"\nHTTP push + HTTP batch pull, 8 KB signed, {args.in_flight} in flight, {args.envelopes} "
        f"envelopes, median of {args.rounds}; the raw loop on the same broker beside each\n"
    )
    print("| broker | bus deliveries/s (all) | p50 ms | p99 ms | raw loop deliveries/s | bus / raw |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rounds in results.items():
        rates = sorted(r["bus deliveries/s"] for r in rounds)
        bus = statistics.median(rates)
        raw = statistics.median(r["raw deliveries/s"] for r in rounds)
        p50 = statistics.median(r["bus p50 ms"] for r in rounds)
        p99 = statistics.median(r["bus p99 ms"] for r in rounds)
        every = ", ".join(f"{r:.0f}" for r in rates)
        print(f"| {name} | {bus:.0f} ({every}) | {p50:.1f} | {p99:.1f} | {raw:.0f} | {bus / raw:.1%} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envelopes", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one small round: checks that it runs")
    arguments = parser.parse_args()
    if arguments.smoke:
        arguments.envelopes, arguments.in_flight, arguments.rounds = 8, 4, 1
    main(arguments)
