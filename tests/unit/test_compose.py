"""docker-compose.yml and the Dockerfile describe the production shape (issue 14 item 5).

No Docker engine runs here, so nothing is built or started: Debian's ``docker-compose`` (1.29, from
apt; scripts/setup.sh installs it) checks and resolves the file with ``config``, and these tests read
what it resolved: three RabbitMQ nodes that form one cluster, PostgreSQL, two gateways built from the
Dockerfile that wait for all of them and report ready on ``/readyz``, and the mock national axis. The
Dockerfile is read as text: an unprivileged user, the schemas copied in, a HEALTHCHECK on ``/readyz``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bus.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
RABBITS = ("rabbit1", "rabbit2", "rabbit3")
IMAGE_CONFIG = "/app/config/"  # where the Dockerfile puts config/
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a service in a container must listen on


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """``docker-compose config``: the file as compose resolves it (anchors merged, variables set)."""
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail(
            "docker-compose is not on PATH: this test checks docker-compose.yml with it. Install "
            "Debian's package (apt-get install -y docker-compose), as scripts/setup.sh does."
        )
    done = subprocess.run(
        [executable, "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"docker-compose config refused docker-compose.yml:\n{done.stderr}"
    try:
        yaml = importlib.import_module("yaml")  # PyYAML; untyped, hence not a plain import
    except ImportError:
        pytest.fail("PyYAML is not installed in the virtualenv: pip install -e '.[dev]' brings it")
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def gateways(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in services.items() if name.startswith("gateway")}


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _instructions(keyword: str) -> list[str]:
    return [line for line in _dockerfile() if line.split()[0].upper() == keyword]


def _health_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def _amqp_nodes(service: dict[str, Any]) -> list[str]:
    nodes: list[str] = json.loads(service["environment"]["BUS_AMQP__NODES"])
    return nodes


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume: compose 1.x writes "source:target:mode", 2.x a map."""
    found = []
    for mount in service.get("volumes", []):
        if isinstance(mount, dict):
            found.append((str(mount["source"]), str(mount["target"]), bool(mount.get("read_only"))))
        else:
            source, target, *mode = str(mount).split(":")
            found.append((source, target, mode == ["ro"]))
    return found


def _host_of(url: str) -> str:
    return url.split("@", 1)[-1].split(":", 1)[0]


# -- the services --------------------------------------------------------------------------------------


def test_the_file_has_the_production_shape(
    services: dict[str, dict[str, Any]], gateways: dict[str, dict[str, Any]]
) -> None:
    for name in (*RABBITS, "postgres", "mock-axis"):
        assert name in services, f"docker-compose.yml has no {name} service"
    assert len(gateways) == 2, f"two gateway services expected, found {sorted(gateways)}"


def test_the_rabbitmq_nodes_form_one_cluster(services: dict[str, dict[str, Any]]) -> None:
    conf = (ROOT / "config/rabbitmq-cluster/rabbitmq.conf").read_text(encoding="utf-8")
    settings = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in conf.splitlines())
        if key.strip() and not key.lstrip().startswith("#")
    )
    assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = {value for key, value in settings.items() if key.startswith("cluster_formation.classic_config.")}
    assert listed == {f"rabbit@{name}" for name in RABBITS}

    cookies = set()
    data: list[str] = []
    for name in RABBITS:
        node = services[name]
        assert re.fullmatch(r"rabbitmq:3\.\d+(\.\d+)?-management", node["image"]), node["image"]
        # The node is rabbit@<hostname>: the name the other nodes look for.
        assert node["hostname"] == name
        mounts = _mounts(node)
        conf_mount = (
            str(ROOT / "config/rabbitmq-cluster/rabbitmq.conf"),
            "/etc/rabbitmq/conf.d/30-cluster.conf",
        )
        assert (*conf_mount, True) in mounts, mounts
        volumes = [source for source, target, _ in mounts if target == "/var/lib/rabbitmq"]
        assert len(volumes) == 1, f"{name}: one data volume expected, found {volumes}"
        assert not volumes[0].startswith("/"), f"{name} keeps its data in a named volume"
        data.append(volumes[0])
        assert "rabbitmq-diagnostics" in _health_command(node)
        cookies.add(node["environment"]["RABBITMQ_ERLANG_COOKIE"])
    assert len(cookies) == 1, "the three nodes must share one Erlang cookie"
    assert "" not in cookies
    assert len(set(data)) == len(RABBITS), f"each node needs its own data volume: {data}"


def test_postgres_has_a_volume_and_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert any(target == "/var/lib/postgresql/data" for _, target, _ in _mounts(postgres))
    assert "pg_isready" in _health_command(postgres)


