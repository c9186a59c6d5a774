"""Where an envelope goes: an agency's inbox in this province, or out to the national axis.

Routing keys follow the organisation hierarchy, so that one publish on the direct delivery exchange
can reach one agency (``org.H99.21.01.000``), everything under a unit (``all.H99.21`` for a district
and its communes, ``all.H99`` for the whole province), or one level under a unit
(``commune.H99.21``: the communes of district 21). Each agency's inbox binds its own key and the
group keys of its ancestors (:func:`binding_keys`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bus.organ_id import OrganId
from bus.topology import Agency, AgencyLevel, Topology

__all__ = ["Destination", "DestinationKind", "agency_key", "binding_keys", "group_key", "route"]


class DestinationKind(enum.StrEnum):
    LOCAL = "local"  # an agency of this province's axis
    OUTBOUND = "outbound"  # anywhere else: relayed to the national axis


@dataclass(frozen=True, slots=True)
class Destination:
    kind: DestinationKind
    addressed_to: OrganId  # as written in the envelope (may be a former code)
    agency: Agency | None  # the local agency that receives it, when LOCAL

    @property
    def routing_key(self) -> str:
        return agency_key(self.agency.organ_id) if self.agency is not None else "outbound"


def _path(organ: OrganId) -> list[str]:
    """``000.01.21.H99`` -> ``["H99", "21", "01", "000"]``: from the province down, zeros kept."""
    return [organ.top, f"{organ.y:02d}", f"{organ.z:02d}", f"{organ.v:03d}"]


def agency_key(organ: OrganId) -> str:
    return "org." + ".".join(_path(organ))


def group_key(ancestor: OrganId, level: AgencyLevel | None = None) -> str:
    """Key reaching everything under *ancestor* (itself included), or only agencies of *level*."""
    depth = int(ancestor.level)  # TOP=1 -> "H99", LEVEL2 -> "H99.21", ...
    prefix = ".".join(_path(ancestor)[:depth])
    return f"{level.value if level else 'all'}.{prefix}"


def binding_keys(agency: Agency) -> tuple[str, ...]:
    """Keys an agency's inbox binds: its own, then the groups of itself and each ancestor."""
    keys = [agency_key(agency.organ_id)]
    for unit in (agency.organ_id, *agency.organ_id.ancestors()):
        keys += [group_key(unit), group_key(unit, agency.level)]
    return tuple(dict.fromkeys(keys))


def route(topology: Topology, recipient: OrganId) -> Destination:
    """The destination of one ``To``: a local agency (by code or former code) or the national axis."""
    agency = topology.agency(recipient)
    if agency is not None:
        return Destination(DestinationKind.LOCAL, recipient, agency)
    return Destination(DestinationKind.OUTBOUND, recipient, None)
