"""Routing decisions and hierarchy keys, on the example province (no broker involved)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.organ_id import OrganId
from bus.routing import DestinationKind, agency_key, binding_keys, group_key, route
from bus.settings import load_topology
from bus.topology import AgencyLevel, Topology
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "config" / "example-province.toml")


def test_local_agency_gets_its_own_key(topology: Topology) -> None:
    destination = route(topology, OrganId.parse("000.01.21.H99"))
    assert destination.kind is DestinationKind.LOCAL
    assert destination.routing_key == "org.H99.21.01.000"


def test_former_code_is_delivered_to_the_merged_agency(topology: Topology) -> None:
    destination = route(topology, OrganId.parse("000.04.21.H99"))
    assert destination.agency is not None
    assert str(destination.agency.organ_id) == "000.03.21.H99"
    assert str(destination.addressed_to) == "000.04.21.H99"


@pytest.mark.parametrize("outside", ["000.00.00.G22", "000.00.00.H41", "000.00.99.H99"])
def test_anything_not_in_the_province_goes_out(topology: Topology, outside: str) -> None:
    destination = route(topology, OrganId.parse(outside))
    assert destination.kind is DestinationKind.OUTBOUND
    assert destination.routing_key == "outbound"


def test_commune_binds_its_key_and_every_ancestor_group(topology: Topology) -> None:
    commune = topology.agency(OrganId.parse("000.01.21.H99"))
    assert commune is not None
    assert binding_keys(commune) == (
        "org.H99.21.01.000",
        "all.H99.21.01",
        "commune.H99.21.01",
        "all.H99.21",
        "commune.H99.21",
        "all.H99",
        "commune.H99",
    )


def test_group_keys_reach_exactly_the_units_under_them(topology: Topology) -> None:
    district = OrganId.parse("000.00.21.H99")
    key = group_key(district, AgencyLevel.COMMUNE)
    reached = sorted(str(a.organ_id) for a in topology.agencies if key in binding_keys(a))
    assert reached == ["000.01.21.H99", "000.02.21.H99", "000.03.21.H99"]
    everything = group_key(OrganId.parse("000.00.00.H99"))
    assert all(everything in binding_keys(a) for a in topology.agencies)
    assert agency_key(OrganId.parse("000.31.00.H99")) == "org.H99.00.31.000"


def test_alias_clashing_with_an_agency_is_a_config_error(tmp_path: Path) -> None:
    text = (ROOT / "config" / "example-province.toml").read_text(encoding="utf-8")
    bad = text.replace('aliases = ["000.04.21.H99"]', 'aliases = ["000.02.21.H99"]')
    assert bad != text
    target = tmp_path / "t.toml"
    target.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("alias 000.02.21.H99 of 000.03.21.H99 is also a listed")):
        load_topology(target)