def test_each_gateway_is_built_here_and_waits_for_the_cluster_and_the_database(
    gateways: dict[str, dict[str, Any]],
) -> None:
    for name, gateway in gateways.items():
        assert Path(gateway["build"]["context"]) == ROOT, f"{name} is not built from this repository"
        assert "/readyz" in _health_command(gateway), f"{name}'s healthcheck does not ask /readyz"
        depends = gateway["depends_on"]
        for needed in (*RABBITS, "postgres"):
            assert depends.get(needed, {}).get("condition") == "service_healthy", (
                f"{name} does not wait for {needed} to be healthy: {depends}"
            )
        command = gateway["command"]
        assert command[:2] == ["bus", "serve"], command
        config = command[command.index("--config") + 1]
        assert config.startswith(IMAGE_CONFIG), config
        assert (ROOT / "config" / config.removeprefix(IMAGE_CONFIG)).is_file(), f"{config} is not in config/"
        assert gateway["environment"]["BUS_DATABASE__URL"].startswith("postgresql+asyncpg://")
        assert _host_of(gateway["environment"]["BUS_DATABASE__URL"]).split("/")[0] == "postgres"


def test_the_gateways_spread_over_the_nodes_and_the_host_ports(gateways: dict[str, dict[str, Any]]) -> None:
    lists = {name: _amqp_nodes(gateway) for name, gateway in gateways.items()}
    for name, nodes in lists.items():
        assert sorted(_host_of(url) for url in nodes) == list(RABBITS), f"{name}: {nodes}"
    firsts = {_host_of(nodes[0]) for nodes in lists.values()}
    assert len(firsts) == len(gateways), f"each gateway must connect to another node first: {lists}"
    published = sorted(
        (int(port["published"]), int(port["target"])) for g in gateways.values() for port in g["ports"]
    )
    assert published == [(8080, 8080), (8081, 8080)], published


def test_the_gateways_settings_file_takes_the_compose_environment(
    gateways: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a gateway's `bus serve` reads at start: the image's file, overridden by its environment
    (secrets left unset, as compose leaves them without a value in the shell)."""
    for name, gateway in gateways.items():
        for variable in [v for v in os.environ if v.startswith("BUS_")]:
            monkeypatch.delenv(variable)
        for variable, value in gateway["environment"].items():
            if value is not None:
                monkeypatch.setenv(variable, value)
        config = gateway["command"][gateway["command"].index("--config") + 1]
        settings = load_settings(ROOT / "config" / config.removeprefix(IMAGE_CONFIG))
        assert settings.http.host == ALL_INTERFACES, f"{name} must listen beyond its container's loopback"
        assert settings.http.port == 8080
        amqp = settings.amqp.model_dump()
        assert [str(node) for node in amqp["nodes"]] == _amqp_nodes(gateway), name
        assert amqp["quorum_replicas"] == len(RABBITS)
        assert settings.database.url == gateway["environment"]["BUS_DATABASE__URL"]


def test_the_mock_axis_runs_from_the_same_image(
    services: dict[str, dict[str, Any]], gateways: dict[str, dict[str, Any]]
) -> None:
    mock = services["mock-axis"]
    assert "build" in mock, "the mock axis runs the bus's image (no pip install at start)"
    assert {mock["image"]} == {g["image"] for g in gateways.values()}
    assert mock["command"][:2] == ["bus", "mock-axis"]
    assert ALL_INTERFACES in mock["command"]


# -- the image -----------------------------------------------------------------------------------------


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = _instructions("USER")
    assert users, "the Dockerfile has no USER line: the bus would run as root"
    user = users[-1].split()[1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_the_image_carries_the_schemas_and_checks_readiness() -> None:
    copies = _instructions("COPY")
    assert any(re.search(r"\bschemas/?\s", line + " ") for line in copies), copies
    assert any(re.search(r"\bconfig/?\s", line + " ") for line in copies), copies
    health = _instructions("HEALTHCHECK")
    assert len(health) == 1, health
    assert "/readyz" in health[0], health
    assert any(line.split()[1:] == ["8080"] for line in _instructions("EXPOSE"))
    assert all(line.split()[1].startswith("python:3.11-slim") for line in _instructions("FROM"))


def test_no_secret_or_key_enters_the_image() -> None:
    for line in _instructions("ENV") + _instructions("ARG"):
        assert not re.search(r"SECRET|PASSWORD|PASS\b|TOKEN|COOKIE", line, re.IGNORECASE), line
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for pattern in (".git", ".venv", "demo-out", "**/*.key", "pki", ".env"):
        assert pattern in ignored, f".dockerignore does not keep {pattern} out of the build context"
