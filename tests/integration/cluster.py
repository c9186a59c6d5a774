"""The local three-node RabbitMQ cluster of scripts/cluster.sh, for tests that lose a broker node.

The nodes rq1, rq2 and rq3 @localhost listen on 127.0.0.1:5681..5683, beside the system broker on
5672. Starting them costs 15-20 s cold, about 1 s when they already run, so a test module starts
them once and never stops them (other modules reuse the running cluster)::

    @pytest.fixture(scope="module")
    def cluster_urls() -> list[str]:
        return start_cluster()

A test that kills or stops a node puts it back (:func:`restart_node`) before it ends, in a ``finally``.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from tests.conftest import ROOT

__all__ = [
    "NODES",
    "ClusterError",
    "amqp_url",
    "kill_node",
    "node_name",
    "queue_leader",
    "restart_node",
    "running_nodes",
    "start_cluster",
    "stop_node",
]

SCRIPT = ROOT / "scripts" / "cluster.sh"
NODES = (1, 2, 3)
URL_PREFIX = "BUS_CLUSTER_NODE="
_SUDO = [] if os.geteuid() == 0 else ["sudo"]


class ClusterError(RuntimeError):
    """scripts/cluster.sh or rabbitmqctl failed; the message carries its output."""


def node_name(n: int) -> str:
    return f"rq{n}@localhost"


def amqp_url(n: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{5680 + n}/"


def _node_number(name: str) -> int:
    for n in NODES:
        if name == node_name(n):
            return n
    raise ClusterError(f"{name!r} is not a node of the local cluster")


def _script(*args: str, timeout: float = 300) -> str:
    """Run scripts/cluster.sh *args*; its stdout. Its stderr (the ``==>`` lines) is kept in the error."""
    try:
        done = subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"scripts/cluster.sh {' '.join(args)} took more than {timeout} s") from exc
    if done.returncode != 0:
        raise ClusterError(
            f"scripts/cluster.sh {' '.join(args)} exited with {done.returncode}:\n{done.stderr}{done.stdout}"
        )
    return done.stdout


def _ctl(n: int, *args: str, timeout: float = 60) -> Any:
    """``rabbitmqctl -n rqN@localhost ARGS --formatter json``, decoded."""
    cmd = [*_SUDO, "rabbitmqctl", "-q", "-n", node_name(n), *args, "--formatter", "json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{' '.join(cmd)} took more than {timeout} s") from exc
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stderr}{done.stdout}")
    return json.loads(done.stdout)


def start_cluster() -> list[str]:
    """Start what is down of the cluster (idempotent) and return the AMQP URLs of nodes 1, 2, 3."""
    out = _script("start")
    urls = [line.removeprefix(URL_PREFIX) for line in out.splitlines() if line.startswith(URL_PREFIX)]
    if len(urls) != len(NODES):
        raise ClusterError(f"scripts/cluster.sh start printed {len(urls)} URLs, not {len(NODES)}:\n{out}")
    return urls


def kill_node(n: int) -> None:
    """SIGKILL node *n*'s Erlang VM: the machine dies, nothing is flushed or handed over."""
    _script("kill", str(n), timeout=30)


def restart_node(n: int) -> None:
    """Start node *n* again and wait until it runs and is back in the cluster."""
    _script("restart", str(n))


def stop_node(n: int) -> None:
    """Stop node *n* gracefully (``rabbitmqctl stop``) and wait until its VM has exited."""
    _script("stop-node", str(n), timeout=90)


def _first_answering(*args: str) -> Any:
    """The answer of the first node (1, 2, 3) that answers: any node knows the whole cluster."""
    errors = []
    for n in NODES:
        try:
            return _ctl(n, *args)
        except ClusterError as exc:
            errors.append(str(exc))
    raise ClusterError("no node of the cluster answers:\n" + "\n".join(errors))


def running_nodes() -> list[int]:
    """The running nodes (as numbers, sorted) as the first answering node sees them."""
    status = _first_answering("cluster_status")
    return sorted(_node_number(name) for name in status["running_nodes"])


def queue_leader(queue: str, vhost: str = "/") -> int:
    """The node that leads the quorum queue *queue* (its Raft leader), as a number 1..3."""
    rows = _first_answering("list_queues", "-p", vhost, "name", "type", "leader")
    for row in rows:
        if row["name"] == queue:
            if row.get("type") != "quorum":
                raise ClusterError(f"queue {queue!r} is a {row.get('type')} queue, not a quorum queue")
            return _node_number(str(row["leader"]))
    raise ClusterError(f"no queue {queue!r} in vhost {vhost!r}")
