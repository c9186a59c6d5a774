"""Organisation identifiers (mã định danh, QCVN 102:2016): ``VVV.ZZ.YY.MXX``.

``000.00.00.H41`` is the People's Committee of Nghệ An (level 1), ``000.00.12.H41`` a level-2 unit of
it (a department or district), ``000.05.12.H41`` a level-3 unit under that (e.g. a commune),
``001.05.12.H41`` level 4. Zeros mean "the parent body itself". Since the 2025 reform (QĐ 09/2025/
QĐ-TTg) communes may hang straight off the province: ``000.05.00.H41`` is level 3 with parent
``000.00.00.H41``. So the level is the lowest non-zero numeric segment, and the parent is the same
code with that segment zeroed.

Real traffic carries short forms (``28.22.H17``): segments are right-aligned, so missing leading
segments are zeros (``000.28.22.H17``); a short numeric segment is zero-padded. Callers learn from
:func:`normalise_organ_id` whether the text was changed, so they can warn.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from pydantic_core import core_schema

from bus.errors import InvalidOrganIdError

__all__ = ["OrganId", "OrganKind", "OrganLevel", "normalise_organ_id"]

_TOP = re.compile(r"[A-Z][0-9]{2}")
_DIGITS = re.compile(r"[0-9]+")
_WIDTHS = (3, 2, 2)  # V, Z, Y
_NAMES = ("V (level 4)", "Z (level 3)", "Y (level 2)")


class OrganLevel(enum.IntEnum):
    """Cấp của cơ quan: 1 is the ministry/province body itself, 4 the lowest unit."""

    TOP = 1
    LEVEL2 = 2
    LEVEL3 = 3
    LEVEL4 = 4


class OrganKind(enum.Enum):
    """What the level-1 letter says about the body (QCVN 102:2016)."""

    MINISTRY = "G"  # Bộ, cơ quan ngang bộ, cơ quan thuộc Chính phủ
    PROVINCE_COMMITTEE = "H"  # UBND tỉnh/thành phố
    PROVINCE_COUNCIL = "K"  # HĐND tỉnh/thành phố
    OTHER = "?"  # other letters seen in traffic (A: Party bodies, ...)


@dataclass(frozen=True, slots=True, order=True)
class OrganId:
    v: int
    z: int
    y: int
    top: str

    @classmethod
    def parse(cls, text: str) -> OrganId:
        """Parse the canonical form or a short form; :class:`InvalidOrganIdError` says what is wrong."""
        return normalise_organ_id(text)[0]

    def __str__(self) -> str:
        return f"{self.v:03d}.{self.z:02d}.{self.y:02d}.{self.top}"

    @property
    def level(self) -> OrganLevel:
        if self.v:
            return OrganLevel.LEVEL4
        if self.z:
            return OrganLevel.LEVEL3
        if self.y:
            return OrganLevel.LEVEL2
        return OrganLevel.TOP

    @property
    def kind(self) -> OrganKind:
        letter = self.top[0]
        return next((k for k in OrganKind if k.value == letter), OrganKind.OTHER)

    @property
    def parent(self) -> OrganId | None:
        if self.v:
            return OrganId(0, self.z, self.y, self.top)
        if self.z:
            return OrganId(0, 0, self.y, self.top)
        if self.y:
            return OrganId(0, 0, 0, self.top)
        return None

    @property
    def root(self) -> OrganId:
        return OrganId(0, 0, 0, self.top)

    def ancestors(self) -> tuple[OrganId, ...]:
        chain: list[OrganId] = []
        node = self.parent
        while node is not None:
            chain.append(node)
            node = node.parent
        return tuple(chain)

    def is_within(self, other: OrganId) -> bool:
        return self == other or other in self.ancestors()

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def from_text(value: str) -> OrganId:
            try:
                return cls.parse(value)
            except InvalidOrganIdError as exc:
                raise ValueError(str(exc)) from exc

        from_str = core_schema.chain_schema(
            [core_schema.str_schema(), core_schema.no_info_plain_validator_function(from_text)]
        )
        return core_schema.json_or_python_schema(
            json_schema=from_str,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_str]),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


def normalise_organ_id(text: str) -> tuple[OrganId, bool]:
    """``(OrganId, changed)``: *changed* is True when the canonical text differs from *text*."""
    raw = text.strip()
    if not raw:
        raise InvalidOrganIdError("OrganId is empty; expected V.Z.Y.MXX such as 000.00.00.H41")
    segments = raw.split(".")
    if len(segments) > 4:
        raise InvalidOrganIdError(
            f"OrganId {text!r} has {len(segments)} segments; expected at most 4 (V.Z.Y.MXX)"
        )
    if any(not s for s in segments):
        raise InvalidOrganIdError(
            f"OrganId {text!r} has an empty segment; expected V.Z.Y.MXX such as 000.00.12.H41"
        )
    top = segments[-1].upper()
    if not _TOP.fullmatch(top):
        raise InvalidOrganIdError(
            f"OrganId {text!r}: level-1 segment {segments[-1]!r} must be one letter and two digits (e.g. H41)"
        )
    numbers = ["0"] * (4 - len(segments)) + segments[:-1]
    values: list[int] = []
    for segment, width, name in zip(numbers, _WIDTHS, _NAMES, strict=True):
        if not _DIGITS.fullmatch(segment):
            raise InvalidOrganIdError(f"OrganId {text!r}: segment {name} {segment!r} must be digits")
        if len(segment) > width:
            raise InvalidOrganIdError(
                f"OrganId {text!r}: segment {name} {segment!r} has more than {width} digits"
            )
        values.append(int(segment))
    organ = OrganId(values[0], values[1], values[2], top)
    return organ, str(organ) != text
